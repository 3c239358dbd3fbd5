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

// TestUnitsStepPrunesDroppedUnits: a unit the tenant's render no longer has (a dropped machine's unit; the
// extension overlay mount an older version rendered) is removed, a pruned mount is stopped, units of a tenant
// whose name is a prefix of another's are left alone, and Teardown leaves nothing of the tenant.
func TestUnitsStepPrunesDroppedUnits(t *testing.T) {
	dir := t.TempDir()
	cfg := units.Config{StateDir: t.TempDir()}
	var stopped []string
	s := &UnitsStep{Dir: dir, Config: cfg,
		Reload: func(context.Context) error { return nil },
		Stop:   func(_ context.Context, u string) error { stopped = append(stopped, u); return nil },
	}
	a := &tenant.Tenant{Name: "a", NetworkIndex: 1, DesiredState: tenant.Running, Templates: []tenant.TemplateUse{
		{Role: "sysext", Name: "tools", Template: "tools"}, {Role: "container", Name: "deb", Template: "deb"},
	}, Machines: []tenant.Machine{{Name: "web", Kind: tenant.Container, Template: "deb"}, {Name: "db", Kind: tenant.Container, Template: "deb"}}}
	ab := &tenant.Tenant{Name: "a-b", NetworkIndex: 2, DesiredState: tenant.Running, Templates: []tenant.TemplateUse{
		{Role: "sysext", Name: "tools", Template: "tools"},
	}}
	// What an older version left: the sysext overlay mount of a, listed in a's manifest.
	oldMount, err := units.MountUnitName(filepath.Join(cfg.TenantPaths("a").Dir, "merged", "usr"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ManifestDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, oldMount), []byte("[Mount]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestDir, "a.units"), []byte(oldMount+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
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
	got := unitFiles(t, dir)
	if slices.Contains(got, oldMount) || !slices.Equal(stopped, []string{oldMount}) {
		t.Errorf("the old overlay mount unit %s: files %v, stopped %v; want it removed and stopped", oldMount, got, stopped)
	}
	dbUnit := units.MachineUnit("a", "db")
	if !slices.Contains(got, dbUnit) {
		t.Fatalf("machine unit %s not written: %v", dbUnit, got)
	}

	// Drop machine db: its unit goes (the machines step stops it); a-b is untouched.
	stopped = nil
	a.Machines = a.Machines[:1]
	if _, err := s.Ensure(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	got = unitFiles(t, dir)
	if slices.Contains(got, dbUnit) {
		t.Errorf("the dropped machine's unit %s is still there: %v", dbUnit, got)
	}
	if !slices.Contains(got, units.MachineUnit("a", "web")) {
		t.Errorf("machine web's unit was removed: %v", got)
	}
	if len(stopped) != 0 {
		t.Errorf("stopped %v: only mounts are stopped by the units step", stopped)
	}
	for _, n := range abUnits {
		if !slices.Contains(got, n) {
			t.Errorf("unit %s of tenant a-b removed", n)
		}
	}
	// A second pass prunes nothing more and stops nothing.
	if _, err := s.Ensure(t.Context(), a); err != nil || len(stopped) != 0 {
		t.Fatalf("second pass: %v, stopped %v", err, stopped)
	}

	// Teardown of a with its record emptied still removes its units (the manifest knows them), and leaves
	// a-b's units and manifest.
	a.Templates, a.Machines = nil, nil
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
