package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// repoFile is one file of a test template repository.
type repoFile struct {
	path, content string
	exec          bool
}

// writeFiles writes files below dir (0755 for an executable, else 0644), making their directories.
func writeFiles(t testing.TB, dir string, files []repoFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if f.exec {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(f.content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// extensionRepo makes a bare git repository (branch main) on this machine with one commit per element of
// commits (each the whole tree of that commit, with metadata.json of an extension template of class typ named
// name), and returns it with the commits' hashes, oldest first.
func extensionRepo(t testing.TB, typ, name string, commits ...[]repoFile) (string, []string) {
	t.Helper()
	git := testpolicy.RequireTool(t, "git")
	work, bare := filepath.Join(t.TempDir(), "work"), filepath.Join(t.TempDir(), "repo.git")
	g := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(git, append([]string{"-C", work, "-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	g("init", "-q", "-b", "main")
	var hashes []string
	md := fmt.Sprintf(`{"template":{"type":%q,"version":"1.0.0","name":%q,"description":"A test %s."},"requirements":{"systemd_version":">=257","features":[%q]}}`+"\n", typ, name, typ, typ)
	for i, files := range commits {
		g("rm", "-rq", "--ignore-unmatch", ".")
		writeFiles(t, work, append(files, repoFile{path: "metadata.json", content: md}))
		g("add", "-A")
		g("commit", "-q", "-m", fmt.Sprintf("%s %d", name, i+1))
		hashes = append(hashes, g("rev-parse", "HEAD"))
	}
	if out, err := exec.Command(git, "clone", "-q", "--bare", work, bare).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	return bare, hashes
}

// inMachine runs args in all namespaces of the machine whose leader is pid, and returns its output and exit status.
func inMachine(t testing.TB, d *daemon, pid int, args ...string) result {
	t.Helper()
	return run(t, d.h, "", append([]string{"nsenter", "-t", strconv.Itoa(pid), "-a"}, args...)...)
}

// extMounts returns the mounts of the machine whose leader is pid on /usr, /opt and /etc (what systemd-sysext
// and systemd-confext merge), as "mountpoint fstype" lines, and the number of mounts on the host at or below
// dir.
func extMounts(t testing.TB, d *daemon, pid int, dir string) (inside []string, host int) {
	t.Helper()
	out := mustRun(t, d.h, "cat", fmt.Sprintf("/proc/%d/mountinfo", pid))
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		sep := 6
		for sep < len(f) && f[sep] != "-" {
			sep++
		}
		if mp := f[4]; (mp == "/usr" || mp == "/opt" || mp == "/etc") && sep+1 < len(f) {
			inside = append(inside, mp+" "+f[sep+1])
		}
	}
	slices.Sort(inside)
	hostOut := mustRun(t, d.h, "cat", "/proc/self/mountinfo")
	for _, line := range strings.Split(hostOut, "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			host++
		}
	}
	return inside, host
}

// TestExtensionsContainers: a tenant's sysext and confext, checked against its container's own os-release, are
// merged by the container's own systemd-sysext/confext: its files appear under /usr, /opt and /etc in that
// container only (not in another tenant's container, not on the host, whose /usr and /etc stay as they were);
// a pin change swaps the content in the running container without restarting it and without a stale mount (the
// mounts inside are counted before and after, the host has none under the tenant's directory); an incompatible
// extension and a confext with an executable are refused before anything is handed over, naming the rule and
// file; bad templates are refused at Template.Add naming the file; dropping the extensions unmerges them; Delete
// leaves nothing.
func TestExtensionsContainers(t *testing.T) {
	d := startDaemon(t, "ext", "--no-host=false", "--resync=5s")
	h := d.h
	addContainerTemplate(t, d)
	rel := "usr/lib/extension-release.d/extension-release."
	bbx, bbxCommits := extensionRepo(t, "sysext", "bbx",
		[]repoFile{{path: rel + "bbx", content: "ID=debian\nVERSION_ID=13\n"}, {path: "usr/bin/bbx-hello", content: "#!/bin/sh\necho bbx v1\n", exec: true}, {path: "opt/bbx/VERSION", content: "v1\n"}},
		[]repoFile{{path: rel + "bbx", content: "ID=debian\nVERSION_ID=13\nEXTENSION_RELOAD_MANAGER=1\n"}, {path: "usr/bin/bbx-hello", content: "#!/bin/sh\necho bbx v2\n", exec: true}, {path: "opt/bbx/VERSION", content: "v2\n"}})
	addTemplateRepo(t, d, bbx, "bbx", "sysext")
	bbc, bbcCommits := extensionRepo(t, "confext", "bbc", []repoFile{{path: "etc/extension-release.d/extension-release.bbc", content: "ID=_any\n"}, {path: "etc/bbc/tenant.conf", content: "tenant=ea\n"}})
	addTemplateRepo(t, d, bbc, "bbc", "confext")
	// Registered (nothing is wrong with them on their own) but refused for a Debian 13 machine, or by policy.
	fedora, _ := extensionRepo(t, "sysext", "bbf", []repoFile{{path: rel + "bbf", content: "ID=fedora\nVERSION_ID=41\n"}, {path: "usr/bin/bbf", content: "f\n"}})
	addTemplateRepo(t, d, fedora, "bbf", "sysext")
	exe, _ := extensionRepo(t, "confext", "bbexe", []repoFile{{path: "etc/extension-release.d/extension-release.bbexe", content: "ID=_any\n"}, {path: "etc/bbexe/run.sh", content: "#!/bin/sh\n", exec: true}})
	addTemplateRepo(t, d, exe, "bbexe", "confext")

	// Bad templates: refused at Template.Add, naming the file; nothing is registered.
	installGit(t, h)
	for _, bad := range []struct {
		name, want string
		files      []repoFile
	}{
		{"bbos", "usr/lib/os-release", []repoFile{{path: rel + "bbos", content: "ID=_any\n"}, {path: "usr/lib/os-release", content: "ID=evil\n"}}},
		{"bbmis", rel + "use-name", []repoFile{{path: rel + "use-name", content: "ID=_any\n"}, {path: "usr/share/x", content: "x\n"}}},
	} {
		repo, _ := extensionRepo(t, "sysext", bad.name, bad.files)
		guest := "/srv/templates/ext-" + bad.name + ".git"
		copyRepoIntoHost(t, h, repo, guest)
		// (varlinkctl directly: the error reply ends a stream of progress replies, which d.call's IDL check of
		// an error reply does not expect.)
		r := varlinkctl(t, h, asRoot, "call", "--more", "--json=short", d.socket, "io.bitbuilder.Template.Add", `{"name":"`+bad.name+`","url":"file://`+guest+`","ref":"main"}`)
		if r.exit == 0 || !strings.Contains(r.stdout+r.stderr, "ValidationFailed") || !strings.Contains(r.stdout+r.stderr, bad.want) {
			t.Errorf("Template.Add of %s: want ValidationFailed naming %s, got %v", bad.name, bad.want, r)
		}
	}

	templates := func(extensions ...string) string {
		ts := []string{`{"role":"container","name":"deb","template":"deb"}`}
		ts = append(ts, extensions...)
		return "[" + strings.Join(ts, ",") + "]"
	}
	bbxAt := func(commit string) string {
		return fmt.Sprintf(`{"role":"sysext","name":"tools","template":"bbx","commit":%q}`, commit)
	}
	bbcUse := `{"role":"confext","name":"conf","template":"bbc"}`
	d.create(t, fmt.Sprintf(`{"name":"ea","templates":%s,"machines":[{"name":"web","kind":"container","template":"deb"}]}`, templates(bbxAt(bbxCommits[0]), bbcUse)))
	d.create(t, containerTenant("eb", "app"))
	hostUsr := mustRun(t, h, "sh", "-c", "ls /usr/bin | wc -l; ls /etc | wc -l; ls /opt")

	extensionsApplied := func(want string) tenant {
		var got tenant
		eventually(t, machineBootTimeout, func() (bool, string) {
			got = d.tenantCall(t, asRoot, "Get", `{"name":"ea"}`)
			cs := conditions(t, got)
			return cs["ExtensionsApplied"].Status == "true" && strings.Contains(cs["ExtensionsApplied"].Message, want), fmt.Sprintf("conditions %v", cs)
		})
		return got
	}
	waitRunning(t, d, "ea")
	a := extensionsApplied("merged in 1 running containers")
	b := waitRunning(t, d, "eb")
	web, app := machineOf(t, a, "web"), machineOf(t, b, "app")
	if c := conditions(t, a)["ExtensionsCompatible"]; c.Status != "true" {
		t.Errorf("ExtensionsCompatible: %+v", c)
	}
	if got := strings.Join(web.Status.Extensions, " "); got != "sysext/bbx@"+bbxCommits[0]+" confext/bbc@"+bbcCommits[0] {
		t.Errorf("Tenant.Get shows ea-web's extensions as %q", got)
	}
	if len(app.Status.Extensions) != 0 {
		t.Errorf("eb-app has extensions %v", app.Status.Extensions)
	}

	// The tenant's container sees the sysext under /usr and /opt, the confext under /etc.
	checks := []struct{ args []string }{{[]string{"bbx-hello"}}, {[]string{"cat", "/opt/bbx/VERSION"}}, {[]string{"cat", "/etc/bbc/tenant.conf"}}}
	wantV1 := []string{"bbx v1\n", "v1\n", "tenant=ea\n"}
	for i, c := range checks {
		if r := inMachine(t, d, web.Status.Leader, c.args...); r.exit != 0 || r.stdout != wantV1[i] {
			t.Errorf("in ea-web, %v: %v", c.args, r)
		}
	}
	// Another tenant's container and the host do not.
	for _, p := range []string{"/usr/bin/bbx-hello", "/opt/bbx", "/etc/bbc"} {
		if r := inMachine(t, d, app.Status.Leader, "test", "-e", p); r.exit == 0 {
			t.Errorf("eb-app has %s", p)
		}
		if r := run(t, h, "", "test", "-e", p); r.exit == 0 {
			t.Errorf("the host has %s", p)
		}
	}
	// Merged by the container's own tools, read-only; handed over under the image's name.
	if out := inMachine(t, d, web.Status.Leader, "systemd-sysext", "list", "--no-legend").stdout; !strings.Contains(out, "bbx") {
		t.Errorf("systemd-sysext list in ea-web: %q", out)
	}
	if r := inMachine(t, d, web.Status.Leader, "touch", "/usr/bin/written"); r.exit == 0 {
		t.Errorf("ea-web can write its merged /usr")
	}
	tenantDir := d.stateDir + "/tenants/ea"
	before, hostMounts := extMounts(t, d, web.Status.Leader, tenantDir)
	t.Logf("mounts on /usr, /opt, /etc in ea-web: %v; on the host under %s: %d", before, tenantDir, hostMounts)
	if len(before) == 0 || hostMounts != 0 {
		t.Errorf("mounts in ea-web %v (want the merges), on the host %d (want none)", before, hostMounts)
	}
	invocation := showUnit(t, h, web.Status.Unit, "InvocationID")["InvocationID"]

	// A pin change swaps the content in the running container: no restart, no stale mount.
	d.tenantCall(t, asRoot, "Update", fmt.Sprintf(`{"name":"ea","templates":%s}`, templates(bbxAt(bbxCommits[1]), bbcUse)))
	eventually(t, 2*time.Minute, func() (bool, string) {
		r := inMachine(t, d, web.Status.Leader, "bbx-hello")
		return r.stdout == "bbx v2\n", "bbx-hello says " + r.stdout + r.stderr
	})
	if r := inMachine(t, d, web.Status.Leader, "cat", "/opt/bbx/VERSION", "/etc/bbc/tenant.conf"); r.stdout != "v2\ntenant=ea\n" {
		t.Errorf("after the pin change: %v", r)
	}
	after, hostMounts := extMounts(t, d, web.Status.Leader, tenantDir)
	if strings.Join(after, ",") != strings.Join(before, ",") || hostMounts != 0 {
		t.Errorf("mounts after the pin change: in ea-web %v (before %v), on the host %d", after, before, hostMounts)
	}
	// The pass's status follows the merge.
	eventually(t, 30*time.Second, func() (bool, string) {
		a = d.tenantCall(t, asRoot, "Get", `{"name":"ea"}`)
		got := machineOf(t, a, "web").Status.Extensions
		return len(got) == 2 && got[0] == "sysext/bbx@"+bbxCommits[1], fmt.Sprintf("Tenant.Get shows ea-web's extensions as %v", got)
	})
	if w := machineOf(t, a, "web"); w.Status.Leader != web.Status.Leader || showUnit(t, h, web.Status.Unit, "InvocationID")["InvocationID"] != invocation {
		t.Errorf("ea-web was restarted by the pin change: leader %d -> %d", web.Status.Leader, w.Status.Leader)
	}
	// The trees the container merged before are removed once it merged the new ones.
	eventually(t, 30*time.Second, func() (bool, string) {
		r := run(t, h, "", "sh", "-c", "ls "+tenantDir+"/machines/web/extensions/.retired 2>/dev/null")
		return r.stdout == "", "retired trees left: " + r.stdout
	})

	// Refused before anything is handed over: an incompatible sysext, a confext with an executable.
	d.tenantCall(t, asRoot, "Update", fmt.Sprintf(`{"name":"ea","templates":%s}`, templates(bbxAt(bbxCommits[1]), bbcUse,
		`{"role":"sysext","name":"fed","template":"bbf"}`, `{"role":"confext","name":"exe","template":"bbexe"}`)))
	eventually(t, time.Minute, func() (bool, string) {
		c := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"ea"}`))["ExtensionsCompatible"]
		ok := c.Status == "false" && strings.Contains(c.Message, "sysext fed") && strings.Contains(c.Message, "ID=fedora matches neither the base's ID=debian") &&
			strings.Contains(c.Message, "confext exe") && strings.Contains(c.Message, "D35, etc/bbexe/run.sh")
		return ok, fmt.Sprintf("%+v", c)
	})
	if r := inMachine(t, d, web.Status.Leader, "ls", "/run/extensions", "/run/confexts"); strings.Contains(r.stdout, "bbf") || strings.Contains(r.stdout, "bbexe") {
		t.Errorf("refused extensions reached ea-web: %s", r.stdout)
	}
	for _, p := range []string{"/usr/bin/bbf", "/etc/bbexe"} {
		if r := inMachine(t, d, web.Status.Leader, "test", "-e", p); r.exit == 0 {
			t.Errorf("ea-web has %s of a refused extension", p)
		}
	}

	// Dropping the extensions unmerges them; the mounts are those of a container without extensions.
	d.tenantCall(t, asRoot, "Update", fmt.Sprintf(`{"name":"ea","templates":%s}`, templates()))
	eventually(t, time.Minute, func() (bool, string) {
		r := inMachine(t, d, web.Status.Leader, "sh", "-c", "ls /usr/bin/bbx-hello /opt/bbx /etc/bbc 2>&1")
		return !strings.Contains(r.stdout, "bbx-hello\n") && strings.Count(r.stdout, "No such file") == 3, r.stdout
	})
	bare, _ := extMounts(t, d, web.Status.Leader, tenantDir)
	appMounts, _ := extMounts(t, d, app.Status.Leader, tenantDir)
	if strings.Join(bare, ",") != strings.Join(appMounts, ",") {
		t.Errorf("after dropping the extensions ea-web has mounts %v, a container without extensions %v", bare, appMounts)
	}
	if got := mustRun(t, h, "sh", "-c", "ls /usr/bin | wc -l; ls /etc | wc -l; ls /opt"); got != hostUsr {
		t.Errorf("the host's /usr, /etc or /opt changed: %q, before %q", got, hostUsr)
	}

	// Delete: nothing of the tenant is left, nothing mounted under its directory.
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"ea"}`)
	eventually(t, 2*time.Minute, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"ea"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	if r := run(t, h, "", "test", "-e", tenantDir); r.exit == 0 {
		t.Errorf("%s left after delete", tenantDir)
	}
	if n := strings.Count(mustRun(t, h, "cat", "/proc/self/mountinfo"), " "+tenantDir); n != 0 {
		t.Errorf("%d mounts under %s after delete", n, tenantDir)
	}
}
