package reconcile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

func TestUnitsStepReloadsUntilItWorks(t *testing.T) {
	dir := t.TempDir()
	reloads, fail := 0, true
	s := &UnitsStep{Dir: dir, Config: units.Config{StateDir: t.TempDir()}, Reload: func(context.Context) error {
		reloads++
		if fail {
			return errors.New("no system bus")
		}
		return nil
	}}
	tn := &tenant.Tenant{Name: "acme", NetworkIndex: 3, DesiredState: tenant.Running}
	conds, err := s.Ensure(t.Context(), tn)
	if err == nil || conds[0].Status != "false" || conds[0].Reason != "ReloadFailed" {
		t.Fatalf("first pass: %v %+v", err, conds)
	}
	// The files are right now, but systemd never heard of them: the next pass reloads.
	fail = false
	conds, err = s.Ensure(t.Context(), tn)
	if err != nil || conds[0].Status != "true" || reloads != 2 {
		t.Fatalf("second pass: %v %+v reloads=%d", err, conds, reloads)
	}
	// Nothing changed: no reload.
	s.Ensure(t.Context(), tn)
	if reloads != 2 {
		t.Errorf("reloaded without a change: %d", reloads)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) == 0 {
		t.Fatal("no units written")
	}
	if err := s.Teardown(t.Context(), tn); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("teardown left %d files", len(ents))
	}
}

func TestBootRegistryWritesOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "boot-registry.json")
	obs := BootRegistry(path, units.Config{}, "")
	ts := []*tenant.Tenant{{Name: "a", NetworkIndex: 1, DesiredState: tenant.Running,
		Templates: []tenant.TemplateUse{{Role: "sysext", Name: "tools", Template: "t"}}}}
	if err := obs(t.Context(), ts); err != nil {
		t.Fatal(err)
	}
	reg, skipped, err := units.ReadRegistry(path)
	if err != nil || len(skipped) != 0 || len(reg.Tenants) != 1 || !reg.Tenants[0].Running || reg.Tenants[0].Sysext[0] != "tools" {
		t.Fatalf("registry: %+v %v %v", reg, skipped, err)
	}
	fi1, _ := os.Stat(path)
	ts[0].Phase = tenant.PhaseReady // a status change: nothing the generator needs
	os.Chtimes(path, fi1.ModTime().Add(-1e9), fi1.ModTime().Add(-1e9))
	fi1, _ = os.Stat(path)
	obs(t.Context(), ts)
	if fi2, _ := os.Stat(path); !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Error("registry rewritten for a status-only change")
	}
	ts[0].DesiredState = tenant.Stopped
	obs(t.Context(), ts)
	if reg, _, _ := units.ReadRegistry(path); reg.Tenants[0].Running {
		t.Error("stop not recorded in the boot registry")
	}
}
