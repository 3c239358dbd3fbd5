package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// fakeMachineHost records the host state systemd and machined would have: unit states and
// registered machines. A started unit is activating until settle() makes it active and registered.
type fakeMachineHost struct {
	mu         sync.Mutex
	units      map[string]machines.UnitState
	registered map[string]bool
	starts     []string
}

func newFakeMachineHost() *fakeMachineHost {
	return &fakeMachineHost{units: map[string]machines.UnitState{}, registered: map[string]bool{}}
}

func (f *fakeMachineHost) UnitState(_ context.Context, unit string) (machines.UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.units[unit]; ok {
		return st, nil
	}
	return machines.UnitState{Load: "loaded", Active: "inactive", Sub: "dead"}, nil
}

func (f *fakeMachineHost) Start(_ context.Context, unit string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.units[unit] = machines.UnitState{Load: "loaded", Active: "activating", Sub: "start"}
	f.starts = append(f.starts, unit)
	return nil
}

func (f *fakeMachineHost) Stop(_ context.Context, unit string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.units[unit] = machines.UnitState{Load: "loaded", Active: "inactive", Sub: "dead"}
	for m := range f.registered {
		if units.MachineUnit("t", m[len("t-"):]) == unit {
			delete(f.registered, m)
		}
	}
	return nil
}

func (f *fakeMachineHost) Machine(_ context.Context, name string) (machines.Info, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.registered[name] {
		return machines.Info{}, false, nil
	}
	return machines.Info{Name: name, Class: "container", Leader: 42, Addresses: []string{"10.1.0.101"}}, true, nil
}

func (f *fakeMachineHost) Terminate(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.registered, name)
	return nil
}

// settle makes every activating unit active and its machine registered, as a booted container is.
func (f *fakeMachineHost) settle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for u, st := range f.units {
		if st.Active == "activating" {
			f.units[u] = machines.UnitState{Load: "loaded", Active: "active", Sub: "running"}
			name := units.Unescape(u[len("tenant-machine@") : len(u)-len(".service")])
			f.registered[name] = true
		}
	}
}

func states(sts []tenant.MachineStatus) map[string]tenant.MachineState {
	out := map[string]tenant.MachineState{}
	for _, s := range sts {
		out[s.Name] = s.State
	}
	return out
}

