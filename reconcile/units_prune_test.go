package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// unitFiles lists the unit files in dir (not the manifests).
func unitFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestUnitsStepPrunesDroppedUnits: a unit the tenant's render no longer has (a dropped sysext's
// mount) is removed and stopped, units of a tenant whose name is a prefix of another's are left
// alone, and Teardown leaves nothing of the tenant.
func TestUnitsStepPrunesDroppedUnits(t *testing.T) {
	dir := t.TempDir()
	cfg := units.Config{StateDir: t.TempDir()}
	var stopped []string
	s := &UnitsStep{Dir: dir, Config: cfg,
		Reload: func(context.Context) error { return nil },
		Stop:   func(_ context.Context, u string) error { stopped = append(stopped, u); return nil },
	}
	a := &tenant.Tenant{Name: "a", NetworkIndex: 1, DesiredState: tenant.Running, Templates: []tenant.TemplateUse{
		{Role: "sysext", Name: "tools", Template: "tools"}, {Role: "confext", Name: "conf", Template: "conf"},
	}}
	ab := &tenant.Tenant{Name: "a-b", NetworkIndex: 2, DesiredState: tenant.Running, Templates: []tenant.TemplateUse{
		{Role: "sysext", Name: "tools", Template: "tools"},
	}}
	for _, tn := range []*tenant.Tenant{a, ab} {
		if _, err := s.Ensure(t.Context(), tn); err != nil {
			t.Fatal(err)
		}
	}
	render := func(tn *tenant.Tenant) []string {
		us, err := units.Render(UnitsTenant(tn, ""), cfg)
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, u := range us {
			n = append(n, u.Name)
		}
		return n
	}
	abUnits := render(ab)
	mountOf := func(tn *tenant.Tenant, merged string) string {
		n, err := units.MountUnitName(filepath.Join(cfg.TenantPaths(tn.Name).Dir, "merged", merged))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	usrMount, etcMount := mountOf(a, "usr"), mountOf(a, "etc")
	if got := unitFiles(t, dir); !slices.Contains(got, usrMount) || !slices.Contains(got, etcMount) {
		t.Fatalf("mount units %s, %s not written: %v", usrMount, etcMount, got)
	}

	// Drop the sysext: its mount unit goes and is stopped; the confext's stays; a-b is untouched.
	a.Templates = a.Templates[1:]
	if _, err := s.Ensure(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	got := unitFiles(t, dir)
	if slices.Contains(got, usrMount) {
		t.Errorf("the dropped sysext's mount unit %s is still there: %v", usrMount, got)
	}
	if !slices.Contains(got, etcMount) {
		t.Errorf("the confext's mount unit %s was removed", etcMount)
	}
	if !slices.Equal(stopped, []string{usrMount}) {
		t.Errorf("stopped %v, want [%s]", stopped, usrMount)
	}
	for _, n := range abUnits {
		if !slices.Contains(got, n) {
			t.Errorf("unit %s of tenant a-b removed", n)
		}
	}
	// A second pass prunes nothing more and stops nothing.
	stopped = nil
	if _, err := s.Ensure(t.Context(), a); err != nil || len(stopped) != 0 {
		t.Fatalf("second pass: %v, stopped %v", err, stopped)
	}

	// Teardown of a with its record emptied of extensions still removes the confext's mount unit
	// (the manifest knows it), and leaves a-b's units and manifest.
	a.Templates = nil
	if err := s.Teardown(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	got = unitFiles(t, dir)
	slices.Sort(got)
	want := slices.Clone(abUnits)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after teardown of a: %v, want only a-b's %v", got, want)
	}
	if !slices.Contains(stopped, etcMount) {
		t.Errorf("teardown did not stop %s: %v", etcMount, stopped)
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestDir, "a.units")); !os.IsNotExist(err) {
		t.Errorf("manifest of a left behind: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ManifestDir, "a-b.units")); err != nil || !strings.Contains(string(b), "tenant@a\\x2db.service") {
		t.Errorf("manifest of a-b: %q %v", b, err)
	}
	if err := s.Teardown(t.Context(), ab); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("teardown of every tenant left %d entries", len(ents))
	}
}
