package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	vn "github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// copyTree copies a directory of regular files and directories.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Type()&os.ModeSymlink != 0 {
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// gitRepo makes a git repository of an example template under examples/templates with the
// git CLI.
func gitRepo(t *testing.T, example string) string {
	t.Helper()
	testpolicy.RequireTool(t, "git")
	dir := filepath.Join(t.TempDir(), example)
	copyTree(t, filepath.Join("..", "examples", "templates", example), dir)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "example"}} {
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid",
			"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid",
			"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// addTemplate registers the example template as name and returns its commit.
func addTemplate(t *testing.T, addr, name, example string) string {
	t.Helper()
	repo := gitRepo(t, example)
	var r vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, addr, "template", "add", name, repo, "--json")), &r); err != nil {
		t.Fatal(err)
	}
	return r.Commit
}

func TestTemplateRegistry(t *testing.T) {
	d := startDaemon(t)
	r := bbctl(t, d.addr, "template", "list", "--json")
	var none []vm.Template
	if err := json.Unmarshal([]byte(r.stdout), &none); r.code != 0 || err != nil || len(none) != 0 {
		t.Fatalf("empty registry: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	repo := gitRepo(t, "sysext")

	r = bbctl(t, d.addr, "template", "add", "tools", repo)
	if r.code != 0 || !strings.Contains(r.stdout, `template "tools" added: sysext`) {
		t.Fatalf("add: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "fetching") {
		t.Errorf("no progress lines on standard error: %q", r.stderr)
	}
	var got vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "get", "tools", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "tools" || got.Type != "sysext" || len(got.Commit) != 40 {
		t.Errorf("get: %+v", got)
	}
	if out := mustRun(t, d.addr, "template", "list"); !strings.Contains(out, "tools") || !strings.Contains(out, got.Commit[:12]) {
		t.Errorf("list:\n%s", out)
	}
	mustRun(t, d.addr, "tenant", "create", "shop", "--template", "sysext:tools:tools")
	cases := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"add again", []string{"template", "add", "tools", repo}, ExitConflict, `template "tools" exists already`},
		{"get unknown", []string{"template", "get", "wan"}, ExitNotFound, `template "wan" not found`},
		{"invalid name", []string{"template", "add", "Tools", repo}, ExitInvalid, `invalid name "Tools"`},
		{"update to the same commit", []string{"template", "update", "tools"}, 0, `template "tools" updated`},
		{"pin to the pinned commit", []string{"template", "pin", "tools", got.Commit}, 0, "pinned to " + got.Commit},
		{"remove while used", []string{"template", "remove", "tools"}, ExitConflict, `template "tools" is used by "shop"`},
		{"tenant gone", []string{"tenant", "delete", "shop", "--force", "--wait"}, 0, "deleted"},
		{"remove", []string{"template", "remove", "tools"}, 0, `template "tools" removed`},
		{"get removed", []string{"template", "get", "tools"}, ExitNotFound, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bbctl(t, d.addr, c.args...)
			if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.output) {
				t.Errorf("bbctl %q: exit %d, stdout %q, stderr %q; want %d and %q", c.args, r.code, r.stdout, r.stderr, c.code, c.output)
			}
		})
	}
}

