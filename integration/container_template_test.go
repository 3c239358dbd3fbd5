package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// The container template that testdata/container-template.sh builds: a bare Git repository whose branch main
// holds metadata.json (type container), config/nspawn-settings.conf and rootfs/, a Debian trixie userland booting
// systemd 257 with systemd-networkd asking DHCP on host0.
var containerRepo = &templateRepo{script: "testdata/container-template.sh", what: "container"}

// templateRepo is a template repository that a script in testdata/ builds (and caches) on first use.
type templateRepo struct {
	script, what string
	once         sync.Once
	path         string
	err          error
}

// get runs the script once and returns the repository's path (the script's last line of output).
func (r *templateRepo) get(t testing.TB) string {
	t.Helper()
	r.once.Do(func() {
		start := time.Now()
		cmd := exec.Command("bash", r.script)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			r.err = fmt.Errorf("%s: %w\n%s", r.script, err, stderr.Bytes())
			return
		}
		r.path = lastLine(string(out))
		fmt.Fprintf(os.Stderr, "integration: %s template repository %s (%v)\n", r.what, r.path, time.Since(start).Round(time.Millisecond))
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

// containerTemplate returns the path of the container template repository on this machine, building it the
// first time (about 12 s from the test host's cached rootfs, no network; then cached under
// /var/cache/bitbuilder-test). Call it after host(t), which skips when the machine cannot boot a test host.
func containerTemplate(t testing.TB) string { return containerRepo.get(t) }

// pipeInto runs producer on this machine and feeds its stdout to args run inside the host.
func pipeInto(t testing.TB, h *testhost.Host, producer *exec.Cmd, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	var perr bytes.Buffer
	producer.Stderr = &perr
	out, err := producer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.Start(); err != nil {
		t.Fatalf("%q: %v", producer.Args, err)
	}
	_, stderr, err := h.RunInput(ctx, out, args...)
	if werr := producer.Wait(); werr != nil {
		t.Fatalf("%q: %v\n%s", producer.Args, werr, perr.Bytes())
	}
	if err != nil {
		t.Fatalf("%q in the host: %v\n%s", args, err, stderr)
	}
}

// copyRepoIntoHost copies the bare repository repo into the host at guest (replacing it).
func copyRepoIntoHost(t testing.TB, h *testhost.Host, repo, guest string) {
	t.Helper()
	mustRun(t, h, "rm", "-rf", guest)
	mustRun(t, h, "mkdir", "-p", guest)
	pipeInto(t, h, exec.Command("tar", "-C", repo, "-c", "."), "tar", "-x", "-C", guest)
}

// installGit gives the host this machine's git as /usr/local/bin/git and git-upload-pack: the registry serves
// local paths and file:// URLs with the git CLI's git-upload-pack, and the test host's rootfs has no git. (The
// machine's git is Debian 12's; it needs only libc, libz and libpcre2-8, which trixie has.)
func installGit(t testing.TB, h *testhost.Host) {
	t.Helper()
	if run(t, h, "", "test", "-x", "/usr/local/bin/git-upload-pack").exit == 0 {
		return
	}
	path := testpolicy.RequireTool(t, "git")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile("/usr/local/bin/git", data, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, h, "ln", "-sf", "git", "/usr/local/bin/git-upload-pack")
	mustRun(t, h, "git", "--version")
}

// vmHWM returns a process's peak resident set size in kB (VmHWM in /proc/PID/status).
func vmHWM(t testing.TB, h *testhost.Host, pid int) int {
	t.Helper()
	out := mustRun(t, h, "grep", "^VmHWM:", "/proc/"+strconv.Itoa(pid)+"/status")
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("VmHWM: %q", out)
	}
	kb, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("VmHWM: %q", out)
	}
	return kb
}

// addTemplateRepo copies the bare repository repo into d's host, adds it to d's registry as name from a file://
// URL (io.bitbuilder.Template.Add with its progress replies), and checks that the registry pinned repo's main as a
// template of type typ. It returns Add's replies, the pinned commit and how long Add took.
func addTemplateRepo(t testing.TB, d *daemon, repo, name, typ string) (recs []json.RawMessage, commit string, took time.Duration) {
	t.Helper()
	installGit(t, d.h)
	guest := "/srv/templates/" + strings.TrimSuffix(d.unit, ".service") + "-" + name + ".git"
	copyRepoIntoHost(t, d.h, repo, guest)
	t.Cleanup(func() { _, _, _ = d.h.Run(context.Background(), "rm", "-rf", guest) })
	start := time.Now()
	r := d.call(t, asRoot, "io.bitbuilder.Template.Add", `{"name":"`+name+`","url":"file://`+guest+`","ref":"main"}`, "--more")
	took = time.Since(start)
	if r.exit != 0 {
		t.Fatalf("Template.Add: %v", r)
	}
	recs = r.seq(t)
	var reply struct {
		Template *struct {
			Name, Commit, Type, Version string
		} `json:"template"`
	}
	decodeJSON(t, recs[len(recs)-1], &reply)
	out, err := exec.Command("git", "--git-dir="+repo, "rev-parse", "main").Output()
	if err != nil {
		t.Fatalf("git rev-parse main in %s: %v", repo, err)
	}
	want := strings.TrimSpace(string(out))
	if reply.Template == nil || reply.Template.Type != typ || reply.Template.Commit != want {
		t.Fatalf("Add replied %s, want the %s template at %s", recs[len(recs)-1], typ, want)
	}
	return recs, want, took
}

// TestContainerTemplateAdd adds the container template with a real Debian systemd rootfs to bitbuilderd's
// registry from a file:// URL, the way an administrator would (io.bitbuilder.Template.Add, which fetches, checks
// the tree out, validates it and pins it), and validates the registered template: the validator and the
// materializer accept a real Debian tree (symlinks such as /bin -> usr/bin and absolute ones such as
// /etc/localtime, empty files, executables). It logs how long Add took and the daemon's peak memory.
func TestContainerTemplateAdd(t *testing.T) {
	h := host(t)
	repo := containerTemplate(t)
	d := startDaemon(t, "ctemplate")
	before := vmHWM(t, h, d.mainPID(t))
	recs, _, took := addTemplateRepo(t, d, repo, "debian", "container")
	peak := vmHWM(t, h, d.mainPID(t))
	t.Logf("Template.Add of %s: %v, %d progress replies; bitbuilderd peak RSS %d MB (%d MB before)", repo, took.Round(time.Millisecond), len(recs)-1, peak>>10, before>>10)

	var v validation
	d.call(t, asRoot, "io.bitbuilder.Template.Validate", `{"name":"debian"}`).decode(t, &v)
	if v.Errors != 0 {
		t.Errorf("the registered container template: %d errors: %+v", v.Errors, v.Findings)
	}
	for _, f := range v.Findings {
		t.Logf("finding %s %s %s: %s", f.Severity, f.Rule, f.Path, f.Message)
	}
}
