package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/template/validate"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// UnitsTenant maps a tenant record to what the unit renderer needs. With a tenantsDir (the
// templates step's checkouts; "" for none) it also reads each VM template's config/vm-config.yaml into the
// machine's vmspawn options and notes its cloud-init files; a file that cannot be read or
// parsed adds nothing here (the machines step refuses to start that VM and says why).
func UnitsTenant(t *tenant.Tenant, tenantsDir string) units.Tenant {
	u := units.Tenant{Name: t.Name, NetworkIndex: t.NetworkIndex}
	if len(t.Machines) > 0 {
		u.CPUs, u.MemoryBytes = t.Resources.CPUs, t.Resources.MemoryBytes
	}
	for i := range t.Machines {
		m := &t.Machines[i]
		um := units.Machine{Name: m.Name, Kind: string(m.Kind), CPUs: m.CPUs, MemoryBytes: m.MemoryBytes}
		if m.Kind == tenant.VM && tenantsDir != "" {
			if use := useOf(t, m); use != nil {
				dir := TemplateDir(tenantsDir, t.Name, *use)
				if vc, err := readVMConfig(dir); err == nil {
					um.VMArgs = vc.Args()
				}
				ud, _ := machines.ReadTemplateFile(dir, "config/cloud-init/user-data", 1<<20)
				md, _ := machines.ReadTemplateFile(dir, "config/cloud-init/meta-data", 1<<20)
				um.CloudInit = ud != nil && md != nil
				if imgs, err := validate.TemplateImages(dir); err == nil {
					for _, img := range imgs {
						um.ImageSysext = um.ImageSysext || img.Class == machines.ClassSysext
						um.ImageConfext = um.ImageConfext || img.Class == machines.ClassConfext
					}
				}
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
//
// It keeps a manifest of the unit names it wrote for each tenant, Dir/.bitbuilder/<tenant>.units
// (one name a line), so that it removes exactly the tenant's units that a new render no longer
// has (an extension dropped from the tenant, a machine removed), and every unit of the tenant at
// Teardown, without guessing from name prefixes (tenants "a" and "a-b" share one). The manifest
// is widened before a unit is written and narrowed only after the stale ones are gone, so a crash
// in between forgets nothing. A pruned .mount unit is stopped (unmounted) after systemd reloaded
// without it; machine units are stopped by the machines step.
type UnitsStep struct {
	Dir    string
	Config units.Config
	// TenantsDir is where the templates step checks templates out (VMs' vm-config.yaml).
	TenantsDir string
	// Reload asks systemd to reload its units (D-Bus Manager.Reload).
	Reload func(ctx context.Context) error
	// Stop stops a unit and waits for the job (nil: units are not stopped). Errors that wrap
	// machines.ErrNoBus mean there is no service manager to ask, and are ignored.
	Stop func(ctx context.Context, unit string) error

	// reloadOwed is set when files changed but the reload failed: a later pass whose files
	// are already right must still reload. synced is set by the first reload of this
	// process: until then a reload is owed too, since a previous process may have written
	// files and died before it reloaded, which nothing in memory can tell.
	mu         sync.Mutex
	reloadOwed bool
	synced     bool
}

// ManifestDir is the directory, inside a unit directory, of the per-tenant unit manifests.
const ManifestDir = ".bitbuilder"

func (s *UnitsStep) manifestPath(tenantName string) string {
	return filepath.Join(s.Dir, ManifestDir, tenantName+".units")
}

// readManifest returns the unit names recorded for the tenant (none when there is no manifest).
func (s *UnitsStep) readManifest(tenantName string) ([]string, error) {
	b, err := os.ReadFile(s.manifestPath(tenantName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		// Only plain unit names: a line with a path separator would reach outside Dir.
		if l = strings.TrimSpace(l); l != "" && !strings.ContainsRune(l, '/') && l != "." && l != ".." {
			names = append(names, l)
		}
	}
	return names, nil
}

// writeManifest records names as the tenant's units (atomically, synced); unchanged content is not rewritten.
func (s *UnitsStep) writeManifest(tenantName string, names []string) error {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	content := []byte(strings.Join(names, "\n") + "\n")
	p := s.manifestPath(tenantName)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, content) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, content, atomicfile.Options{})
}

// removeUnits removes the unit files names from Dir; removed says whether one existed.
func (s *UnitsStep) removeUnits(names []string) (removed bool, err error) {
	for _, n := range names {
		err := os.Remove(filepath.Join(s.Dir, n))
		if err == nil {
			removed = true
		} else if !errors.Is(err, os.ErrNotExist) {
			return removed, err
		}
	}
	return removed, nil
}

// stopMounts stops the .mount units among names (the mounts stay after their unit file went).
func (s *UnitsStep) stopMounts(ctx context.Context, names []string) error {
	if s.Stop == nil {
		return nil
	}
	var errs []error
	for _, n := range names {
		if !strings.HasSuffix(n, ".mount") {
			continue
		}
		if err := s.Stop(ctx, n); err != nil && !errors.Is(err, machines.ErrNoBus) {
			errs = append(errs, fmt.Errorf("stop %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
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
	written, err := s.readManifest(t.Name)
	if err != nil {
		return nil, fmt.Errorf("unit manifest: %w", err)
	}
	current := make([]string, 0, len(us))
	for _, u := range us {
		current = append(current, u.Name)
	}
	var stale []string
	for _, n := range written {
		if !slices.Contains(current, n) {
			stale = append(stale, n)
		}
	}
	// Record every unit before it is written: the old ones stay listed until they are gone.
	if err := s.writeManifest(t.Name, append(slices.Clone(written), current...)); err != nil {
		return nil, fmt.Errorf("unit manifest: %w", err)
	}
	changed := false
	for _, u := range us {
		c, err := units.ReplaceUnit(s.Dir, u)
		if err != nil {
			return nil, err
		}
		changed = changed || c
	}
	removed, err := s.removeUnits(stale)
	if err != nil {
		return nil, err
	}
	if err := s.reload(ctx, changed || removed); err != nil {
		return []tenant.Condition{cond("UnitsInstalled", false, "ReloadFailed", fmt.Sprintf("units written to %s, but systemd did not reload: %v", s.Dir, err))}, err
	}
	// After the reload no remaining unit requires a pruned mount any more: stopping it stops nothing else.
	if err := s.stopMounts(ctx, stale); err != nil {
		return []tenant.Condition{cond("UnitsInstalled", false, "StopFailed", err.Error())}, err
	}
	if len(stale) > 0 {
		if err := s.writeManifest(t.Name, current); err != nil {
			return nil, fmt.Errorf("unit manifest: %w", err)
		}
	}
	return []tenant.Condition{cond("UnitsInstalled", true, "Written", fmt.Sprintf("%d units in %s", len(us), s.Dir))}, nil
}

// Teardown implements Step: every unit in the tenant's manifest (and of its current render, for
// units written before manifests existed) is removed, its mounts stopped, then the manifest.
func (s *UnitsStep) Teardown(ctx context.Context, t *tenant.Tenant) error {
	names, err := s.readManifest(t.Name)
	if err != nil {
		return fmt.Errorf("unit manifest: %w", err)
	}
	// Only the names matter here: no template file is read.
	if us, err := units.Render(UnitsTenant(t, ""), s.Config); err == nil {
		for _, u := range us {
			if !slices.Contains(names, u.Name) {
				names = append(names, u.Name)
			}
		}
	}
	removed, err := s.removeUnits(names)
	if err != nil {
		return err
	}
	if err := s.reload(ctx, removed); err != nil {
		// Nothing is left to remove; without a service manager there is nothing to tell.
		if !strings.Contains(err.Error(), "no system bus") {
			return fmt.Errorf("units removed, reload failed: %w", err)
		}
	}
	if err := s.stopMounts(ctx, names); err != nil {
		return err
	}
	if err := os.Remove(s.manifestPath(t.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(s.manifestPath(t.Name))) // when it was the last tenant's
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
