package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// machineSyntax is the form of a --machine value.
const machineSyntax = "NAME:KIND:TEMPLATE[:cpus=N][:memory=SIZE][:stopped]"

// parseMachine parses a --machine value: NAME:KIND:TEMPLATE, then options cpus=N, memory=SIZE
// and stopped, each at most once. KIND is container or vm; TEMPLATE names the tenant's
// container (for a container) or machine (for a vm) template use. The error says what is
// wrong with the value; the caller names the flag.
func parseMachine(v string) (vt.MachineSpec, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return vt.MachineSpec{}, fmt.Errorf("want %s, for example web:container:web", machineSyntax)
	}
	m := vt.MachineSpec{Name: parts[0], Kind: vt.MachineKind(parts[1]), Template: parts[2]}
	if m.Kind != "container" && m.Kind != "vm" {
		return vt.MachineSpec{}, fmt.Errorf("kind %q is not container or vm", parts[1])
	}
	seen := map[string]bool{}
	for _, opt := range parts[3:] {
		key, val, hasVal := strings.Cut(opt, "=")
		if seen[key] {
			return vt.MachineSpec{}, fmt.Errorf("%s is given twice", key)
		}
		seen[key] = true
		switch {
		case key == "cpus" && hasVal:
			f, err := ParseCPUs(val)
			if err != nil {
				return vt.MachineSpec{}, fmt.Errorf("cpus: %v", err)
			}
			m.Cpus = &f
		case key == "memory" && hasVal:
			n, err := ParseSize(val)
			if err != nil {
				return vt.MachineSpec{}, fmt.Errorf("memory: %v", err)
			}
			if n <= 0 {
				return vt.MachineSpec{}, fmt.Errorf("memory: %q: must be more than 0 bytes", val)
			}
			m.MemoryBytes = &n
		case key == "stopped" && !hasVal:
			d := vt.DesiredState("stopped")
			m.DesiredState = &d
		default:
			return vt.MachineSpec{}, fmt.Errorf("unknown option %q: want cpus=N, memory=SIZE or stopped", opt)
		}
	}
	return m, nil
}

// machineSpecs parses the --machine values. It returns nil when none was given and
// --no-machines was not (the machine list stays as it is), and an empty list with
// --no-machines.
func (s *specFlags) machineSpecs() (*[]vt.MachineSpec, error) {
	if s.noMachines && len(s.machines) > 0 {
		return nil, usagef(s.cmd, "--machine and --no-machines exclude each other")
	}
	if s.noMachines {
		return &[]vt.MachineSpec{}, nil
	}
	if len(s.machines) == 0 {
		return nil, nil
	}
	out := make([]vt.MachineSpec, 0, len(s.machines))
	for _, v := range s.machines {
		m, err := parseMachine(v)
		if err != nil {
			return nil, usagef(s.cmd, "invalid value %q for flag --machine: %v", v, err)
		}
		out = append(out, m)
	}
	return &out, nil
}

// machineField matches the API fields of the machine list in the daemon's errors.
var machineField = regexp.MustCompile(`^machines\[(\d+)\]`)

// machineHint adds to an error of the daemon about machines[i] which --machine value it is
// about, since people gave flags, not fields.
func (s *specFlags) machineHint(err error) error {
	var field string
	var inv *vt.InvalidField
	var inUse *vt.MachineNameInUse
	switch {
	case errors.As(err, &inv):
		field = inv.Field
	case errors.As(err, &inUse):
		field = inUse.Field
	default:
		return err
	}
	var re *RemoteError
	sm := machineField.FindStringSubmatch(field)
	if sm == nil || !errors.As(err, &re) {
		return err
	}
	if i, _ := strconv.Atoi(sm[1]); i < len(s.machines) {
		re.Message += fmt.Sprintf(" (--machine %s)", s.machines[i])
	}
	return err
}

// machineEntry is one element of `machine list --json`: the machine record as Tenant.Get
// returns it, with its tenant's name added as "tenant".
type machineEntry struct {
	Tenant string `json:"tenant"`
	vt.Machine
}

// machineEntries lists the machines of ts, tenant by tenant.
func machineEntries(ts []vt.Tenant) []machineEntry {
	out := []machineEntry{}
	for _, t := range ts {
		for _, m := range t.Machines {
			out = append(out, machineEntry{Tenant: t.Name, Machine: m})
		}
	}
	return out
}