func TestTemplateValidate(t *testing.T) {
	d := startDaemon(t)
	good := filepath.Join(t.TempDir(), "sysext")
	copyTree(t, filepath.Join("..", "examples", "templates", "sysext"), good)
	bad := filepath.Join(t.TempDir(), "bad-sysext")
	copyTree(t, good, bad)
	// Without its extension-release file a sysext is refused.
	if err := os.RemoveAll(filepath.Join(bad, "usr", "lib", "extension-release.d")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		dir       string
		wantError bool
	}{{"example sysext", good, false}, {"sysext without extension-release", bad, true}} {
		t.Run(c.name, func(t *testing.T) {
			r := bbctl(t, d.addr, "template", "validate", c.dir, "--json")
			var v validateReply
			if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
				t.Fatalf("exit %d, stderr %q: %v", r.code, r.stderr, err)
			}
			if (v.Errors > 0) != c.wantError {
				t.Errorf("errors %d: %+v", v.Errors, v.Findings)
			}
			if want := map[bool]int{false: 0, true: 1}[v.Errors > 0]; r.code != want {
				t.Errorf("exit %d with %d errors, want %d", r.code, v.Errors, want)
			}
			human := bbctl(t, d.addr, "template", "validate", c.dir)
			if c.wantError && !strings.Contains(human.stdout, "Errors (") {
				t.Errorf("findings not grouped by severity:\n%s", human.stdout)
			}
			if human.code != r.code {
				t.Errorf("human exit %d, JSON exit %d", human.code, r.code)
			}
		})
	}
	t.Run("a registered template by name", func(t *testing.T) {
		addTemplate(t, d.addr, "tools", "sysext")
		r := bbctl(t, d.addr, "template", "validate", "tools")
		if r.code != 0 || !strings.Contains(r.stdout, "0 errors") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

func TestNetworkCommands(t *testing.T) {
	d := startDaemon(t)
	r := bbctl(t, d.addr, "network", "get", "nope")
	if r.code != ExitNotFound {
		t.Errorf("get of no such tenant: exit %d, stderr %q", r.code, r.stderr)
	}
	mustRun(t, d.addr, "tenant", "create", "web", "--index", "9", "--network-features", "wireguard",
		"--param", "PEER_ENDPOINT=192.0.2.7:51820", "--param", "PEER_PUBLIC_KEY=q2LBd3a1k5cHFSR6xaV5fL1G8nP3Qh6n1pYcRm1Zr0E=")
	var listed []vn.TenantNetwork
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "network", "list", "--json")), &listed); err != nil || len(listed) != 1 || listed[0].Tenant != "web" {
		t.Errorf("list: %+v, %v", listed, err)
	}
	if out := mustRun(t, d.addr, "network", "list"); !strings.Contains(out, "br-tenant-9") {
		t.Errorf("list table:\n%s", out)
	}
	key := strings.Repeat("A", 43) + "="
	if r := bbctl(t, d.addr, "network", "remove-peer", "web", key); r.code != ExitNotFound {
		t.Errorf("remove of no such peer: exit %d, stderr %q", r.code, r.stderr)
	}
	out := mustRun(t, d.addr, "network", "add-peer", "web", "--public-key", key, "--endpoint", "198.51.100.7:51820", "--allowed-ips", "10.99.0.0/16", "--keepalive", "25")
	if !strings.Contains(out, "(1 peer)") {
		t.Errorf("add-peer: %q", out)
	}
	var n vn.TenantNetwork
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "network", "get", "web", "--json")), &n); err != nil {
		t.Fatal(err)
	}
	if n.NetworkIndex != 9 || len(n.Peers) != 1 || deref(n.Peers[0].Endpoint) != "198.51.100.7:51820" || deref(n.Peers[0].PersistentKeepalive) != 25 {
		t.Errorf("network %+v", n)
	}
	if out := mustRun(t, d.addr, "network", "get", "web"); !strings.Contains(out, "198.51.100.7:51820") || !strings.Contains(out, "Peers:") {
		t.Errorf("get:\n%s", out)
	}
	if out := mustRun(t, d.addr, "network", "remove-peer", "web", key); !strings.Contains(out, "0 peers left") {
		t.Errorf("remove-peer: %q", out)
	}
}

