package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// MachineHost starts, stops and observes machines: the service manager and systemd-machined
// (machines.Host), or a fake in tests.
type MachineHost interface {
	UnitState(ctx context.Context, unit string) (machines.UnitState, error)
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string, wait bool) error
	Machine(ctx context.Context, name string) (machines.Info, bool, error)
	Terminate(ctx context.Context, name string) error
}

// StatusStep is a Step that also reports the observed state of the tenant's machines.
type StatusStep interface {
	Step
	EnsureStatus(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, []tenant.MachineStatus, error)
}

// MachineRoot prepares a machine's own root from its template's tree (machines.Prepare in
// the daemon; a fake in tests).
type MachineRoot func(ctx context.Context, dir, commit string, copies []machines.Copy) error

// MachinesStep runs a tenant's machines: it makes each machine's root, starts the units of the
// machines that should run, stops the others, prunes machines that left the record, and
// reports each machine's state from what systemd and machined say (nothing is remembered in
// memory: after a restart every state is read from the host again).
type MachinesStep struct {
	// Host is nil when there is no system bus.
	Host MachineHost
	// Units gives the paths (state directory) and names the units use.
	Units units.Config
	// TenantsDir is where the templates step checks templates out (StateDir/tenants).
	TenantsDir string
	// UnitDir is where the units step writes units (to prune the units of removed machines).
	UnitDir string
	// Reload reloads the service manager after a unit file was removed.
	Reload func(ctx context.Context) error
	// NetworkDir is networkd's directory (/run/systemd/network), where each VM's tap gets a
	// file that puts it on its tenant's bridge; NetworkReload has networkd read it.
	NetworkDir    string
	NetworkReload func(ctx context.Context) error
	// AttachTap puts a running VM's tap on its tenant's bridge (default machines.AttachTap).
	AttachTap func(ctx context.Context, tap, bridge string) (bool, error)
	// VMAddresses returns the addresses the tenant bridge's DHCP server leased to the VM behind
	// tap (machined knows no addresses of a VM); nil leaves them empty.
	VMAddresses func(ctx context.Context, tap, bridge string) ([]string, error)
	// Prepare makes a machine's root (default machines.Prepare).
	Prepare MachineRoot
	// StopTimeout bounds the wait for a machine to stop at deletion (default 2 min).
	StopTimeout time.Duration
	Log         *slog.Logger
	// RefreshExtensions has the running container whose leader is pid merge its extensions of class
	// ("sysext" or "confext") anew (default machines.RefreshExtensions, see extensions.go).
	RefreshExtensions func(ctx context.Context, pid int, class string) error

	extChecker extensionChecker
}

// Name implements Step.
func (s *MachinesStep) Name() string { return "Machines" }

// Ensure implements Step.
func (s *MachinesStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	c, _, err := s.EnsureStatus(ctx, t)
	return c, err
}

func (s *MachinesStep) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// useOf returns the template use machine m runs.
func useOf(t *tenant.Tenant, m *tenant.Machine) *tenant.TemplateUse {
	role := "container"
	if m.Kind == tenant.VM {
		role = "machine"
	}
	for i := range t.Templates {
		if t.Templates[i].Role == role && t.Templates[i].Name == m.Template {
			return &t.Templates[i]
		}
	}
	return nil
}

