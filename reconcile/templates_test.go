package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// countingMaterializer writes a marker file and counts checkouts.
type countingMaterializer struct{ n int }

func (c *countingMaterializer) Materialize(_ context.Context, _, commit, _, target string, _ []template.Dir) error {
	c.n++
	if err := os.MkdirAll(filepath.Join(target, "rootfs"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(target, "rootfs", "commit"), []byte(commit), 0o644)
}

// TestSharedTrees: container templates are checked out once per commit for all tenants; the trees no tenant pins
// any more are pruned, the others kept.
func TestSharedTrees(t *testing.T) {
	ctx := t.Context()
	tenantsDir := filepath.Join(t.TempDir(), "tenants")
	m := &countingMaterializer{}
	step := &TemplatesStep{Registry: m, TenantsDir: tenantsDir}
	c1, c2 := "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	mk := func(name, commit string) *tenant.Tenant {
		return &tenant.Tenant{Name: name, Templates: []tenant.TemplateUse{{Role: "container", Name: "deb", Template: "deb", Commit: commit}}}
	}
	a, b := mk("a", c1), mk("b", c1)
	for _, tn := range []*tenant.Tenant{a, b, a} {
		if _, err := step.Ensure(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	if m.n != 1 {
		t.Fatalf("%d checkouts for two tenants at one commit, want 1", m.n)
	}
	if TemplateDir(tenantsDir, "a", a.Templates[0]) != TemplateDir(tenantsDir, "b", b.Templates[0]) {
		t.Fatal("two tenants at one commit do not share the tree")
	}
	b = mk("b", c2)
	step.Ensure(ctx, b)
	old := TemplateDir(tenantsDir, "a", a.Templates[0])
	// Pretend both trees are old enough to be pruned.
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	os.Chtimes(TemplateDir(tenantsDir, "b", b.Templates[0]), past, past)
	// What was extracted from the template's extensions/ images goes with its tree.
	writeTree(t, TemplateImagesDir(old), extFile{path: "sysext/dev/usr/x", content: "x"})
	prune := PruneSharedTrees(tenantsDir)
	if err := prune(ctx, []*tenant.Tenant{a, b}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("a tree still pinned was pruned: %v", err)
	}
	if _, err := os.Stat(TemplateImagesDir(old)); err != nil {
		t.Fatalf("the images of a tree still pinned were pruned: %v", err)
	}
	if err := prune(ctx, []*tenant.Tenant{b}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("a tree no tenant pins was kept: %v", err)
	}
	if _, err := os.Stat(old + ".commit"); !os.IsNotExist(err) {
		t.Fatalf("its marker was kept: %v", err)
	}
	if _, err := os.Stat(TemplateImagesDir(old)); !os.IsNotExist(err) {
		t.Fatalf("its extracted images were kept: %v", err)
	}
	if _, err := os.Stat(TemplateDir(tenantsDir, "b", b.Templates[0])); err != nil {
		t.Fatalf("b's tree was pruned: %v", err)
	}
}