// TestMachinesStep drives the step through start, steady state, drift, stop, restart, a pin change, pruning and
// teardown against a fake host, and checks the end state after each.
func TestMachinesStep(t *testing.T) {
	ctx := t.Context()
	state := t.TempDir()
	cfg := units.Config{StateDir: state}
	tenantsDir := filepath.Join(state, "tenants")
	unitDir := t.TempDir()
	host := newFakeMachineHost()
	var prepared []string
	step := &MachinesStep{
		Host: host, Units: cfg, TenantsDir: tenantsDir, UnitDir: unitDir,
		Prepare: func(_ context.Context, dir, commit string, copies []machines.Copy) error {
			prepared = append(prepared, filepath.Base(dir)+"@"+commit[:4])
			for _, c := range copies {
				if err := os.MkdirAll(c.Dst, 0o755); err != nil {
					return err
				}
			}
			return os.WriteFile(filepath.Join(dir, "commit"), []byte(commit+"\n"), 0o644)
		},
	}
	commit1 := "1111111111111111111111111111111111111111"
	// The templates step's checkout of the container template, at commit1.
	use := tenant.TemplateUse{Role: "container", Name: "deb", Template: "deb", Commit: commit1}
	checkout := func(commit string) {
		dir := TemplateDir(tenantsDir, "t", use)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, "config"), 0o755)
		os.WriteFile(filepath.Join(dir, "config", "nspawn-settings.conf"), []byte("[Exec]\nBoot=yes\nEnvironment=A=1\n[Files]\nBind=/:/host\n"), 0o644)
		os.WriteFile(dir+".commit", []byte(commit+"\n"), 0o644)
	}
	checkout(commit1)
	tn := &tenant.Tenant{
		Name: "t", NetworkIndex: 1, DesiredState: tenant.Running, Templates: []tenant.TemplateUse{use},
		Resources: tenant.Resources{CPUs: 2, MemoryBytes: 1 << 30, StorageBytes: 1 << 30},
		Machines: []tenant.Machine{
			{Name: "web", Kind: tenant.Container, Template: "deb", DesiredState: tenant.Running},
			{Name: "db", Kind: tenant.Container, Template: "deb", DesiredState: tenant.Running},
		},
	}
	pass := func() ([]tenant.Condition, []tenant.MachineStatus) {
		t.Helper()
		cs, sts, err := step.EnsureStatus(ctx, tn)
		if err != nil {
			t.Fatalf("EnsureStatus: %v", err)
		}
		tn.MachineStatus = sts
		return cs, sts
	}

	cs, sts := pass()
	if got := states(sts); got["web"] != tenant.MachineStarting || got["db"] != tenant.MachineStarting {
		t.Fatalf("first pass: %v", got)
	}
	if cs[0].Reason != "Starting" {
		t.Errorf("condition while starting: %+v", cs)
	}
	if p, moving := machinePhase(tn, sts); !moving || p != tenant.PhaseProvisioning {
		t.Errorf("phase while starting: %v %v", p, moving)
	}
	if !slices.Equal(prepared, []string{"web@1111", "db@1111"}) {
		t.Errorf("roots prepared: %v", prepared)
	}
	settings, _ := os.ReadFile(cfg.MachinePaths("t", "web").Settings)
	if string(settings) == "" || !strings.Contains(string(settings), "Environment=A=1") || strings.Contains(string(settings), "Bind") || strings.Contains(string(settings), "Boot") {
		t.Errorf("nspawn settings not sanitized:\n%s", settings)
	}

	host.settle()
	cs, sts = pass()
	if got := states(sts); got["web"] != tenant.MachineRunning || got["db"] != tenant.MachineRunning {
		t.Fatalf("after boot: %v", got)
	}
	if cs[0].Status != "true" || sts[0].Class != "container" || len(sts[0].Addresses) != 1 {
		t.Errorf("running: %+v %+v", cs, sts)
	}
	// Steady state: nothing is started or copied again.
	nStarts, nPrepared := len(host.starts), len(prepared)
	pass()
	if len(host.starts) != nStarts || len(prepared) != nPrepared {
		t.Errorf("a steady pass started %v, prepared %v", host.starts[nStarts:], prepared[nPrepared:])
	}

	// Drift: the container is terminated behind the daemon's back; the next pass starts it again, on the same root.
	host.Stop(ctx, units.MachineUnit("t", "web"), false)
	cs, sts = pass()
	if states(sts)["web"] != tenant.MachineStarting || len(prepared) != nPrepared {
		t.Fatalf("drift not repaired: %v, prepared %v", states(sts), prepared)
	}
	if cs[0].Type != "MachinesRepaired" || !strings.Contains(cs[0].Message, "machine web was found inactive/dead") {
		t.Errorf("the repair is not recorded: %+v", cs)
	}
	host.settle()
	pass()

	// A new pin does not touch the running machine; a restart applies it.
	commit2 := "2222222222222222222222222222222222222222"
	use.Commit = commit2
	tn.Templates = []tenant.TemplateUse{use}
	checkout(commit2)
	pass()
	if st := tn.StatusOf("web"); st.Commit != commit1 || st.State != tenant.MachineRunning {
		t.Fatalf("running machine changed by a new pin: %+v", st)
	}
	tn.Machines[0].RestartGeneration = 1
	pass()
	if st := tn.StatusOf("web"); st.Commit != commit2 || st.RestartGeneration != 1 || st.State != tenant.MachineStarting {
		t.Fatalf("restart: %+v", st)
	}
	if st := tn.StatusOf("db"); st.Commit != commit1 {
		t.Errorf("db was not restarted, but its root changed: %+v", st)
	}
	host.settle()
	pass()

	// Stop one machine; stopping the tenant stops the other and reports the stopping phase.
	tn.Machines[1].DesiredState = tenant.Stopped
	if _, sts = pass(); states(sts)["db"] != tenant.MachineStopping {
		t.Fatalf("db right after stop: %v", states(sts))
	}
	_, sts = pass()
	if states(sts)["db"] != tenant.MachineStopped {
		t.Fatalf("db after stop: %v", states(sts))
	}
	tn.DesiredState = tenant.Stopped
	_, sts = pass()
	if p, moving := machinePhase(tn, sts); !moving || p != tenant.PhaseStopping {
		t.Errorf("phase while stopping: %v %v", p, moving)
	}
	_, sts = pass()
	if states(sts)["web"] != tenant.MachineStopped {
		t.Fatalf("web after tenant stop: %v", states(sts))
	}

	// Pruning: a machine that leaves the record loses its unit file and its directory.
	os.WriteFile(filepath.Join(unitDir, units.MachineUnit("t", "db")), []byte("x"), 0o644)
	tn.Machines = tn.Machines[:1]
	_, sts = pass()
	if _, ok := states(sts)["db"]; ok {
		t.Errorf("pruned machine still reported: %v", states(sts))
	}
	if _, err := os.Stat(filepath.Join(unitDir, units.MachineUnit("t", "db"))); !os.IsNotExist(err) {
		t.Errorf("unit of a pruned machine left: %v", err)
	}
	if _, err := os.Stat(cfg.MachinePaths("t", "db").Dir); !os.IsNotExist(err) {
		t.Errorf("directory of a pruned machine left: %v", err)
	}

	// Teardown removes every machine's directory.
	tn.DesiredState = tenant.Running
	pass()
	host.settle()
	if err := step.Teardown(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.TenantPaths("t").Dir, "machines")); !os.IsNotExist(err) {
		t.Errorf("machines directory left after teardown: %v", err)
	}
	if st, _ := host.UnitState(ctx, units.MachineUnit("t", "web")); st.Running() {
		t.Errorf("web still running after teardown: %+v", st)
	}
}