// EnsureStatus implements StatusStep.
func (s *MachinesStep) EnsureStatus(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, []tenant.MachineStatus, error) {
	var infraConds []tenant.Condition
	if t.HasInfra() {
		infraConds = s.ensureInfraTap(ctx, t)
	}
	ep := &extensionPass{exts: tenantExtensions(s.TenantsDir, t)}
	if t.HasInfra() && s.Host != nil {
		_, running, err := s.Host.Machine(ctx, units.InfraMachineName(t.Name))
		if err == nil {
			s.infraExtensions(ctx, ep, t, running)
		}
	}
	defer func() {
		if err := pruneExtensionCheckouts(s.TenantsDir, t); err != nil {
			s.log().Warn("removing checkouts of dropped extensions failed", "tenant", t.Name, "err", err)
		}
	}()
	if len(t.Machines) == 0 && len(t.MachineStatus) == 0 {
		return append(infraConds, ep.conditions()...), nil, nil
	}
	if s.Host == nil {
		return []tenant.Condition{cond("MachinesReady", false, "NoSystemBus", "machines need systemd and systemd-machined on the system bus, and there is none")}, nil, nil
	}
	var errs []error
	statuses := make([]tenant.MachineStatus, 0, len(t.Machines))
	for i := range t.Machines {
		st, err := s.ensureMachine(ctx, t, &t.Machines[i], ep)
		if errors.Is(err, machines.ErrNoBus) {
			return []tenant.Condition{cond("MachinesReady", false, "NoSystemBus", err.Error())}, nil, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", t.Machines[i].Name, err))
			st.State, st.Message = tenant.MachineFailed, err.Error()
		}
		statuses = append(statuses, st)
	}
	ep.run() // the running containers' extensions, a few at once
	for i := range statuses {
		if t.MachineOf(statuses[i].Name) != nil {
			mp := s.Units.MachinePaths(t.Name, statuses[i].Name)
			statuses[i].Extensions = machineExtensionDirs(mp, t.Name, statuses[i].Name).handedOver()
		}
	}
	// Machines that left the record: stop them, remove their unit and their directory.
	pruned := false
	for _, old := range t.MachineStatus {
		if t.MachineOf(old.Name) != nil {
			continue
		}
		if err := s.remove(ctx, t.Name, old.Name); err != nil {
			errs = append(errs, fmt.Errorf("removing machine %s: %w", old.Name, err))
			old.State, old.Message = tenant.MachineStopping, err.Error()
			statuses = append(statuses, old)
			continue
		}
		pruned = true
		s.log().Info("machine removed", "tenant", t.Name, "machine", old.Name)
	}
	if pruned && s.Reload != nil {
		if err := s.Reload(ctx); err != nil {
			errs = append(errs, fmt.Errorf("reload after pruning units: %w", err))
		}
	}
	var starting, stopping, failed []string
	for _, st := range statuses {
		switch st.State {
		case tenant.MachineStarting:
			starting = append(starting, st.Name)
		case tenant.MachineStopping:
			stopping = append(stopping, st.Name)
		case tenant.MachineFailed:
			failed = append(failed, st.Name+": "+st.Message)
		}
	}
	conds := []tenant.Condition{}
	for _, st := range statuses {
		if st.Repaired != "" {
			// Recorded as a condition, so that Watch shows what was repaired and when.
			conds = append(conds, cond("MachinesRepaired", true, "StartedAgain", st.Repaired))
		}
	}
	var c tenant.Condition
	switch {
	case len(failed) > 0:
		c = cond("MachinesReady", false, "Failed", strings.Join(failed, "; "))
	case len(starting) > 0:
		c = tenant.Condition{Type: "MachinesReady", Status: "unknown", Reason: "Starting", Message: "starting " + strings.Join(starting, ", ")}
	case len(stopping) > 0:
		c = tenant.Condition{Type: "MachinesReady", Status: "unknown", Reason: "Stopping", Message: "stopping " + strings.Join(stopping, ", ")}
	default:
		c = cond("MachinesReady", true, "AsDesired", fmt.Sprintf("%d machines as desired", len(statuses)))
	}
	conds = append(append(conds, c), infraConds...)
	return append(conds, ep.conditions()...), statuses, errors.Join(errs...)
}

