package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// Resource limits a create uses for the limits it is not given, when it is given some. They
// are the daemon's defaults; a create given none leaves the choice to the daemon.
const (
	defaultCPUs         = 1.0
	defaultMemoryBytes  = 1 << 30
	defaultStorageBytes = 10 << 30
)

// updateRetries is how often tenant update retries its read-modify-write when the tenant
// changed in between and no --revision was given.
const updateRetries = 3

// specFlags are the flags create and update share.
type specFlags struct {
	cmd                   string
	cpus, memory, storage string
	templates, params     stringList
	features              optList
	machines              stringList
	noMachines            bool
}

func (s *specFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.cpus, "cpus", "", "the number `N` of CPUs the tenant may use, fractions allowed (0.5)")
	fs.StringVar(&s.memory, "memory", "", "the memory limit, a `SIZE`: bytes or 512M, 2G, 10GiB")
	fs.StringVar(&s.storage, "storage", "", "the storage limit, a `SIZE`: bytes or 512M, 2G, 10GiB")
	fs.Var(&s.templates, "template", "a template use `ROLE:NAME:TEMPLATE` (repeatable)")
	fs.Var(&s.params, "param", "a network template parameter `KEY=VALUE` (repeatable)")
	fs.Var(&s.features, "network-features", "optional network links besides the bridge, a `LIST` of wireguard, vxlan, vlan (\"\" for none)")
	fs.Var(&s.machines, "machine", "a machine `NAME:KIND:TEMPLATE[:OPTIONS]`, options :cpus=N, :memory=SIZE, :stopped (repeatable)")
}

// optList is a comma-separated list flag that knows whether it was given.
type optList struct {
	v   []string
	set bool
}

func (o *optList) String() string {
	if o == nil {
		return ""
	}
	return strings.Join(o.v, ",")
}

func (o *optList) Set(s string) error {
	o.v, o.set = []string{}, true
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(o.v, f) {
			o.v = append(o.v, f)
		}
	}
	return nil
}

func (o *optList) ptr() *[]string {
	if !o.set {
		return nil
	}
	v := slices.Clone(o.v)
	return &v
}

// resources applies the resource flags to base. It reports whether any was given.
func (s *specFlags) resources(base vt.Resources) (vt.Resources, bool, error) {
	r, set := base, false
	if s.cpus != "" {
		f, err := ParseCPUs(s.cpus)
		if err != nil {
			return r, false, usagef(s.cmd, "invalid value for flag --cpus: %v", err)
		}
		r.Cpus, set = f, true
	}
	for _, f := range []struct {
		name, value string
		dst         *int64
	}{{"memory", s.memory, &r.MemoryBytes}, {"storage", s.storage, &r.StorageBytes}} {
		if f.value == "" {
			continue
		}
		n, err := ParseSize(f.value)
		if err != nil {
			return r, false, usagef(s.cmd, "invalid value for flag --%s: %v", f.name, err)
		}
		if n <= 0 {
			return r, false, usagef(s.cmd, "invalid value for flag --%s: %q: must be more than 0 bytes", f.name, f.value)
		}
		*f.dst, set = n, true
	}
	return r, set, nil
}

// templateUses parses --template ROLE:NAME:TEMPLATE values.
func (s *specFlags) templateUses() ([]vt.TemplateUse, error) {
	out := make([]vt.TemplateUse, 0, len(s.templates))
	for _, v := range s.templates {
		parts := strings.Split(v, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, usagef(s.cmd, "invalid value %q for flag --template: want ROLE:NAME:TEMPLATE, for example machine:web:debian-web", v)
		}
		out = append(out, vt.TemplateUse{Role: parts[0], Name: parts[1], Template: parts[2]})
	}
	return out, nil
}

// parameters applies --param KEY=VALUE (and KEY- to remove) to base.
func (s *specFlags) parameters(base map[string]string) (map[string]string, error) {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	for _, v := range s.params {
		if k, ok := strings.CutSuffix(v, "-"); ok && !strings.Contains(v, "=") && k != "" {
			delete(out, k)
			continue
		}
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usagef(s.cmd, "invalid value %q for flag --param: want KEY=VALUE", v)
		}
		out[k] = val
	}
	return out, nil
}

