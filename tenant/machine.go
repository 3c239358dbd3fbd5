package tenant

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
)

// KindMachineName holds the machine names tenants claim: one record per machine name
// (<tenant>-<machine>, the name systemd-machined knows it by) whose value is the tenant's name. The
// claims are made in the same commit as the tenant change that introduces them, so two tenants can
// never end up with one machine name, even though tenant names may contain "-" (tenant "a" with
// machine "b-c" and tenant "a-b" with machine "c" would both be "a-b-c").
const KindMachineName = "machinename"

// MachineKind says how a machine runs.
type MachineKind string

// Machine kinds.
const (
	// Container: systemd-nspawn, from a template used in the "container" role.
	Container MachineKind = "container"
	// VM: systemd-vmspawn, from a template used in the "machine" role.
	VM MachineKind = "vm"
)

// InfraMachine is the name of the machine of a tenant's infrastructure template: its
// infrastructure VM. No machine of the tenant's list may have this name.
const InfraMachine = "infra"

// MaxMachineName is systemd's limit for machine names (a hostname: 64 characters).
const MaxMachineName = 64

// MaxMachines bounds the machines of one tenant.
const MaxMachines = 64

// Machine is one container or VM of a tenant, as its record asks for it.
type Machine struct {
	// Name is a hostname label, unique within the tenant; the machine is known to
	// systemd-machined as <tenant>-<name> (MachineName).
	Name string `json:"name"`
	// Kind is container or vm.
	Kind MachineKind `json:"kind"`
	// Template is the name of the tenant's template use the machine runs: a "container"
	// use for a container, a "machine" use for a VM.
	Template string `json:"template"`
	// CPUs and MemoryBytes limit the machine. Left 0 in a request they take the template's
	// defaults (metadata.json defaults.resources); 0 when recorded means no limit of its own.
	// The tenant's resources bound all its machines together (its slice).
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memoryBytes,omitempty"`
	// DesiredState is running or stopped. A stopped tenant stops all its machines
	// whatever they say.
	DesiredState DesiredState `json:"desiredState"`
	// RestartGeneration is raised by each restart request; the reconciler restarts the
	// machine until its status shows the same generation.
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
}

// MachineState is where a machine is.
type MachineState string

// Machine states.
const (
	MachineStarting MachineState = "starting"
	MachineRunning  MachineState = "running"
	MachineStopping MachineState = "stopping"
	MachineStopped  MachineState = "stopped"
	MachineFailed   MachineState = "failed"
)