// TestTemplatePinShortCommit pins a template back to its previous commit by the 12 digits
// template list printed for it, and checks that prefixes that match nothing, or are not
// commit ids, are refused with a clear error and leave the pin where it was.
func TestTemplatePinShortCommit(t *testing.T) {
	d := startDaemon(t)
	repo := gitRepo(t, "sysext")
	mustRun(t, d.addr, "template", "add", "tools", repo)
	var listed []vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "ls", "--json")), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("list: %v %+v", err, listed)
	}
	first := listed[0].Commit
	if out := mustRun(t, d.addr, "template", "list"); !strings.Contains(out, first[:12]+" ") {
		t.Fatalf("template list does not print %s:\n%s", first[:12], out)
	}
	// A second commit, pinned by template update.
	if err := os.WriteFile(filepath.Join(repo, "README.md"), []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", "second"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "HOME="+repo, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid", "GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	mustRun(t, d.addr, "template", "update", "tools")
	var cur vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "get", "tools", "--json")), &cur); err != nil {
		t.Fatal(err)
	}
	second := cur.Commit
	if second == first || len(cur.PreviousCommits) == 0 || cur.PreviousCommits[0] != first {
		t.Fatalf("update did not move the pin: %+v", cur)
	}

	for _, c := range []struct {
		commit string
		code   int
		name   string
		msg    string
	}{
		{"zzzz", ExitUsage, "bbctl.UsageError", "want a commit id or a prefix of 4 to 40 hex digits"},
		{first[:3], ExitUsage, "bbctl.UsageError", "want a commit id or a prefix of 4 to 40 hex digits"},
		{unlike(first, second), ExitNotFound, "bbctl.NoSuchCommit", "has no pinned or previously pinned commit starting with"},
	} {
		for _, asJSON := range []bool{false, true} {
			args := []string{"template", "pin", "tools", c.commit}
			if asJSON {
				args = append(args, "--json")
			}
			r := bbctl(t, d.addr, args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.msg) || (asJSON && !strings.Contains(r.stderr, `"error":"`+c.name+`"`)) {
				t.Errorf("pin %s (json %v): %+v; want exit %d, %s, %q", c.commit, asJSON, r, c.code, c.name, c.msg)
			}
		}
	}
	if got := getTemplate(t, d.addr, "tools").Commit; got != second {
		t.Fatalf("a refused pin moved the pin to %s", got)
	}

	// The short id template list printed, back to the first commit; then 7 digits forward.
	if out := mustRun(t, d.addr, "template", "pin", "tools", first[:12]); out != "template \"tools\" pinned to "+first+"\n" {
		t.Errorf("pin %s: %q", first[:12], out)
	}
	var pinned vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "pin", "tools", strings.ToUpper(second[:7]), "--json")), &pinned); err != nil || pinned.Commit != second {
		t.Errorf("pin %s --json: %+v %v", second[:7], pinned, err)
	}
}

// unlike returns a 6-digit hex prefix that neither commit starts with.
func unlike(a, b string) string {
	for _, p := range []string{"000000", "ffffff", "123456"} {
		if !strings.HasPrefix(a, p) && !strings.HasPrefix(b, p) {
			return p
		}
	}
	return "abcdef"
}

func getTemplate(t *testing.T, addr, name string) vm.Template {
	t.Helper()
	var tpl vm.Template
	if err := json.Unmarshal([]byte(mustRun(t, addr, "template", "get", name, "--json")), &tpl); err != nil {
		t.Fatal(err)
	}
	return tpl
}

func TestResolveCommitAmbiguous(t *testing.T) {
	tpl := vm.Template{Name: "x", Commit: "abcd1111" + strings.Repeat("0", 32), PreviousCommits: []string{"abcd2222" + strings.Repeat("0", 32)}}
	_, err := resolveCommit(tpl, "abcd")
	if ExitCode(err) != ExitInvalid || !strings.Contains(err.Error(), "is ambiguous: it matches abcd1111") || !strings.Contains(err.Error(), "abcd2222") {
		t.Errorf("ambiguous prefix: %v (exit %d)", err, ExitCode(err))
	}
	if got, err := resolveCommit(tpl, "abcd2"); err != nil || got != tpl.PreviousCommits[0] {
		t.Errorf("unique prefix: %q %v", got, err)
	}
	if j := asErrorJSON(err); j.Error != "bbctl.AmbiguousCommit" {
		t.Errorf("json %+v", j)
	}
}