// optInt is a positive (or, with zero, non-negative) int flag that knows whether it was given.
type optInt struct {
	v    int64
	set  bool
	zero bool
}

func (o *optInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *optInt) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("not an integer")
	}
	if n < 0 || (n == 0 && !o.zero) {
		return errors.New("must be positive")
	}
	o.v, o.set = n, true
	return nil
}

func (o *optInt) ptr() *int64 {
	if !o.set {
		return nil
	}
	v := o.v
	return &v
}

func tenantCommands() []*command {
	return []*command{
		{
			path: "tenant create", args: "NAME [flags]", minArgs: 1, maxArgs: 1, stream: true,
			summary: "create a tenant",
			long: `Without --cpus, --memory and --storage the daemon's default limits apply; when some are
given, the others default to 1 CPU, 1 GiB of memory and 10 GiB of storage.
A template use is ROLE:NAME:TEMPLATE, for example machine:web:debian-web.
A machine is NAME:KIND:TEMPLATE[:cpus=N][:memory=SIZE][:stopped]: KIND is container or vm,
TEMPLATE the name of a container (for a container) or machine (for a vm) template use,
cpus and memory default to the template's, and :stopped creates it stopped; for example
--template container:web:debian-web --machine web:container:web:memory=512M.
With --wait bbctl follows the tenant until it is ready and every machine that should run is
running (with --stopped: until it is stopped), printing each change to standard error, and
fails when the tenant or a machine fails or --timeout (default 5m) ends first.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				s := specFlags{cmd: "tenant create"}
				s.register(fs)
				var index optInt
				fs.Var(&index, "index", "the network `N` (default: the lowest free one)")
				stopped := fs.Bool("stopped", false, "create the tenant stopped")
				wait := fs.Bool("wait", false, "wait until the tenant is ready and its machines run (stopped, with --stopped)")
				return func(ctx context.Context, e *env, args []string) error {
					res, resSet, err := s.resources(vt.Resources{Cpus: defaultCPUs, MemoryBytes: defaultMemoryBytes, StorageBytes: defaultStorageBytes})
					if err != nil {
						return err
					}
					uses, err := s.templateUses()
					if err != nil {
						return err
					}
					params, err := s.parameters(nil)
					if err != nil {
						return err
					}
					machines, err := s.machineSpecs()
					if err != nil {
						return err
					}
					var resPtr *vt.Resources
					if resSet {
						resPtr = &res
					}
					var tplPtr *[]vt.TemplateUse
					if len(uses) > 0 {
						tplPtr = &uses
					}
					var parPtr *map[string]string
					if len(params) > 0 {
						parPtr = &params
					}
					var desired *vt.DesiredState
					if *stopped {
						d := vt.DesiredState("stopped")
						desired = &d
					}
					ctx, cancel := e.bound(ctx, *wait)
					defer cancel()
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					t, err := vt.Create().Call(ctx, c, args[0], index.ptr(), resPtr, tplPtr, parPtr, s.features.ptr(), machines, desired)
					if err != nil {
						return s.machineHint(e.wrap(err, "io.bitbuilder.Tenant.Create"))
					}
					if !e.g.json {
						fmt.Fprintf(e.stdout(), "tenant %q created: network index %d, desired state %s, phase %s, revision %d\n", t.Name, t.NetworkIndex, t.DesiredState, t.Phase, t.Revision)
					}
					if *wait {
						g := tenantReady
						if t.DesiredState == "stopped" {
							g = tenantStopped
						}
						final, err := e.waitFor(ctx, t.Name, &t, g)
						if err != nil {
							return err
						}
						t = *final
						if !e.g.json {
							fmt.Fprintln(e.stdout(), stateLine(t))
						}
					}
					if e.g.json {
						return printJSON(e.stdout(), t)
					}
					return nil
				}
			},
		},
		{
			path: "tenant get", args: "NAME [NAME...]", minArgs: 1, maxArgs: -1,
			summary: "show tenants",
			long: `Given several names, bbctl shows each in turn (with --json: an array of them) and reports
each failure; the exit code is the first failure's.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					return getEach(e, args, func(name string) (vt.Tenant, error) {
						t, err := vt.Get().Call(ctx, c, name)
						return t, e.wrap(err, "io.bitbuilder.Tenant.Get")
					}, e.printTenant)
				}
			},
		},
		{
			path: "tenant list", aliases: []string{"ls"}, args: "", maxArgs: 0,
			summary: "list tenants",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					ts, err := e.listTenants(ctx)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout(), ts)
					}
					return e.printTenantTable(e.stdout(), ts)
				}
			},
		},
		{
			path: "tenant update", args: "NAME [flags]", minArgs: 1, maxArgs: 1,
			summary: "change a tenant's limits, templates or parameters",
			long: `Only the limits given change. --template replaces the tenant's template list; --param KEY=VALUE
sets one parameter and --param KEY- removes it, keeping the others. --network-features replaces
the list of optional links; --network-features "" removes them all. --machine (repeatable, as
for tenant create) replaces the machine list: machines left out are stopped and removed, and
each machine given is running unless it says :stopped. --no-machines removes them all.
Without --revision, bbctl reads the tenant and updates it at the revision it read, retrying when
it changed in between; with --revision the update is refused unless the tenant is still at R.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				s := specFlags{cmd: "tenant update"}
				s.register(fs)
				fs.BoolVar(&s.noMachines, "no-machines", false, "remove all the tenant's machines")
				var rev optInt
				fs.Var(&rev, "revision", "refuse the update unless the tenant is at revision `R`")
				return func(ctx context.Context, e *env, args []string) error {
					if s.cpus == "" && s.memory == "" && s.storage == "" && len(s.templates) == 0 && len(s.params) == 0 && !s.features.set &&
						len(s.machines) == 0 && !s.noMachines {
						return usagef(s.cmd, "nothing to change: give --cpus, --memory, --storage, --template, --param, --network-features, --machine or --no-machines")
					}
					// Check the flags before contacting the daemon.
					if _, _, err := s.resources(vt.Resources{}); err != nil {
						return err
					}
					uses, err := s.templateUses()
					if err != nil {
						return err
					}
					if _, err := s.parameters(nil); err != nil {
						return err
					}
					machines, err := s.machineSpecs()
					if err != nil {
						return err
					}
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					for attempt := 0; ; attempt++ {
						cur, err := vt.Get().Call(ctx, c, args[0])
						if err != nil {
							return e.wrap(err, "io.bitbuilder.Tenant.Get")
						}
						res, resSet, _ := s.resources(cur.Resources)
						var resPtr *vt.Resources
						if resSet {
							resPtr = &res
						}
						var tplPtr *[]vt.TemplateUse
						if len(s.templates) > 0 {
							tplPtr = &uses
						}
						var parPtr *map[string]string
						if len(s.params) > 0 {
							p, _ := s.parameters(cur.Parameters)
							parPtr = &p
						}
						expect := cur.Revision
						if rev.set {
							expect = rev.v
						}
						t, err := vt.Update().Call(ctx, c, args[0], &expect, resPtr, tplPtr, parPtr, s.features.ptr(), machines)
						var mismatch *vt.RevisionMismatch
						if errors.As(err, &mismatch) && !rev.set && attempt < updateRetries {
							continue
						}
						if err != nil {
							return s.machineHint(e.wrap(err, "io.bitbuilder.Tenant.Update"))
						}
						if e.g.json {
							return printJSON(e.stdout(), t)
						}
						_, err = fmt.Fprintf(e.stdout(), "tenant %q updated: revision %d\n", t.Name, t.Revision)
						return err
					}
				}
			},
		},
		{
			path: "tenant delete", aliases: []string{"rm"}, args: "NAME [NAME...] [--force] [--revision R] [--wait]", minArgs: 1, maxArgs: -1, stream: true,
			summary: "delete tenants",
			long: `The daemon marks the tenant for deletion, removes everything the tenant had on the host, and
then drops the record. A tenant whose desired state is running is refused unless --force is
given (stop it first, or say --force); bbctl deletes it at the revision it checked, so a tenant
started in between is not deleted without --force either. With --wait bbctl follows the tenant
until it is gone, printing each change to standard error, for at most --timeout (default 5m).
Given several names, bbctl deletes each in turn (then waits for each) and reports each
failure; the exit code is the first failure's. With --json a deletion prints nothing.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				var rev optInt
				fs.Var(&rev, "revision", "refuse the delete unless the tenant is at revision `R` (one name only)")
				wait := fs.Bool("wait", false, "wait until the tenant is gone")
				force := fs.Bool("force", false, "delete the tenant even when it is running (its machines are stopped)")
				return func(ctx context.Context, e *env, args []string) error {
					if rev.set && len(args) > 1 {
						return usagef("tenant delete", "--revision needs exactly one name")
					}
					ctx, cancel := e.bound(ctx, *wait)
					defer cancel()
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					f := failures{w: e.stderr(), several: len(args) > 1, json: e.g.json}
					ok := make([]bool, len(args))
					for i, name := range args {
						if err := e.deleteTenant(ctx, c, name, rev.ptr(), *force); err != nil {
							f.add(err)
							continue
						}
						ok[i] = true
						if !*wait && !e.g.json {
							fmt.Fprintf(e.stdout(), "tenant %q is being deleted\n", name)
						}
					}
					if *wait {
						for i, name := range args {
							if !ok[i] {
								continue
							}
							if err := e.waitDeleted(ctx, c, name); err != nil {
								f.add(err)
								continue
							}
							if !e.g.json {
								fmt.Fprintf(e.stdout(), "tenant %q deleted\n", name)
							}
						}
					}
					return f.err()
				}
			},
		},
		{
			path: "tenant start", args: "NAME [NAME...] [--wait]", minArgs: 1, maxArgs: -1, stream: true,
			summary: "set tenants' desired state to running",
			long:    startStopHelp("ready and every machine that should run (its desired state is running) is running"),
			setup:   tenantAction("io.bitbuilder.Tenant.Start", vt.Start().Call, tenantReady),
		},
		{
			path: "tenant stop", args: "NAME [NAME...] [--wait]", minArgs: 1, maxArgs: -1, stream: true,
			summary: "set tenants' desired state to stopped",
			long:    startStopHelp("stopped and all its machines are stopped"),
			setup:   tenantAction("io.bitbuilder.Tenant.Stop", vt.Stop().Call, tenantStopped),
		},
		{
			path: "tenant watch", args: "[NAME] [--revision R]", maxArgs: 1, stream: true,
			summary: "stream changes to tenants, one line each",
			long: `Without --revision, every current tenant is first shown as added. With --revision, every change
after revision R. Human output: REVISION TYPE NAME and what the change did: the desired state,
the phase, conditions and machines that changed (from -> to), and which parts of the spec
changed; with --json one event per line, as the daemon sent it. When the daemon drops a watcher
that fell behind, or the connection is lost (the daemon restarted), bbctl resumes from the last
revision it saw. A NAME that is no tenant is an error (unless --revision is given: the changes of
a tenant deleted since). Watch runs until interrupted or until --timeout, which ends it without
error.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				rev := optInt{zero: true}
				fs.Var(&rev, "revision", "show the changes after revision `R` (0: all retained changes)")
				return func(ctx context.Context, e *env, args []string) error {
					var name *string
					if len(args) == 1 {
						name = &args[0]
					}
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					if name != nil && !rev.set {
						if _, err := vt.Get().Call(ctx, c, *name); err != nil {
							return e.wrap(err, "io.bitbuilder.Tenant.Get")
						}
					}
					p := watchPrinter{last: map[string]*vt.Tenant{}}
					err = e.watch(ctx, c, name, rev.ptr(), func(ev vt.Event) (bool, error) {
						if e.g.json {
							return false, printJSONLine(e.stdout(), ev)
						}
						_, err := fmt.Fprintln(e.stdout(), p.format(ev))
						return false, err
					})
					if ctx.Err() != nil {
						return nil // interrupted or --timeout: the normal end of a watch
					}
					return err
				}
			},
		},
	}
}

func startStopHelp(goal string) string {
	return `Acts on each name in turn and reports each failure; the exit code is the first failure's.
With --wait bbctl then follows each tenant until it is ` + goal + `,
printing each change of its phase, conditions and machines to standard error, and fails when
the tenant or a machine fails or --timeout (default 5m) ends first; a degraded tenant is
waited for, since it can recover. With --json the reply (with --wait, the tenant when the wait
ended) is printed; an array of them for several names.`
}

// tenantAction is tenant start or stop: the call for each name in turn, then with --wait a
// wait for each tenant whose call succeeded.
func tenantAction(method string, call func(context.Context, *varlink.Connection, string) (vt.Tenant, error), g goal) func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		wait := fs.Bool("wait", false, "wait until the tenant and its machines got there")
		return func(ctx context.Context, e *env, args []string) error {
			ctx, cancel := e.bound(ctx, *wait)
			defer cancel()
			c, err := e.connect(ctx)
			if err != nil {
				return err
			}
			f := failures{w: e.stderr(), several: len(args) > 1, json: e.g.json}
			replies := make([]*vt.Tenant, len(args))
			for i, name := range args {
				t, err := call(ctx, c, name)
				if err != nil {
					f.add(e.wrap(err, method))
					continue
				}
				replies[i] = &t
				if !*wait && !e.g.json {
					fmt.Fprintln(e.stdout(), stateLine(t))
				}
			}
			if *wait {
				for i, name := range args {
					if replies[i] == nil {
						continue
					}
					final, err := e.waitFor(ctx, name, replies[i], g)
					if err != nil {
						f.add(err)
						replies[i] = nil
						continue
					}
					replies[i] = final
					if !e.g.json {
						fmt.Fprintln(e.stdout(), stateLine(*final))
					}
				}
			}
			if e.g.json {
				out := make([]any, len(args))
				for i, t := range replies {
					if t != nil {
						out[i] = *t
					}
				}
				if err := printReplies(e.stdout(), out); err != nil {
					return err
				}
			}
			return f.err()
		}
	}
}

// stateLine is what tenant start and stop print for a tenant.
func stateLine(t vt.Tenant) string {
	return fmt.Sprintf("tenant %q: desired state %s, phase %s", t.Name, t.DesiredState, t.Phase)
}

// getEach is a get given one or several names: each record is read and printed in turn
// (blocks apart by a blank line), each failure reported; with --json the record, or an array
// of the records found for several names.
func getEach[T any](e *env, names []string, get func(string) (T, error), print func(io.Writer, T) error) error {
	f := failures{w: e.stderr(), several: len(names) > 1, json: e.g.json}
	var found []any
	for _, name := range names {
		r, err := get(name)
		if err != nil {
			f.add(err)
			continue
		}
		if e.g.json {
			found = append(found, r)
			continue
		}
		if len(found) > 0 {
			fmt.Fprintln(e.stdout())
		}
		found = append(found, r)
		if err := print(e.stdout(), r); err != nil {
			return err
		}
	}
	if e.g.json {
		switch {
		case len(names) > 1:
			if found == nil {
				found = []any{}
			}
			if err := printJSON(e.stdout(), found); err != nil {
				return err
			}
		case len(found) == 1:
			if err := printJSON(e.stdout(), found[0]); err != nil {
				return err
			}
		}
	}
	return f.err()
}

// printReplies prints the --json output of a command given one or several names: the reply
// for one name (nothing when it failed), an array of the replies that succeeded for several.
func printReplies(w io.Writer, replies []any) error {
	if len(replies) == 1 {
		if replies[0] == nil {
			return nil
		}
		return printJSON(w, replies[0])
	}
	out := []any{}
	for _, r := range replies {
		if r != nil {
			out = append(out, r)
		}
	}
	return printJSON(w, out)
}

// tenantsNamed is every tenant (Tenant.List) when names is empty, else the tenants named, in that order.
func (e *env) tenantsNamed(ctx context.Context, names []string) ([]vt.Tenant, error) {
	if len(names) == 0 {
		return e.listTenants(ctx)
	}
	c, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	var ts []vt.Tenant
	for _, name := range names {
		t, err := vt.Get().Call(ctx, c, name)
		if err != nil {
			return nil, e.wrap(err, "io.bitbuilder.Tenant.Get")
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// listTenants collects the replies of Tenant.List; no tenants is an empty list.
func (e *env) listTenants(ctx context.Context) ([]vt.Tenant, error) {
	c, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	recv, err := vt.List().Send(ctx, c, varlink.More)
	if err != nil {
		return nil, e.wrap(err, "io.bitbuilder.Tenant.List")
	}
	out := []vt.Tenant{}
	for {
		t, flags, err := recv(ctx)
		if err != nil {
			if isEmptyList(err) {
				return out, nil
			}
			return nil, e.wrap(err, "io.bitbuilder.Tenant.List")
		}
		out = append(out, t)
		if flags&varlink.Continues == 0 {
			return out, nil
		}
	}
}

// Reconnection of a watch whose daemon went away (restarted, say): the first attempt after
// reconnectMin, doubling up to reconnectMax, until the watch's context ends.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 3 * time.Second
)

// watch follows Tenant.Watch and calls fn for each event until fn says stop, ctx ends or the
// watch fails. On WatchOverflow it watches again after the last revision it saw. When the
// connection is lost (the daemon restarted), it dials again until ctx ends and resumes after
// the last revision it saw; c is the caller's, the connections it dials are its own.
func (e *env) watch(ctx context.Context, c *varlink.Connection, name *string, revision *int64, fn func(vt.Event) (stop bool, err error)) error {
	var own *varlink.Connection
	defer func() {
		if own != nil {
			own.Close()
		}
	}()
	for {
		err := e.watchOnce(ctx, c, name, &revision, fn)
		if err == nil || !errors.Is(err, ErrUnreachable) || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(e.stderr(), "bbctl: %v; reconnecting\n", err)
		for delay := reconnectMin; ; delay = min(2*delay, reconnectMax) {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			if own != nil {
				own.Close()
				own = nil
			}
			if nc, err := e.dial(ctx); err == nil {
				own, c = nc, nc
				break
			}
		}
		if revision != nil {
			fmt.Fprintf(e.stderr(), "bbctl: reconnected; resuming after revision %d\n", *revision)
		} else {
			fmt.Fprintln(e.stderr(), "bbctl: reconnected")
		}
	}
}

// watchOnce is one Tenant.Watch call of watch, resumed after an overflow; *revision follows
// the last event seen.
func (e *env) watchOnce(ctx context.Context, c *varlink.Connection, name *string, revision **int64, fn func(vt.Event) (stop bool, err error)) error {
	for {
		recv, err := vt.Watch().Send(ctx, c, varlink.More, name, *revision)
		if err != nil {
			return e.wrap(err, "io.bitbuilder.Tenant.Watch")
		}
		for {
			ev, flags, err := recv(ctx)
			var overflow *vt.WatchOverflow
			if errors.As(err, &overflow) {
				from := overflow.Revision
				if *revision != nil && **revision > from {
					from = **revision
				}
				fmt.Fprintf(e.stderr(), "bbctl: the watch fell behind; resuming after revision %d\n", from)
				*revision = &from
				break
			}
			if err != nil {
				return e.wrap(err, "io.bitbuilder.Tenant.Watch")
			}
			r := ev.Revision
			*revision = &r
			stop, err := fn(ev)
			if err != nil || stop {
				return err
			}
			if flags&varlink.Continues == 0 {
				return nil
			}
		}
	}
}

// deleteTenant deletes tenant name at revision (nil: at the revision it reads). Unless force,
// a tenant whose desired state is running is refused: the check and the delete are one
// conditional commit, since the delete names the revision that was checked.
func (e *env) deleteTenant(ctx context.Context, c *varlink.Connection, name string, revision *int64, force bool) error {
	for attempt := 0; ; attempt++ {
		expect := revision
		if !force || expect == nil {
			cur, err := vt.Get().Call(ctx, c, name)
			if err != nil {
				return e.wrap(err, "io.bitbuilder.Tenant.Get")
			}
			if !force && cur.DesiredState == "running" && cur.Phase != "deleting" {
				return &localError{kind: ErrConflict, name: "bbctl.TenantRunning", params: map[string]any{"name": name},
					message: fmt.Sprintf("tenant %q is running: stop it first (bbctl tenant stop %s) or delete it with --force", name, name)}
			}
			if expect == nil {
				r := cur.Revision
				expect = &r
			}
		}
		err := vt.Delete().Call(ctx, c, name, expect)
		var mismatch *vt.RevisionMismatch
		if errors.As(err, &mismatch) && revision == nil && attempt < updateRetries {
			continue
		}
		return e.wrap(err, "io.bitbuilder.Tenant.Delete")
	}
}

// waitDeleted waits until tenant name is gone.
func (e *env) waitDeleted(ctx context.Context, c *varlink.Connection, name string) error {
	t, err := vt.Get().Call(ctx, c, name)
	var nst *vt.NoSuchTenant
	if errors.As(err, &nst) {
		return nil
	}
	if err != nil {
		return e.wrap(err, "io.bitbuilder.Tenant.Get")
	}
	_, err = e.waitFor(ctx, name, &t, tenantGone)
	return err
}

// watchPrinter prints tenant watch's events for people: what each changed, against the
// tenant's snapshot of the previous event.
type watchPrinter struct {
	last map[string]*vt.Tenant
}

func (p *watchPrinter) format(ev vt.Event) string {
	head := fmt.Sprintf("%-6d %-8s %s", ev.Revision, ev.Type, ev.Name)
	prev := p.last[ev.Name]
	if ev.Type == "deleted" {
		delete(p.last, ev.Name)
		return head
	}
	if ev.Tenant == nil {
		return head
	}
	p.last[ev.Name] = ev.Tenant
	changes := describeChange(prev, ev.Tenant)
	if len(changes) == 0 {
		return head
	}
	return head + ": " + strings.Join(changes, ", ")
}

// describeChange says what changed from prev to cur (prev nil: what cur is): desired state,
// phase, conditions, machines' states, and which parts of the spec changed.
func describeChange(prev, cur *vt.Tenant) []string {
	if prev == nil {
		out := []string{"desired state " + string(cur.DesiredState), "phase " + string(cur.Phase), fmt.Sprintf("index %d", cur.NetworkIndex)}
		for _, c := range cur.Conditions {
			if c.Status != "true" {
				out = append(out, conditionChange(c))
			}
		}
		return out
	}
	var out []string
	if prev.DesiredState != cur.DesiredState {
		out = append(out, fmt.Sprintf("desired state %s -> %s", prev.DesiredState, cur.DesiredState))
	}
	if prev.Phase != cur.Phase {
		out = append(out, fmt.Sprintf("phase %s -> %s", prev.Phase, cur.Phase))
	}
	was := map[string]vt.Condition{}
	for _, c := range prev.Conditions {
		was[c.Type] = c
	}
	for _, c := range cur.Conditions {
		if w, ok := was[c.Type]; !ok || w.Status != c.Status || w.Reason != c.Reason || w.Message != c.Message {
			out = append(out, conditionChange(c))
		}
		delete(was, c.Type)
	}
	for _, c := range prev.Conditions {
		if _, ok := was[c.Type]; ok {
			out = append(out, "condition "+c.Type+" removed")
		}
	}
	lines := map[string]string{}
	for _, m := range prev.Machines {
		lines[m.Name] = machineLine(m)
	}
	for _, m := range cur.Machines {
		if l := machineLine(m); l != "" && l != lines[m.Name] {
			out = append(out, l)
		}
	}
	for _, part := range []struct {
		name string
		a, b any
	}{
		{"resources", prev.Resources, cur.Resources},
		{"templates", prev.Templates, cur.Templates},
		{"parameters", prev.Parameters, cur.Parameters},
		{"network features", prev.NetworkFeatures, cur.NetworkFeatures},
		{"machines", machineSpecs(prev.Machines), machineSpecs(cur.Machines)},
	} {
		if !sameJSONValue(part.a, part.b) {
			out = append(out, part.name+" changed")
		}
	}
	return out
}

func conditionChange(c vt.Condition) string {
	s := fmt.Sprintf("condition %s %s", c.Type, c.Status)
	if why := joinNonEmpty(": ", c.Reason, firstLine(c.Message)); c.Status != "true" && why != "" {
		s += " (" + why + ")"
	}
	return s
}

// machineSpecs is the desired part of machines, without their observed status.
func machineSpecs(ms []vt.Machine) []vt.Machine {
	out := make([]vt.Machine, len(ms))
	for i, m := range ms {
		m.Status = nil
		out[i] = m
	}
	return out
}

func sameJSONValue(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func (e *env) printTenantTable(w io.Writer, ts []vt.Tenant) error {
	now := e.app.Now()
	tb := newTable(w, "NAME", "INDEX", "STATE", "PHASE", "CPUS", "MEMORY", "STORAGE", "AGE", "REVISION")
	for _, t := range ts {
		tb.row(t.Name, strconv.FormatInt(t.NetworkIndex, 10), string(t.DesiredState), string(t.Phase),
			formatCPUs(t.Resources.Cpus), FormatSize(t.Resources.MemoryBytes), FormatSize(t.Resources.StorageBytes),
			formatAge(now, t.CreatedAt), strconv.FormatInt(t.Revision, 10))
	}
	return tb.flush()
}

func (e *env) printTenant(w io.Writer, t vt.Tenant) error {
	now := e.app.Now()
	kv(w, "Name", t.Name)
	kv(w, "Network index", strconv.FormatInt(t.NetworkIndex, 10))
	kv(w, "Desired state", string(t.DesiredState))
	kv(w, "Phase", string(t.Phase))
	kv(w, "CPUs", formatCPUs(t.Resources.Cpus))
	kv(w, "Memory", FormatSize(t.Resources.MemoryBytes))
	kv(w, "Storage", FormatSize(t.Resources.StorageBytes))
	if len(t.NetworkFeatures) == 0 {
		kv(w, "Network", "bridge")
	} else {
		kv(w, "Network", "bridge, "+strings.Join(t.NetworkFeatures, ", "))
	}
	kv(w, "Revision", fmt.Sprintf("%d (created at %d)", t.Revision, t.CreateRevision))
	kv(w, "Created", formatTime(now, t.CreatedAt))
	kv(w, "Updated", formatTime(now, t.UpdatedAt))
	if len(t.Templates) == 0 {
		kv(w, "Templates", "none")
	} else {
		fmt.Fprintln(w, "Templates:")
		tb := indentTable(w, "ROLE", "NAME", "TEMPLATE", "COMMIT")
		for _, u := range t.Templates {
			tb.row(u.Role, u.Name, u.Template, shortCommit(deref(u.Commit)))
		}
		if err := tb.flush(); err != nil {
			return err
		}
	}
	if err := e.printMachines(w, t.Machines); err != nil {
		return err
	}
	if len(t.Parameters) == 0 {
		kv(w, "Parameters", "none")
	} else {
		fmt.Fprintln(w, "Parameters:")
		for _, k := range slices.Sorted(maps.Keys(t.Parameters)) {
			fmt.Fprintf(w, "  %s=%s\n", k, t.Parameters[k])
		}
	}
	if len(t.Conditions) == 0 {
		kv(w, "Conditions", "none")
		return nil
	}
	fmt.Fprintln(w, "Conditions:")
	tb := indentTable(w, "TYPE", "STATUS", "REASON", "AGE", "MESSAGE")
	for _, c := range t.Conditions {
		tb.row(c.Type, c.Status, c.Reason, formatAge(now, c.LastTransitionTime), c.Message)
	}
	return tb.flush()
}
