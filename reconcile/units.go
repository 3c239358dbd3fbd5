package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"

	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// UnitsTenant maps a tenant record to what the unit renderer needs. With tenantsDir (the
// templates step's checkouts) it also reads each VM template's config/vm-config.yaml into the
// machine's vmspawn options and notes its cloud-init files; a file that cannot be read or
// parsed adds nothing here (the machines step refuses to start that VM and says why).
func UnitsTenant(t *tenant.Tenant, tenantsDir ...string) units.Tenant {
	u := units.Tenant{Name: t.Name, NetworkIndex: t.NetworkIndex}
	if len(t.Machines) > 0 {
		u.CPUs, u.MemoryBytes = t.Resources.CPUs, t.Resources.MemoryBytes
	}
	for i := range t.Machines {
		m := &t.Machines[i]
		um := units.Machine{Name: m.Name, Kind: string(m.Kind), CPUs: m.CPUs, MemoryBytes: m.MemoryBytes}
		if m.Kind == tenant.VM && len(tenantsDir) > 0 && tenantsDir[0] != "" {
			if use := useOf(t, m); use != nil {
				dir := TemplateDir(tenantsDir[0], t.Name, *use)
				if vc, err := readVMConfig(dir); err == nil {
					um.VMArgs = vc.Args()
				}
				ud, _ := machines.ReadTemplateFile(dir, "config/cloud-init/user-data", 1<<20)
				md, _ := machines.ReadTemplateFile(dir, "config/cloud-init/meta-data", 1<<20)
				um.CloudInit = ud != nil && md != nil
			}
		}
		u.Machines = append(u.Machines, um)
	}
	for _, tu := range t.Templates {
		switch tu.Role {
		case "infrastructure":
			u.Infra = true
		case "sysext":
			u.Sysext = append(u.Sysext, tu.Name)
		case "confext":
			u.Confext = append(u.Confext, tu.Name)
		}
	}
	return u
}

// readVMConfig reads and parses a VM template checkout's config/vm-config.yaml (none: the zero config).
func readVMConfig(dir string) (machines.VMConfig, error) {
	data, err := machines.ReadTemplateFile(dir, "config/vm-config.yaml", machines.MaxVMConfigSize)
	if err != nil || data == nil {
		return machines.VMConfig{}, err
	}
	return machines.ParseVMConfig(data)
}

// UnitsStep writes a tenant's units (the same ones the boot generator writes) into Dir,
// normally /run/systemd/system, and reloads the manager when one changed.
type UnitsStep struct {
	Dir    string
	Config units.Config
	// TenantsDir is where the templates step checks templates out (VMs' vm-config.yaml).
	TenantsDir string
	// Reload asks systemd to reload its units (D-Bus Manager.Reload).
	Reload func(ctx context.Context) error

	// reloadOwed is set when files changed but the reload failed: a later pass whose files
	// are already right must still reload. synced is set by the first reload of this
	// process: until then a reload is owed too, since a previous process may have written
	// files and died before it reloaded, which nothing in memory can tell.
	mu         sync.Mutex
	reloadOwed bool
	synced     bool
}

func (s *UnitsStep) reload(ctx context.Context, changed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !changed && !s.reloadOwed && s.synced || s.Reload == nil {
		return nil
	}
	if err := s.Reload(ctx); err != nil {
		s.reloadOwed = true
		return err
	}
	s.reloadOwed, s.synced = false, true
	return nil
}

// Name implements Step.
func (s *UnitsStep) Name() string { return "Units" }

// Ensure implements Step.
func (s *UnitsStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	us, err := units.Render(UnitsTenant(t, s.TenantsDir), s.Config)
	if err != nil {
		// A tenant whose units cannot be rendered (a name too long for a machine name, ...)
		// will not get better by retrying.
		return []tenant.Condition{cond("UnitsInstalled", false, "RenderFailed", err.Error())}, nil
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	changed := false
	for _, u := range us {
		c, err := units.ReplaceUnit(s.Dir, u)
		if err != nil {
			return nil, err
		}
		changed = changed || c
	}
	if err := s.reload(ctx, changed); err != nil {
		return []tenant.Condition{cond("UnitsInstalled", false, "ReloadFailed", fmt.Sprintf("units written to %s, but systemd did not reload: %v", s.Dir, err))}, err
	}
	return []tenant.Condition{cond("UnitsInstalled", true, "Written", fmt.Sprintf("%d units in %s", len(us), s.Dir))}, nil
}

// Teardown implements Step.
func (s *UnitsStep) Teardown(ctx context.Context, t *tenant.Tenant) error {
	us, err := units.Render(UnitsTenant(t), s.Config)
	if err != nil {
		return nil // nothing was ever written for it
	}
	removed := false
	for _, u := range us {
		err := os.Remove(filepath.Join(s.Dir, u.Name))
		if err == nil {
			removed = true
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := s.reload(ctx, removed); err != nil {
		// Nothing is left to remove; without a service manager there is nothing to tell.
		if strings.Contains(err.Error(), "no system bus") {
			return nil
		}
		return fmt.Errorf("units removed, reload failed: %w", err)
	}
	return nil
}

// BootRegistry returns an Observer that keeps the boot registry at path current: the
// tenants the generator brings back at boot (all but those being deleted).
func BootRegistry(path string, cfg units.Config, tenantsDir string) Observer {
	var mu sync.Mutex
	var last *units.Registry
	return func(_ context.Context, ts []*tenant.Tenant) error {
		reg := units.Registry{Version: units.RegistryVersion, Tenants: []units.RegistryTenant{}}
		if !reflect.DeepEqual(cfg, units.Config{}) {
			reg.Units = &cfg
		}
		for _, t := range ts {
			if t.Deleting() {
				continue
			}
			u := UnitsTenant(t, tenantsDir)
			reg.Tenants = append(reg.Tenants, units.RegistryTenant{
				Name: u.Name, NetworkIndex: u.NetworkIndex, Infra: u.Infra, Sysext: u.Sysext, Confext: u.Confext,
				Machines: u.Machines, CPUs: u.CPUs, MemoryBytes: u.MemoryBytes,
				Running: t.DesiredState == tenant.Running,
			})
		}
		mu.Lock()
		defer mu.Unlock()
		if last != nil && reflect.DeepEqual(*last, reg) {
			return nil // status changes do not touch the boot registry
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := units.WriteRegistry(path, reg); err != nil {
			return err
		}
		last = &reg
		return nil
	}
}