// ensureMachine makes one machine match its record and returns its observed state.
func (s *MachinesStep) ensureMachine(ctx context.Context, t *tenant.Tenant, m *tenant.Machine, ep *extensionPass) (tenant.MachineStatus, error) {
	unit := units.MachineUnit(t.Name, m.Name)
	full := tenant.MachineName(t.Name, m.Name)
	mp := s.Units.MachinePaths(t.Name, m.Name)
	st := tenant.MachineStatus{Name: m.Name, Unit: unit, Commit: machines.RootCommit(mp.Dir)}
	if prev := t.StatusOf(m.Name); prev != nil {
		st.RestartGeneration = prev.RestartGeneration
	}
	us, err := s.Host.UnitState(ctx, unit)
	if err != nil {
		return st, err
	}
	info, registered, err := s.Host.Machine(ctx, full)
	if err != nil {
		return st, err
	}
	observe := func() {
		st.UnitState = us.Active + "/" + us.Sub
		if registered {
			st.Class, st.Leader, st.Addresses = info.Class, info.Leader, info.Addresses
		}
	}
	if !t.WantsRunning(m) {
		observe()
		switch {
		case us.Running() || us.Active == "deactivating":
			if err := s.Host.Stop(ctx, unit, false); err != nil {
				return st, err
			}
			st.State = tenant.MachineStopping
		case registered:
			// Its unit is gone but machined still has it (a leftover): end it.
			if err := s.Host.Terminate(ctx, full); err != nil {
				return st, err
			}
			st.State = tenant.MachineStopping
		default:
			st.State = tenant.MachineStopped
			if machines.RootCommit(mp.Dir) != "" {
				s.extensionsStopped(ctx, ep, machineExtensionDirs(mp, t.Name, m.Name), mp.Root, templateExtensions(s.TenantsDir, t.Name, useOf(t, m)))
			}
		}
		return st, nil
	}

	restart := m.RestartGeneration > st.RestartGeneration
	if restart && (us.Running() || us.Active == "deactivating") {
		s.log().Info("restarting machine", "tenant", t.Name, "machine", m.Name, "generation", m.RestartGeneration)
		if err := s.Host.Stop(ctx, unit, true); err != nil {
			return st, err
		}
		if us, err = s.Host.UnitState(ctx, unit); err != nil {
			return st, err
		}
		registered = false
	}
	switch {
	case us.Active == "active" && registered:
		observe()
		st.State = tenant.MachineRunning
		leader, vm := info.Leader, m.Kind == tenant.VM
		own := templateExtensions(s.TenantsDir, t.Name, useOf(t, m))
		ep.later(func() {
			s.extensionsRunning(ctx, ep, machineExtensionDirs(mp, t.Name, m.Name), mp.Root, own, vm, leader)
		})
		if m.Kind == tenant.VM {
			tap, _, err := s.plugTap(ctx, t, m, full, info.Leader)
			if err != nil {
				return st, err
			}
			if s.VMAddresses != nil && len(st.Addresses) == 0 {
				if addrs, err := s.VMAddresses(ctx, tap, units.BridgeName(t.NetworkIndex)); err == nil {
					st.Addresses = addrs
				}
			}
		}
		return st, nil
	case us.Running() || us.Active == "deactivating":
		observe()
		st.State = tenant.MachineStarting
		return st, nil
	}
	// Not running: make its root (only now, while it is stopped) and start it. A machine the
	// daemon had seen running, and did not stop or restart itself, was stopped behind its back.
	failedBefore := us.Active == "failed"
	if prev := t.StatusOf(m.Name); prev != nil && prev.State == tenant.MachineRunning && !restart {
		st.Repaired = fmt.Sprintf("machine %s was found %s/%s, not running: started again", m.Name, us.Active, us.Sub)
		s.log().Warn("drift repaired", "tenant", t.Name, "machine", m.Name, "found", us.Active+"/"+us.Sub, "action", "started again")
	}
	if err := s.prepare(ctx, t, m, mp); err != nil {
		observe()
		return st, err
	}
	st.Commit = machines.RootCommit(mp.Dir)
	// The extension directories exist before the unit starts (nspawn and vmspawn bind them), holding the
	// extensions compatible with the root just made.
	s.extensionsStopped(ctx, ep, machineExtensionDirs(mp, t.Name, m.Name), mp.Root, templateExtensions(s.TenantsDir, t.Name, useOf(t, m)))
	if m.Kind == tenant.VM {
		if tap, ok := units.TapName(full); ok {
			if err := s.ensureTapFile(ctx, t, m, tap); err != nil {
				observe()
				return st, err
			}
		}
	}
	if err := s.Host.Start(ctx, unit); err != nil {
		observe()
		return st, err
	}
	st.RestartGeneration = m.RestartGeneration
	if us, err = s.Host.UnitState(ctx, unit); err != nil {
		return st, err
	}
	observe()
	st.State = tenant.MachineStarting
	if failedBefore {
		s.log().Warn("machine had failed, started again", "tenant", t.Name, "machine", m.Name, "unit", unit)
	}
	return st, nil
}

// ensureInfraTap gives the infrastructure VM's tap the same treatment as every VM's: its networkd file exists
// before the VM can start (at boot, tenant@ starts it), so networkd's stock profile never claims it, and once the
// VM runs its tap is put on the tenant's bridge. It reports a condition only when something failed.
func (s *MachinesStep) ensureInfraTap(ctx context.Context, t *tenant.Tenant) []tenant.Condition {
	full := units.InfraMachineName(t.Name)
	m := &tenant.Machine{Name: tenant.InfraMachine, Kind: tenant.VM}
	tap, predictable := units.TapName(full)
	if predictable {
		if err := s.ensureTapFile(ctx, t, m, tap); err != nil {
			return []tenant.Condition{cond("InfraNetworkReady", false, "TapFileFailed", err.Error())}
		}
	}
	if s.Host == nil {
		return nil
	}
	info, registered, err := s.Host.Machine(ctx, full)
	if err != nil || !registered {
		return nil
	}
	tap, reason, err := s.plugTap(ctx, t, m, full, info.Leader)
	if err != nil {
		return []tenant.Condition{cond("InfraNetworkReady", false, reason, err.Error())}
	}
	return []tenant.Condition{cond("InfraNetworkReady", true, "OnTenantBridge", tap+" is a port of "+units.BridgeName(t.NetworkIndex))}
}