// MachineStatus is a machine's observed state, as the reconciler last saw it on the host.
type MachineStatus struct {
	Name  string       `json:"name"`
	State MachineState `json:"state"`
	// Class is what systemd-machined registered it as (container or vm), empty while it is
	// not registered.
	Class string `json:"class,omitempty"`
	// Leader is the PID of the machine's leader process (the container's init, or the VM's
	// hypervisor), 0 while it is not registered.
	Leader int `json:"leader,omitempty"`
	// Addresses are the machine's IP addresses, as machined or the bridge's DHCP server know them.
	Addresses []string `json:"addresses,omitempty"`
	// Unit is the systemd unit that runs the machine, UnitState its ActiveState/SubState.
	Unit      string `json:"unit"`
	UnitState string `json:"unitState,omitempty"`
	// Commit is the template commit the machine's root was made from.
	Commit string `json:"commit,omitempty"`
	// RestartGeneration is the restart request last carried out.
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
	// Message says why a machine is failed or cannot start.
	Message string `json:"message,omitempty"`
	// Repaired, set for one pass, says what the reconciler put back that was changed behind
	// its back (it is reported as a MachinesRepaired condition, not stored).
	Repaired string `json:"-"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// Extensions are the extensions handed to the machine, "class/image@commit", sorted (the reconciler's
	// extension step; none when it has none).
	Extensions []string `json:"extensions,omitempty"`
}

// MachineName is the name systemd-machined knows machine m of tenant t by.
func MachineName(tenantName, machine string) string { return tenantName + "-" + machine }

// MachineOf returns the machine of t named name, or nil.
func (t *Tenant) MachineOf(name string) *Machine {
	for i := range t.Machines {
		if t.Machines[i].Name == name {
			return &t.Machines[i]
		}
	}
	return nil
}

// StatusOf returns the observed status of t's machine name, or nil.
func (t *Tenant) StatusOf(name string) *MachineStatus {
	for i := range t.MachineStatus {
		if t.MachineStatus[i].Name == name {
			return &t.MachineStatus[i]
		}
	}
	return nil
}

// HasInfra reports whether t has an infrastructure template, and so an infrastructure VM.
func (t *Tenant) HasInfra() bool {
	for _, u := range t.Templates {
		if u.Role == "infrastructure" {
			return true
		}
	}
	return false
}

// WantsRunning reports whether machine m should run: the tenant and the machine both want it.
func (t *Tenant) WantsRunning(m *Machine) bool {
	return t.DesiredState == Running && m.DesiredState == Running && !t.Deleting()
}

// machineNames returns every machine name t claims: its machines and its infrastructure VM.
func machineNames(t *Tenant) []string {
	out := make([]string, 0, len(t.Machines)+1)
	for _, m := range t.Machines {
		out = append(out, MachineName(t.Name, m.Name))
	}
	if t.HasInfra() {
		out = append(out, MachineName(t.Name, InfraMachine))
	}
	return out
}

// claimOps returns the store ops that move t's machine-name claims from old to t (old nil:
// none claimed yet), and for each create op which machine it is for. Creates come first.
// Claims of old that are not in the store (records from before claims existed) are not
// deleted. A claim of this tenant only changes in a commit that also updates the tenant's
// record at its read revision, so what this reads cannot go stale unnoticed.
func (s *Service) claimOps(ctx context.Context, old, t *Tenant) (ops []store.Op, forMachine []string) {
	var before []string
	if old != nil {
		before = machineNames(old)
	}
	after := machineNames(t)
	for _, n := range after {
		if !slices.Contains(before, n) {
			ops = append(ops, store.Op{Type: store.OpCreate, Kind: KindMachineName, Name: n, Value: []byte(t.Name)})
			forMachine = append(forMachine, n)
		}
	}
	for _, n := range before {
		if !slices.Contains(after, n) && s.claimed(ctx, n, t.Name) {
			ops = append(ops, store.Op{Type: store.OpDelete, Kind: KindMachineName, Name: n})
		}
	}
	return ops, forMachine
}

// claimed reports whether machine name n is claimed by tenant owner.
func (s *Service) claimed(ctx context.Context, n, owner string) bool {
	r, err := s.cfg.Store.Get(ctx, KindMachineName, n)
	return err == nil && string(r.Value) == owner
}

// MachineInfo is what a template says about the machines made from it.
type MachineInfo struct {
	// MinMemoryBytes is the memory the template needs (its metadata's default), 0 if it says nothing.
	MinMemoryBytes int64
	// DefaultCPUs is the template's default CPU count, 0 if it says nothing.
	DefaultCPUs float64
	// HasKernel says whether a VM template has something to boot: a kernel in disk-image/boot
	// or an EFI boot loader in disk-image/efi.
	HasKernel bool
}

// MachineInspector reads what a pinned template says about machines made from it.
// A TemplateResolver may implement it; without one the checks that need it are skipped.
type MachineInspector interface {
	MachineInfo(ctx context.Context, template, commit string) (MachineInfo, error)
}

// validateMachines checks the machine list of t against its templates (pinned). The checks
// that need the template content use inspect, when not nil.
func validateMachines(ctx context.Context, t *Tenant, inspect MachineInspector) error {
	if len(t.Machines) > MaxMachines {
		return &FieldError{Field: "machines", Reason: fmt.Sprintf("%d machines, at most %d are allowed", len(t.Machines), MaxMachines)}
	}
	seen := map[string]bool{}
	for i := range t.Machines {
		m := &t.Machines[i]
		f := fmt.Sprintf("machines[%d]", i)
		if err := validateLabel(f+".name", m.Name); err != nil {
			return err
		}
		if m.Name == InfraMachine {
			return &FieldError{Field: f + ".name", Reason: fmt.Sprintf("%q is reserved for the tenant's infrastructure VM", InfraMachine)}
		}
		if full := MachineName(t.Name, m.Name); len(full) > MaxMachineName {
			return &FieldError{Field: f + ".name", Reason: fmt.Sprintf("the machine name %q is %d characters long; systemd allows %d", full, len(full), MaxMachineName)}
		}
		if seen[m.Name] {
			return &FieldError{Field: f + ".name", Reason: fmt.Sprintf("machine %q is listed twice", m.Name)}
		}
		seen[m.Name] = true
		var role string
		switch m.Kind {
		case Container:
			role = "container"
		case VM:
			role = "machine"
		default:
			return &FieldError{Field: f + ".kind", Reason: fmt.Sprintf("%q is not container or vm", m.Kind)}
		}
		if m.DesiredState == "" {
			m.DesiredState = Running
		}
		if m.DesiredState != Running && m.DesiredState != Stopped {
			return &FieldError{Field: f + ".desiredState", Reason: fmt.Sprintf("%q is not running or stopped", m.DesiredState)}
		}
		if m.CPUs < 0 || math.IsNaN(m.CPUs) || m.CPUs > MaxCPUs || math.Round(m.CPUs*100) != m.CPUs*100 {
			return &FieldError{Field: f + ".cpus", Reason: fmt.Sprintf("%v is not 0 (the template's default) or a count in (0, %d] with at most two decimals", m.CPUs, MaxCPUs)}
		}
		if m.CPUs > t.Resources.CPUs {
			return &FieldError{Field: f + ".cpus", Reason: fmt.Sprintf("%v is more than the tenant's %v", m.CPUs, t.Resources.CPUs)}
		}
		if m.MemoryBytes != 0 && (m.MemoryBytes < MinMemoryBytes || m.MemoryBytes > maxBytes) {
			return &FieldError{Field: f + ".memoryBytes", Reason: fmt.Sprintf("%d is not 0 (the template's default) or between %d (32 MiB) and 2^60", m.MemoryBytes, MinMemoryBytes)}
		}
		if m.MemoryBytes > t.Resources.MemoryBytes {
			return &FieldError{Field: f + ".memoryBytes", Reason: fmt.Sprintf("%d is more than the tenant's memory limit %d", m.MemoryBytes, t.Resources.MemoryBytes)}
		}
		var use *TemplateUse
		for j := range t.Templates {
			if t.Templates[j].Name == m.Template && (t.Templates[j].Role == "container" || t.Templates[j].Role == "machine") {
				if use == nil || t.Templates[j].Role == role {
					use = &t.Templates[j]
				}
			}
		}
		switch {
		case use == nil:
			return &FieldError{Field: f + ".template", Reason: fmt.Sprintf("the tenant has no %s template use named %q", role, m.Template)}
		case use.Role != role:
			return &FieldError{Field: f + ".template", Reason: fmt.Sprintf("%q is used as a %s template; a %s machine needs a %s template", m.Template, use.Role, m.Kind, role)}
		}
		if inspect == nil || use.Commit == "" {
			continue
		}
		info, err := inspect.MachineInfo(ctx, use.Template, use.Commit)
		if err != nil {
			return &TemplateError{Template: use.Template, Err: err}
		}
		if m.Kind == VM && !info.HasKernel {
			return &FieldError{Field: f + ".template", Reason: fmt.Sprintf("template %q (commit %.12s) has no kernel to boot: neither disk-image/boot/vmlinuz* nor an EFI loader in disk-image/efi", use.Template, use.Commit)}
		}
		// Unset limits take the template's defaults, recorded so that the units and the
		// boot registry carry them.
		if m.MemoryBytes == 0 {
			m.MemoryBytes = info.MinMemoryBytes
		}
		if m.CPUs == 0 && info.DefaultCPUs > 0 {
			m.CPUs = min(info.DefaultCPUs, t.Resources.CPUs)
		}
		mem := m.MemoryBytes
		if info.MinMemoryBytes > 0 && mem < info.MinMemoryBytes {
			return &FieldError{Field: f + ".memoryBytes", Reason: fmt.Sprintf("%d is less than the %d bytes template %q needs", mem, info.MinMemoryBytes, use.Template)}
		}
		if mem > t.Resources.MemoryBytes {
			return &FieldError{Field: f + ".memoryBytes", Reason: fmt.Sprintf("template %q needs %d bytes, more than the tenant's memory limit %d", use.Template, mem, t.Resources.MemoryBytes)}
		}
	}
	return nil
}

// MachineNameInUseError names the tenant that holds a machine name.
type MachineNameInUseError struct {
	Field   string // machines[i].name, or templates for the infrastructure VM
	Machine string // the full machine name
	Tenant  string
}

func (e *MachineNameInUseError) Error() string {
	return fmt.Sprintf("%s: the machine name %q is used by tenant %q", e.Field, e.Machine, e.Tenant)
}

// Is makes errors.Is(err, ErrMachineNameInUse) true.
func (e *MachineNameInUseError) Is(target error) bool { return target == ErrMachineNameInUse }

// MachineError names a machine a tenant does not have.
type MachineError struct {
	Tenant, Machine string
}

func (e *MachineError) Error() string {
	return fmt.Sprintf("tenant %q has no machine %q", e.Tenant, e.Machine)
}

// Is makes errors.Is(err, ErrNoSuchMachine) true.
func (e *MachineError) Is(target error) bool { return target == ErrNoSuchMachine }

// claimError turns a failed claim (the op at index i of a commit whose claims start at
// first) into a MachineNameInUseError naming the field, or returns nil if err is not that.
func (s *Service) claimError(ctx context.Context, t *Tenant, err error, first int, claims []string) error {
	var opErr *store.OpError
	if !errors.As(err, &opErr) || !errors.Is(err, store.ErrExists) || opErr.Index < first || opErr.Index >= first+len(claims) {
		return nil
	}
	full := claims[opErr.Index-first]
	field := "templates"
	for i, m := range t.Machines {
		if MachineName(t.Name, m.Name) == full {
			field = fmt.Sprintf("machines[%d].name", i)
		}
	}
	holder := "another tenant"
	if r, gerr := s.cfg.Store.Get(ctx, KindMachineName, full); gerr == nil {
		holder = string(r.Value)
	}
	return &MachineNameInUseError{Field: field, Machine: full, Tenant: holder}
}

// SetMachineState sets the desired state of one machine of a tenant.
func (s *Service) SetMachineState(ctx context.Context, name, machine string, d DesiredState) (*Tenant, error) {
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		m := t.MachineOf(machine)
		if m == nil {
			return &MachineError{Tenant: name, Machine: machine}
		}
		m.DesiredState = d
		return nil
	})
}

// RestartMachine asks for one machine to be restarted (and started, if it was stopped).
func (s *Service) RestartMachine(ctx context.Context, name, machine string) (*Tenant, error) {
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		m := t.MachineOf(machine)
		if m == nil {
			return &MachineError{Tenant: name, Machine: machine}
		}
		m.DesiredState = Running
		m.RestartGeneration++
		return nil
	})
}
