package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

func TestParseMachine(t *testing.T) {
	stopped := vt.DesiredState("stopped")
	good := []struct {
		in   string
		want vt.MachineSpec
	}{
		{"web:container:web", vt.MachineSpec{Name: "web", Kind: "container", Template: "web"}},
		{"db:vm:debian:cpus=0.5:memory=512M", vt.MachineSpec{Name: "db", Kind: "vm", Template: "debian", Cpus: ptr(0.5), MemoryBytes: ptr(int64(512 << 20))}},
		{"db:vm:debian:stopped:memory=2GiB", vt.MachineSpec{Name: "db", Kind: "vm", Template: "debian", MemoryBytes: ptr(int64(2 << 30)), DesiredState: &stopped}},
	}
	for _, c := range good {
		got, err := parseMachine(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(c.want)
		if string(gj) != string(wj) {
			t.Errorf("%q: got %s, want %s", c.in, gj, wj)
		}
	}
	bad := []struct{ in, err string }{
		{"web", "want NAME:KIND:TEMPLATE"},
		{"web:container", "want NAME:KIND:TEMPLATE"},
		{"web::web", "want NAME:KIND:TEMPLATE"},
		{":container:web", "want NAME:KIND:TEMPLATE"},
		{"web:lxc:web", `kind "lxc" is not container or vm`},
		{"web:vm:web:cpus=many", `cpus: "many" is not a number of CPUs`},
		{"web:vm:web:cpus=0", "cpus:"},
		{"web:vm:web:memory=2GB", "memory: \"2GB\" is ambiguous"},
		{"web:vm:web:memory=0", "must be more than 0 bytes"},
		{"web:vm:web:memory=1G:memory=2G", "memory is given twice"},
		{"web:vm:web:stopped=yes", `unknown option "stopped=yes"`},
		{"web:vm:web:running", `unknown option "running"`},
		{"web:vm:web:cpus", `unknown option "cpus"`},
	}
	for _, c := range bad {
		_, err := parseMachine(c.in)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: error %v, want %q", c.in, err, c.err)
		}
	}
}

// TestMachineFlagUsage checks that --machine mistakes are usage errors that name the flag,
// found before the daemon is contacted.
func TestMachineFlagUsage(t *testing.T) {
	missing := "unix:/nonexistent/socket"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "create", "x", "--machine", "web:lxc:web"}, `invalid value "web:lxc:web" for flag --machine: kind "lxc" is not container or vm`},
		{[]string{"tenant", "create", "x", "--machine", "web:vm:web:memory=lots"}, `invalid value "web:vm:web:memory=lots" for flag --machine: memory:`},
		{[]string{"tenant", "update", "x", "--machine", "web"}, `invalid value "web" for flag --machine: want NAME:KIND:TEMPLATE`},
		{[]string{"tenant", "update", "x", "--machine", "web:vm:web", "--no-machines"}, "--machine and --no-machines exclude each other"},
		{[]string{"tenant", "create", "x", "--no-machines"}, "unknown flag --no-machines"},
		{[]string{"tenant", "delete", "x", "y", "--revision", "3"}, "--revision needs exactly one name"},
		{[]string{"machine", "start", "x"}, "usage: bbctl machine start TENANT MACHINE [MACHINE...]"},
		{[]string{"machine", "shell", "x"}, "usage: bbctl machine shell TENANT MACHINE"},
	}
	for _, c := range cases {
		r := bbctl(t, missing, c.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("bbctl %q: exit %d, stderr %q; want exit 2 and %q", c.args, r.code, r.stderr, c.want)
		}
		if strings.Contains(r.stderr, "machines[") {
			t.Errorf("bbctl %q names the API field: %q", c.args, r.stderr)
		}
	}
}