// TestMachinesStepNoBus: without a system bus, the condition says so and nothing fails.
func TestMachinesStepNoBus(t *testing.T) {
	step := &MachinesStep{Units: units.Config{StateDir: t.TempDir()}}
	tn := &tenant.Tenant{Name: "t", Machines: []tenant.Machine{{Name: "web", Kind: tenant.Container, Template: "deb"}}}
	cs, sts, err := step.EnsureStatus(t.Context(), tn)
	if err != nil || sts != nil || len(cs) != 1 || cs[0].Reason != "NoSystemBus" || cs[0].Status != "false" {
		t.Fatalf("got %+v %+v %v", cs, sts, err)
	}
}

// TestInfraTap: the infrastructure VM's tap gets its networkd file before the VM can start (so networkd's stock
// vt-* profile never gives it a DHCP server of its own), and the file goes with the tenant.
func TestInfraTap(t *testing.T) {
	netDir := t.TempDir()
	step := &MachinesStep{Host: newFakeMachineHost(), Units: units.Config{StateDir: t.TempDir()}, NetworkDir: netDir}
	tn := &tenant.Tenant{Name: "acme", NetworkIndex: 7, DesiredState: tenant.Running,
		Templates: []tenant.TemplateUse{{Role: "infrastructure", Name: "infra", Template: "infra", Commit: "1111111111111111111111111111111111111111"}}}
	if _, _, err := step.EnsureStatus(t.Context(), tn); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(netDir, units.TapNetworkFile("acme", "infra")))
	if err != nil || !strings.Contains(string(data), "Name=vt-acme-infra\n") || !strings.Contains(string(data), "KeepMaster=yes") {
		t.Fatalf("infra tap file: %q %v", data, err)
	}
	if err := step.Teardown(t.Context(), tn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(netDir, units.TapNetworkFile("acme", "infra"))); !os.IsNotExist(err) {
		t.Fatalf("infra tap file left after teardown: %v", err)
	}
}