// printMachineTable prints one row per machine.
func (e *env) printMachineTable(w io.Writer, ms []machineEntry) error {
	now := e.app.Now()
	tb := newTable(w, "TENANT", "MACHINE", "KIND", "STATE", "ADDRESS", "SINCE")
	for _, me := range ms {
		m := me.Machine
		state, addr, since := statusCells(now, m.Status)
		tb.row(me.Tenant, m.Name, string(m.Kind), state, addr, since)
	}
	return tb.flush()
}

// statusCells are a machine's observed state, first address and how long ago the state
// began, "-" for what is not known.
func statusCells(now time.Time, st *vt.MachineStatus) (state, addr, since string) {
	state, addr, since = "-", "-", "-"
	if st == nil {
		return
	}
	state = string(st.State)
	if len(st.Addresses) > 0 {
		addr = st.Addresses[0]
	}
	if st.Since != "" {
		since = formatAge(now, st.Since) + " ago"
	}
	return
}

// printMachines prints a tenant's machines under a key of tenant get's block.
func (e *env) printMachines(w io.Writer, ms []vt.Machine) error {
	if len(ms) == 0 {
		kv(w, "Machines", "none")
		return nil
	}
	now := e.app.Now()
	fmt.Fprintln(w, "Machines:")
	tb := indentTable(w, "NAME", "KIND", "TEMPLATE", "CPUS", "MEMORY", "DESIRED", "STATE", "ADDRESS", "SINCE", "MESSAGE")
	for _, m := range ms {
		cpus, mem := "default", "default"
		if m.Cpus > 0 {
			cpus = formatCPUs(m.Cpus)
		}
		if m.MemoryBytes > 0 {
			mem = FormatSize(m.MemoryBytes)
		}
		state, addr, since := statusCells(now, m.Status)
		var msg string
		if m.Status != nil {
			msg = deref(m.Status.Message)
		}
		tb.row(m.Name, string(m.Kind), m.Template, cpus, mem, string(m.DesiredState), state, addr, since, msg)
	}
	return tb.flush()
}