// plugTap makes the tap of running VM m (machine name full, leader process leader) a port of its tenant's
// bridge: it finds the tap (a name vmspawn shortened is read from the VM's process), makes sure its networkd file
// is there, and attaches it. On failure reason says which of the three failed (NoTap, TapFileFailed, AttachFailed).
func (s *MachinesStep) plugTap(ctx context.Context, t *tenant.Tenant, m *tenant.Machine, full string, leader int) (tap, reason string, err error) {
	tap, ok := units.TapName(full)
	if !ok {
		if tap, err = machines.TapOf(leader); err != nil || tap == "" {
			return "", "NoTap", fmt.Errorf("finding the tap of VM %s (leader %d): %v", full, leader, err)
		}
	}
	if err := s.ensureTapFile(ctx, t, m, tap); err != nil {
		return tap, "TapFileFailed", err
	}
	attach := s.AttachTap
	if attach == nil {
		attach = machines.AttachTap
	}
	bridge := units.BridgeName(t.NetworkIndex)
	changed, err := attach(ctx, tap, bridge)
	if err != nil {
		return tap, "AttachFailed", err
	}
	if changed {
		s.log().Info("tap put on the tenant bridge", "tenant", t.Name, "machine", m.Name, "tap", tap, "bridge", bridge)
	}
	return tap, "", nil
}

// ensureTapFile writes the networkd file that puts VM m's tap on its tenant's bridge, and has
// networkd read it, when it is not there already.
func (s *MachinesStep) ensureTapFile(ctx context.Context, t *tenant.Tenant, m *tenant.Machine, tap string) error {
	if s.NetworkDir == "" {
		return nil
	}
	path := filepath.Join(s.NetworkDir, units.TapNetworkFile(t.Name, m.Name))
	want := units.TapNetwork(tap, units.BridgeName(t.NetworkIndex))
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(want) {
		return nil
	}
	if err := os.MkdirAll(s.NetworkDir, 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, want, atomicfile.Options{}); err != nil {
		return err
	}
	s.log().Info("wrote the networkd file of a VM's tap", "tenant", t.Name, "machine", m.Name, "tap", tap, "file", path)
	if s.NetworkReload != nil {
		if err := s.NetworkReload(ctx); err != nil {
			return fmt.Errorf("networkd reload for the tap of %s: %w", m.Name, err)
		}
	}
	return nil
}

