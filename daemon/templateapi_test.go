package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// gitRepoFrom makes a real git repository with one commit holding a copy of dir.
func gitRepoFrom(t *testing.T, dir string) string {
	t.Helper()
	testpolicy.RequireTool(t, "git")
	repo := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", dir, repo).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v %s", dir, err, out)
	}
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-q", "-m", "template")
	return repo
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestTemplateRegistryOverVarlink(t *testing.T) {
	repo := gitRepoFrom(t, "../examples/templates/sysext")
	head := git(t, repo, "rev-parse", "HEAD")
	d := startDaemon(t)
	c := dial(t, d.socket)

	// Add with more: progress replies, then the pinned template.
	replies := c.callMore("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"tools","url":%q,"ref":"main"}`, repo))
	last := replies[len(replies)-1]
	if last.Error != "" {
		t.Fatalf("Add: %s %v", last.Error, last.Parameters)
	}
	tmpl := last.Parameters["template"].(map[string]any)
	if tmpl["commit"] != head || tmpl["type"] != "sysext" {
		t.Fatalf("Add = %v, want commit %s type sysext", tmpl, head)
	}
	if len(replies) < 2 {
		t.Errorf("Add with more sent no progress replies")
	}
	for _, r := range replies[:len(replies)-1] {
		if _, ok := r.Parameters["progress"]; !ok || !r.Continues {
			t.Errorf("progress reply = %v", r)
		}
	}
	wantError(t, c.call("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"tools","url":%q}`, repo)), "io.bitbuilder.Template.TemplateExists", nil)
	wantError(t, c.call("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"other","url":%q,"ref":"no-such-branch"}`, repo)), "io.bitbuilder.Template.NoSuchRef", nil)
	wantError(t, c.call("io.bitbuilder.Template.Add", `{"name":"Bad_Name","url":"/nonexistent"}`), "io.bitbuilder.Template.InvalidName", nil)
	wantError(t, c.call("io.bitbuilder.Template.Get", `{"name":"nope"}`), "io.bitbuilder.Template.NoSuchTemplate", nil)

	// A tenant using it records the exact commit.
	tn := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"webshop","templates":[{"role":"sysext","name":"tools","template":"tools"}]}`))
	if got := tn["templates"].([]any)[0].(map[string]any)["commit"]; got != head {
		t.Errorf("tenant pinned %v, want %s", got, head)
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"wrong","templates":[{"role":"container","name":"x","template":"tools"}]}`), "io.bitbuilder.Tenant.InvalidField", nil)
	wantError(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"missing","templates":[{"role":"sysext","name":"x","template":"absent"}]}`), "io.bitbuilder.Tenant.NoSuchTemplate", nil)

	got := c.call("io.bitbuilder.Template.Get", `{"name":"tools"}`)
	if used := fmt.Sprint(got.Parameters["template"].(map[string]any)["usedBy"]); used != "[webshop]" {
		t.Errorf("usedBy = %s", used)
	}
	wantError(t, c.call("io.bitbuilder.Template.Remove", `{"name":"tools"}`), "io.bitbuilder.Template.TemplateInUse", map[string]any{"tenants": "[webshop]"})

	// Validate the pinned template, and a broken directory on the host.
	v := c.call("io.bitbuilder.Template.Validate", `{"name":"tools"}`)
	if v.Error != "" || v.Parameters["errors"] != 0.0 {
		t.Errorf("Validate pinned example: %v", v)
	}
	broken := t.TempDir()
	os.MkdirAll(filepath.Join(broken, "usr/lib"), 0o755)
	os.WriteFile(filepath.Join(broken, "usr/lib/os-release"), []byte("ID=debian\n"), 0o644)
	v = c.call("io.bitbuilder.Template.Validate", fmt.Sprintf(`{"path":%q,"type":"sysext"}`, broken))
	if v.Error != "" || v.Parameters["errors"].(float64) < 1 {
		t.Errorf("Validate broken extension: %v", v)
	}
	wantError(t, c.call("io.bitbuilder.Template.Validate", `{"path":"relative/dir","type":"sysext"}`), "io.bitbuilder.Template.InvalidField", map[string]any{"field": "path"})
	wantError(t, c.call("io.bitbuilder.Template.Validate", `{}`), "io.bitbuilder.Template.InvalidField", nil)

	list := c.callMore("io.bitbuilder.Template.List", `{}`)
	if len(list) != 1 || list[0].Error != "" {
		t.Errorf("List = %v", list)
	}
}