// TestMachines creates tenants with machines through the CLI against the in-process daemon
// (with a container template in its registry) and drives the machine commands. The daemon
// runs no machines, so they have no status: STATE shows "-".
func TestMachines(t *testing.T) {
	d := startDaemon(t)
	addTemplate(t, d.addr, "ctr", "container")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "container:web:ctr",
		"--machine", "web:container:web:memory=256M", "--machine", "db:container:web:cpus=0.5:stopped")
	mustRun(t, d.addr, "tenant", "create", "bare")
	mustRun(t, d.addr, "tenant", "create", "zeta", "--template", "container:app:ctr", "--machine", "app:container:app")

	got := getTenant(t, d.addr, "acme")
	if len(got.Machines) != 2 || got.Machines[0].Name != "web" || got.Machines[0].MemoryBytes != 256<<20 || got.Machines[0].MachineName != "acme-web" ||
		got.Machines[1].DesiredState != "stopped" || got.Machines[1].Cpus != 0.5 {
		t.Fatalf("machines %+v", got.Machines)
	}

	t.Run("list: all tenants, one row per machine", func(t *testing.T) {
		out := mustRun(t, d.addr, "machine", "list")
		want := `TENANT  MACHINE  KIND       STATE  ADDRESS  SINCE
acme    web      container  -      -        -
acme    db       container  -      -        -
zeta    app      container  -      -        -
`
		if out != want {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("ls: the tenants named", func(t *testing.T) {
		out := mustRun(t, d.addr, "machine", "ls", "zeta", "bare")
		if strings.Contains(out, "acme") || !strings.Contains(out, "zeta    app") {
			t.Errorf("got\n%s", out)
		}
		if r := bbctl(t, d.addr, "machine", "list", "nope"); r.code != ExitNotFound {
			t.Errorf("unknown tenant: exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("list --json: the machines as the API returns them, with their tenant", func(t *testing.T) {
		var out []machineEntry
		if err := json.Unmarshal([]byte(mustRun(t, d.addr, "machine", "list", "--json")), &out); err != nil {
			t.Fatal(err)
		}
		if len(out) != 3 || out[0].Tenant != "acme" || out[2].Tenant != "zeta" {
			t.Fatalf("%+v", out)
		}
		want, _ := json.Marshal(getTenant(t, d.addr, "acme").Machines[1])
		if got, _ := json.Marshal(out[1].Machine); string(got) != string(want) {
			t.Errorf("machine %s, want %s", got, want)
		}
		// The record itself, with "tenant" beside its fields.
		var flat []map[string]any
		if err := json.Unmarshal([]byte(mustRun(t, d.addr, "machine", "list", "--json")), &flat); err != nil || flat[1]["tenant"] != "acme" || flat[1]["name"] != out[1].Name || flat[1]["machine"] != nil {
			t.Errorf("flat records %v (%v)", flat, err)
		}
		if o := mustRun(t, d.addr, "machine", "list", "bare", "--json"); strings.TrimSpace(o) != "[]" {
			t.Errorf("no machines: %q, want []", o)
		}
	})
	t.Run("tenant get shows the machines", func(t *testing.T) {
		out := mustRun(t, d.addr, "tenant", "get", "acme")
		if !strings.Contains(out, "Machines:\n  NAME  KIND       TEMPLATE  CPUS  MEMORY   DESIRED  STATE  ADDRESS  SINCE  MESSAGE\n") ||
			!strings.Contains(out, "  db    container  web       0.5   256 MiB  stopped  -      -        -      -\n") {
			t.Errorf("got\n%s", out)
		}
	})

	steps := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
		check  func(t *testing.T, ten vt.Tenant)
	}{
		{"start", []string{"machine", "start", "acme", "db"}, 0, `machine "db" of tenant "acme": desired state running`, "",
			func(t *testing.T, ten vt.Tenant) {
				if ten.Machines[1].DesiredState != "running" {
					t.Errorf("db %+v", ten.Machines[1])
				}
			}},
		{"stop two", []string{"machine", "stop", "acme", "web", "db"}, 0, `machine "db" of tenant "acme": desired state stopped`, "",
			func(t *testing.T, ten vt.Tenant) {
				if ten.Machines[0].DesiredState != "stopped" || ten.Machines[1].DesiredState != "stopped" {
					t.Errorf("machines %+v", ten.Machines)
				}
			}},
		{"restart starts and counts", []string{"machine", "restart", "acme", "web"}, 0, `machine "web" of tenant "acme": restart requested (generation 1)`, "",
			func(t *testing.T, ten vt.Tenant) {
				if ten.Machines[0].DesiredState != "running" || ten.Machines[0].RestartGeneration != 1 {
					t.Errorf("web %+v", ten.Machines[0])
				}
			}},
		{"no such machine among others: each reported, the others done", []string{"machine", "start", "acme", "nope", "db", "gone"}, ExitNotFound,
			`machine "db" of tenant "acme": desired state running`, `bbctl: tenant "acme" has no machine "nope"` + "\n" + `bbctl: tenant "acme" has no machine "gone"` + "\n", nil},
		{"no such machine alone", []string{"machine", "stop", "acme", "nope"}, ExitNotFound, "", `bbctl: tenant "acme" has no machine "nope"` + "\n", nil},
		{"no such tenant", []string{"machine", "stop", "nope", "web"}, ExitNotFound, "", `tenant "nope" not found`, nil},
		{"stop --wait: a machine never seen is stopped", []string{"machine", "stop", "acme", "db", "--wait", "--timeout", "10s"}, 0,
			`machine "db" of tenant "acme": stopped`, "", nil},
		{"start --wait: times out naming the machine", []string{"machine", "start", "acme", "db", "--wait", "--timeout", "300ms"}, ExitFailure,
			"", `bbctl: tenant "acme": not reached within 300ms: machine db has no status yet, not running`, nil},
		{"tenant start --wait times out on machines without status", []string{"tenant", "start", "acme", "--wait", "--timeout", "300ms"}, ExitFailure,
			"", "machine web has no status yet, not running; machine db has no status yet, not running", nil},
		{"tenant stop --wait: machines never seen are stopped", []string{"tenant", "stop", "acme", "--wait", "--timeout", "10s"}, 0,
			`tenant "acme": desired state stopped, phase stopped`, "", nil},
		{"machine start --wait of a stopped tenant fails at once", []string{"machine", "start", "acme", "web", "--wait", "--timeout", "10s"}, ExitFailure,
			"", "the tenant is stopped, so machine web will not run until it is started", nil},
		{"update --machine replaces the list", []string{"tenant", "update", "acme", "--machine", "solo:container:web:stopped"}, 0, "updated", "",
			func(t *testing.T, ten vt.Tenant) {
				if len(ten.Machines) != 1 || ten.Machines[0].Name != "solo" || ten.Machines[0].DesiredState != "stopped" {
					t.Errorf("machines %+v", ten.Machines)
				}
			}},
		{"update: the daemon's error names the --machine value", []string{"tenant", "update", "acme", "--machine", "solo:container:web", "--machine", "vm1:vm:web"}, ExitInvalid,
			"", "(--machine vm1:vm:web)", nil},
		{"update --no-machines clears it", []string{"tenant", "update", "acme", "--no-machines"}, 0, "updated", "",
			func(t *testing.T, ten vt.Tenant) {
				if len(ten.Machines) != 0 {
					t.Errorf("machines %+v", ten.Machines)
				}
			}},
		{"update without machine flags keeps them", []string{"tenant", "update", "zeta", "--cpus", "2"}, 0, "updated", "", nil},
		{"create: the daemon's error names the --machine value", []string{"tenant", "create", "x", "--machine", "web:container:nope"}, ExitInvalid,
			"", "(--machine web:container:nope)", nil},
		{"a tenant named like another's machine", []string{"tenant", "create", "zeta-app", "--template", "container:c:ctr", "--machine", "x:container:c"}, 0, "created", "", nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := bbctl(t, d.addr, s.args...)
			if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
				t.Fatalf("bbctl %q: exit %d, stdout %q, stderr %q; want exit %d, %q and %q", s.args, r.code, r.stdout, r.stderr, s.code, s.stdout, s.stderr)
			}
			if s.check != nil {
				s.check(t, getTenant(t, d.addr, s.args[2]))
			}
		})
	}
	if got := getTenant(t, d.addr, "zeta"); len(got.Machines) != 1 {
		t.Errorf("update without machine flags changed them: %+v", got.Machines)
	}

	t.Run("machine name in use by another tenant", func(t *testing.T) {
		// Tenant zeta-app's machine x is zeta-app-x to machined; so would be tenant zeta's
		// machine app-x.
		r := bbctl(t, d.addr, "tenant", "update", "zeta", "--machine", "app-x:container:app")
		if r.code != ExitConflict || !strings.Contains(r.stderr, `the machine name "zeta-app-x" is used by tenant "zeta-app"`) ||
			!strings.Contains(r.stderr, "(--machine app-x:container:app)") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestMachineShell runs machine shell with machinectl's lookup and exec replaced.
func TestMachineShell(t *testing.T) {
	d := startDaemon(t)
	addTemplate(t, d.addr, "ctr", "container")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "container:web:ctr", "--machine", "web:container:web")

	run := func(lookErr error, args ...string) (result, []string) {
		var out, errb bytes.Buffer
		app := testApp(d.addr, &out, &errb)
		var argv []string
		app.LookPath = func(file string) (string, error) {
			if lookErr != nil {
				return "", lookErr
			}
			return "/usr/bin/" + file, nil
		}
		app.Exec = func(argv0 string, a, env []string) error {
			argv = append([]string{argv0}, a...)
			return nil
		}
		code := app.Run(t.Context(), args)
		return result{out.String(), errb.String(), code}, argv
	}
	cases := []struct {
		name   string
		args   []string
		look   error
		code   int
		argv   []string
		stderr string
	}{
		{"a shell", []string{"machine", "shell", "acme", "web"}, nil, 0, []string{"/usr/bin/machinectl", "machinectl", "shell", "acme-web"}, ""},
		{"a command after --", []string{"machine", "shell", "acme", "web", "--", "ls", "-l", "/"}, nil, 0,
			[]string{"/usr/bin/machinectl", "machinectl", "shell", "acme-web", "ls", "-l", "/"}, ""},
		{"no machinectl", []string{"machine", "shell", "acme", "web"}, errors.New("not found"), ExitFailure, nil,
			"bbctl: machine shell needs machinectl (systemd-container) on this host\n"},
		{"no such machine", []string{"machine", "shell", "acme", "db"}, nil, ExitNotFound, nil, `tenant "acme" has no machine "db"`},
		{"no such tenant", []string{"machine", "shell", "nope", "web"}, nil, ExitNotFound, nil, `tenant "nope" not found`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, argv := run(c.look, c.args...)
			if r.code != c.code || !slices.Equal(argv, c.argv) || !strings.Contains(r.stderr, c.stderr) {
				t.Errorf("bbctl %q: exit %d, exec %q, stderr %q; want exit %d, exec %q, %q", c.args, r.code, argv, r.stderr, c.code, c.argv, c.stderr)
			}
		})
	}
}

// TestMachineRender covers the machine tables with machines in every state the API
// describes; the in-process daemon reports no machine status.
func TestMachineRender(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	e := &env{app: &App{Now: func() time.Time { return now }}}
	tenants := []vt.Tenant{
		{Name: "acme", Machines: []vt.Machine{
			{Name: "web", MachineName: "acme-web", Kind: "container", Template: "web", DesiredState: "running",
				Status: &vt.MachineStatus{State: "running", Addresses: []string{"10.3.0.101", "fd00::101"}, Unit: "u", Since: "2026-11-28T11:58:30Z"}},
			{Name: "db", MachineName: "acme-db", Kind: "vm", Template: "debian", Cpus: 2, MemoryBytes: 4 << 30, DesiredState: "running",
				Status: &vt.MachineStatus{State: "failed", Addresses: []string{}, Unit: "u", Message: ptr("vmspawn exited with status 1"), Since: "2026-11-28T09:00:00Z"}},
			{Name: "batch", MachineName: "acme-batch", Kind: "container", Template: "web", DesiredState: "stopped"},
		}},
		{Name: "bare"},
		{Name: "zeta", Machines: []vt.Machine{
			{Name: "app", MachineName: "zeta-app", Kind: "container", Template: "app", DesiredState: "running",
				Status: &vt.MachineStatus{State: "starting", Addresses: []string{}, Unit: "u", Since: "2026-11-20T12:00:00Z"}},
		}},
	}
	var b bytes.Buffer
	if err := e.printMachineTable(&b, machineEntries(tenants)); err != nil {
		t.Fatal(err)
	}
	golden(t, "render-machine-list.golden", b.String())
	b.Reset()
	if err := e.printMachines(&b, tenants[0].Machines); err != nil {
		t.Fatal(err)
	}
	golden(t, "render-machines-get.golden", b.String())
}