// removeTapFile removes the networkd file of a VM's tap; it reports whether one was there.
func (s *MachinesStep) removeTapFile(tn, name string) (bool, error) {
	if s.NetworkDir == "" {
		return false, nil
	}
	err := os.Remove(filepath.Join(s.NetworkDir, units.TapNetworkFile(tn, name)))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// prepare makes machine m's root from its template's pinned tree when it has none or one of
// another commit, and writes what the machine reads besides (nspawn settings, credentials).
func (s *MachinesStep) prepare(ctx context.Context, t *tenant.Tenant, m *tenant.Machine, mp units.MachinePaths) error {
	use := useOf(t, m)
	if use == nil {
		return fmt.Errorf("the tenant has no template use %q for it", m.Template)
	}
	src := TemplateDir(s.TenantsDir, t.Name, *use)
	if b, err := os.ReadFile(src + ".commit"); err != nil || strings.TrimSpace(string(b)) != use.Commit {
		return fmt.Errorf("template %s is not checked out at %.12s yet", use.Template, use.Commit)
	}
	var copies []machines.Copy
	if m.Kind == tenant.Container {
		copies = []machines.Copy{{Src: filepath.Join(src, "rootfs"), Dst: mp.Root}}
	} else {
		copies = []machines.Copy{
			{Src: filepath.Join(src, "disk-image", "rootfs"), Dst: mp.Root},
			{Src: filepath.Join(src, "disk-image", "boot"), Dst: mp.Boot},
		}
	}
	if machines.RootCommit(mp.Dir) != use.Commit {
		if err := s.checkStorage(t, copies); err != nil {
			return err
		}
		prep := s.Prepare
		if prep == nil {
			prep = machines.Prepare
		}
		s.log().Info("making machine root", "tenant", t.Name, "machine", m.Name, "commit", use.Commit)
		if err := prep(ctx, mp.Dir, use.Commit, copies); err != nil {
			return err
		}
	}
	if m.Kind == tenant.Container {
		data, err := machines.ReadTemplateFile(src, "config/nspawn-settings.conf", machines.MaxSettingsSize)
		if err != nil {
			return err
		}
		out, dropped := machines.SanitizeNspawnSettings(data)
		if len(dropped) > 0 {
			s.log().Debug("template nspawn settings dropped", "tenant", t.Name, "machine", m.Name, "settings", dropped)
		}
		if cur, err := os.ReadFile(mp.Settings); err != nil || string(cur) != string(out) {
			if err := atomicfile.WriteFile(mp.Settings, out, atomicfile.Options{}); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(mp.Boot, "vmlinuz")); err != nil {
		return fmt.Errorf("template %s has no kernel at disk-image/boot/vmlinuz", use.Template)
	}
	if _, err := readVMConfig(src); err != nil {
		return err
	}
	if err := os.MkdirAll(mp.Credentials, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"user-data", "meta-data"} {
		data, err := machines.ReadTemplateFile(src, "config/cloud-init/"+f, 1<<20)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(mp.Credentials, f), data, atomicfile.Options{Mode: 0o600}); err != nil {
			return err
		}
	}
	return nil
}

// checkStorage refuses a new root that would take the tenant's machines over its storage limit:
// storage is the bytes on disk of the tenant's machine roots (their writable copies).
func (s *MachinesStep) checkStorage(t *tenant.Tenant, copies []machines.Copy) error {
	if t.Resources.StorageBytes <= 0 {
		return nil
	}
	used, err := machines.TreeSize(filepath.Join(s.Units.TenantPaths(t.Name).Dir, "machines"))
	if err != nil {
		return err
	}
	var need int64
	for _, c := range copies {
		n, err := machines.TreeSize(c.Src)
		if err != nil {
			return err
		}
		need += n
		if old, err := machines.TreeSize(c.Dst); err == nil {
			used -= old // replaced
		}
	}
	if used+need > t.Resources.StorageBytes {
		return fmt.Errorf("storage limit: the machine roots would take %d bytes, the tenant's storage limit is %d", used+need, t.Resources.StorageBytes)
	}
	return nil
}

// remove stops machine name of tenant tn, removes its unit file and its directory.
func (s *MachinesStep) remove(ctx context.Context, tn, name string) error {
	unit := units.MachineUnit(tn, name)
	if s.Host != nil {
		timeout := s.StopTimeout
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := s.Host.Stop(sctx, unit, true); err != nil && !errors.Is(err, machines.ErrNoBus) {
			return err
		}
		if _, registered, err := s.Host.Machine(sctx, tenant.MachineName(tn, name)); err == nil && registered {
			if err := s.Host.Terminate(sctx, tenant.MachineName(tn, name)); err != nil {
				return err
			}
		}
	}
	if s.UnitDir != "" {
		if err := os.Remove(filepath.Join(s.UnitDir, unit)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if removed, err := s.removeTapFile(tn, name); err != nil {
		return err
	} else if removed && s.NetworkReload != nil {
		_ = s.NetworkReload(ctx) // the tap is gone with its VM; the file only matched it
	}
	return machines.RemoveTree(s.Units.MachinePaths(tn, name).Dir)
}

// Teardown implements Step: every machine of the tenant is stopped and its directory removed,
// before the units and the trees go.
func (s *MachinesStep) Teardown(ctx context.Context, t *tenant.Tenant) error {
	names := make([]string, 0, len(t.Machines)+len(t.MachineStatus))
	for _, m := range t.Machines {
		names = append(names, m.Name)
	}
	for _, st := range t.MachineStatus {
		if !slices.Contains(names, st.Name) {
			names = append(names, st.Name)
		}
	}
	var errs []error
	for _, n := range names {
		if err := s.remove(ctx, t.Name, n); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", n, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if removed, err := s.removeTapFile(t.Name, tenant.InfraMachine); err == nil && removed && s.NetworkReload != nil {
		_ = s.NetworkReload(ctx)
	}
	// The slice stays loaded and active while systemd has it, unit file gone or not.
	if s.Host != nil && len(names) > 0 {
		if err := s.Host.Stop(ctx, units.TenantSlice(t.Name), true); err != nil && !errors.Is(err, machines.ErrNoBus) {
			return fmt.Errorf("stop %s: %w", units.TenantSlice(t.Name), err)
		}
	}
	return machines.RemoveTree(filepath.Join(s.Units.TenantPaths(t.Name).Dir, "machines"))
}