func machineCommands() []*command {
	return []*command{
		{
			path: "machine list", aliases: []string{"ls"}, args: "[TENANT...]", maxArgs: -1,
			summary: "list the machines of all tenants or of the tenants named",
			long: `One row per machine: its tenant, name, kind, observed state ("-" until the daemon has looked),
first address and how long it has been in that state. With --json an array of the machines
as Tenant.Get returns them, each with its tenant's name added as "tenant".`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					ts, err := e.tenantsNamed(ctx, args)
					if err != nil {
						return err
					}
					ms := machineEntries(ts)
					if e.g.json {
						return printJSON(e.stdout(), ms)
					}
					return e.printMachineTable(e.stdout(), ms)
				}
			},
		},
		{
			path: "machine start", args: "TENANT MACHINE [MACHINE...] [--wait]", minArgs: 2, maxArgs: -1, stream: true,
			summary: "set machines' desired state to running",
			long:    machineWaitHelp("running", `A machine of a stopped tenant runs only once the tenant is started.`),
			setup:   machineAction("start", "io.bitbuilder.Tenant.StartMachine", vt.StartMachine().Call),
		},
		{
			path: "machine stop", args: "TENANT MACHINE [MACHINE...] [--wait]", minArgs: 2, maxArgs: -1, stream: true,
			summary: "set machines' desired state to stopped",
			long:    machineWaitHelp("stopped", ""),
			setup:   machineAction("stop", "io.bitbuilder.Tenant.StopMachine", vt.StopMachine().Call),
		},
		{
			path: "machine restart", args: "TENANT MACHINE [MACHINE...] [--wait]", minArgs: 2, maxArgs: -1, stream: true,
			summary: "restart machines, starting those that are stopped",
			long: machineWaitHelp("running again", `A new template pin takes effect at a restart. With --wait bbctl waits until each machine
reports the restart carried out and is running.`),
			setup: machineAction("restart", "io.bitbuilder.Tenant.RestartMachine", vt.RestartMachine().Call),
		},
		{
			path: "machine shell", args: "TENANT MACHINE [-- COMMAND [ARG...]]", minArgs: 2, maxArgs: -1,
			summary: "open a shell, or run a command, in a machine with machinectl",
			long: `Runs machinectl shell <tenant>-<machine> [COMMAND [ARG...]] in place of bbctl, so it needs
machinectl (systemd-container) on this host and the rights machinectl asks for. Put "--"
before a command that has flags of its own.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return machineShell
			},
		},
	}
}

func machineWaitHelp(state, extra string) string {
	s := `Acts on each machine in turn and reports each failure; the exit code is the first failure's.
With --wait bbctl then follows the tenant until every machine named is ` + state + `,
and fails when one fails (printing the machine's status message) or when --timeout (default
5m) ends first. Changes of the machines' states are printed to standard error as they happen.
With --json the tenant after the last change (with --wait, after the wait) is printed.`
	if extra != "" {
		s += "\n" + extra
	}
	return s
}

// machineAction is machine start, stop or restart.
func machineAction(verb, method string, call func(context.Context, *varlink.Connection, string, string) (vt.Tenant, error)) func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		wait := fs.Bool("wait", false, "wait until the machines are "+map[string]string{"start": "running", "stop": "stopped", "restart": "restarted and running"}[verb])
		return func(ctx context.Context, e *env, args []string) error {
			ctx, cancel := e.bound(ctx, *wait)
			defer cancel()
			c, err := e.connect(ctx)
			if err != nil {
				return err
			}
			name, machines := args[0], args[1:]
			f := failures{w: e.stderr(), several: len(machines) > 1, json: e.g.json}
			var last *vt.Tenant
			var targets []machineTarget
			for _, m := range machines {
				t, err := call(ctx, c, name, m)
				if err != nil {
					f.add(e.wrap(err, method))
					continue
				}
				last = &t
				tg := machineTarget{name: m, state: "running"}
				if verb == "stop" {
					tg.state = "stopped"
				}
				if verb == "restart" {
					if i := machineIndex(t, m); i >= 0 {
						tg.generation = t.Machines[i].RestartGeneration
					}
				}
				targets = append(targets, tg)
				if !*wait && !e.g.json {
					fmt.Fprintln(e.stdout(), machineOutcome(verb, t, m, false))
				}
			}
			if last == nil {
				return f.err()
			}
			if *wait {
				final, err := e.waitFor(ctx, name, last, machinesReach(targets))
				if err != nil {
					f.add(err)
					return f.err()
				}
				last = final
				if !e.g.json {
					for _, tg := range targets {
						fmt.Fprintln(e.stdout(), machineOutcome(verb, *last, tg.name, true))
					}
				}
			}
			if e.g.json {
				if err := printJSON(e.stdout(), *last); err != nil {
					return err
				}
			}
			return f.err()
		}
	}
}

func machineIndex(t vt.Tenant, name string) int {
	for i, m := range t.Machines {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// machineOutcome is the line machine start, stop or restart prints for one machine: what
// was asked for, or with --wait (waited) what was reached.
func machineOutcome(verb string, t vt.Tenant, name string, waited bool) string {
	s := fmt.Sprintf("machine %q of tenant %q: ", name, t.Name)
	i := machineIndex(t, name)
	if i < 0 {
		return s + "gone"
	}
	m := t.Machines[i]
	if waited {
		if line := machineLine(m); line != "" {
			return s + strings.TrimPrefix(line, "machine "+m.Name+" ")
		}
		return s + "stopped"
	}
	if verb == "restart" {
		return s + fmt.Sprintf("restart requested (generation %d)", m.RestartGeneration)
	}
	return s + "desired state " + string(m.DesiredState)
}

// machineShell replaces bbctl with machinectl shell <tenant>-<machine> [COMMAND...].
func machineShell(ctx context.Context, e *env, args []string) error {
	c, err := e.connect(ctx)
	if err != nil {
		return err
	}
	t, err := vt.Get().Call(ctx, c, args[0])
	if err != nil {
		return e.wrap(err, "io.bitbuilder.Tenant.Get")
	}
	i := machineIndex(t, args[1])
	if i < 0 {
		return e.wrap(&vt.NoSuchMachine{Name: args[0], Machine: args[1]}, "io.bitbuilder.Tenant.Get")
	}
	bin, err := e.app.LookPath("machinectl")
	if err != nil {
		return errors.New("machine shell needs machinectl (systemd-container) on this host")
	}
	argv := append([]string{"machinectl", "shell", t.Machines[i].MachineName}, args[2:]...)
	e.close()
	if err := e.app.Exec(bin, argv, os.Environ()); err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	return nil
}
