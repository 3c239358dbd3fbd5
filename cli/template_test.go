package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// skipUnimplemented skips a test while the daemon answers MethodNotImplemented for the
// interface: these tests start running as soon as the daemon serves it.
func skipUnimplemented(t *testing.T, r result) {
	t.Helper()
	if r.code == ExitFailure && strings.Contains(r.stderr, "does not implement") {
		t.Skipf("the daemon does not implement this yet: %s", strings.TrimSpace(r.stderr))
	}
}

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

// gitRepo makes a git repository of the example template dir with the git CLI.
func gitRepo(t *testing.T, example string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := filepath.Join(t.TempDir(), example)
	copyTree(t, filepath.Join("..", "examples", "templates", example), dir)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "example"}} {
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid",
			"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

func TestTemplateRegistry(t *testing.T) {
	d := startDaemon(t)
	r := bbctl(t, d.addr, "template", "list", "--json")
	skipUnimplemented(t, r)
	var none []templateReply
	if err := json.Unmarshal([]byte(r.stdout), &none); r.code != 0 || err != nil || len(none) != 0 {
		t.Fatalf("empty registry: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	repo := gitRepo(t, "network")

	r = bbctl(t, d.addr, "template", "add", "lan", repo)
	if r.code != 0 || !strings.Contains(r.stdout, `template "lan" added: network`) {
		t.Fatalf("add: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var got templateReply
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "get", "lan", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Template.Name != "lan" || got.Template.Type != "network" || len(got.Template.Commit) != 40 {
		t.Errorf("get: %+v", got.Template)
	}
	if out := mustRun(t, d.addr, "template", "list"); !strings.Contains(out, "lan") || !strings.Contains(out, got.Template.Commit[:12]) {
		t.Errorf("list:\n%s", out)
	}
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"add again", []string{"template", "add", "lan", repo}, ExitConflict},
		{"get unknown", []string{"template", "get", "wan"}, ExitNotFound},
		{"invalid name", []string{"template", "add", "Lan", repo}, ExitInvalid},
		{"pin to the pinned commit", []string{"template", "pin", "lan", got.Template.Commit}, 0},
		{"remove", []string{"template", "remove", "lan"}, 0},
		{"get removed", []string{"template", "get", "lan"}, ExitNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if r := bbctl(t, d.addr, c.args...); r.code != c.code {
				t.Errorf("bbctl %q: exit %d, stderr %q; want %d", c.args, r.code, r.stderr, c.code)
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
	if err := os.MkdirAll(filepath.Join(bad, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "etc", "motd"), []byte("not in a sysext\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		dir       string
		wantError bool
	}{{"example sysext", good, false}, {"sysext with etc/", bad, true}} {
		t.Run(c.name, func(t *testing.T) {
			r := bbctl(t, d.addr, "template", "validate", c.dir, "--json")
			skipUnimplemented(t, r)
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
}

func TestNetworkCommands(t *testing.T) {
	d := startDaemon(t)
	r := bbctl(t, d.addr, "network", "get", "nope")
	skipUnimplemented(t, r)
	if r.code != ExitNotFound {
		t.Errorf("get of no such tenant: exit %d, stderr %q", r.code, r.stderr)
	}
	mustRun(t, d.addr, "tenant", "create", "web", "--index", "9")
	var listed []networkReply
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "network", "list", "--json")), &listed); err != nil || len(listed) != 1 || listed[0].Network.Tenant != "web" {
		t.Errorf("list: %+v, %v", listed, err)
	}
	var n networkReply
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "network", "get", "web", "--json")), &n); err != nil {
		t.Fatal(err)
	}
	if n.Network.Tenant != "web" || n.Network.NetworkIndex != 9 {
		t.Errorf("network %+v", n.Network)
	}
	if r := bbctl(t, d.addr, "network", "remove-peer", "web", strings.Repeat("A", 43)+"="); r.code != ExitNotFound {
		t.Errorf("remove of no such peer: exit %d, stderr %q", r.code, r.stderr)
	}
}
