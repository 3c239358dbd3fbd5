package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// Paths inside the test host, and who calls.
const (
	guestBin = "/opt/bitbuilder/bin"
	guestAPI = "/opt/bitbuilder/api"
	// guestExamples is the repository's examples/templates/, when it exists.
	guestExamples = "/opt/bitbuilder/examples"
	bitbuilderd   = guestBin + "/bitbuilderd"
	idleconns     = guestBin + "/idleconns"
	extractimage  = guestBin + "/extractimage"

	// adminGroup is the group bitbuilderd lets change things (its default --admin-group).
	adminGroup = "bitbuilder"
	// adminUser is a system user of the test host with adminGroup as a supplementary group.
	adminUser = "bbadmin"

	// callTimeout bounds every command run inside the host.
	callTimeout = 30 * time.Second
)

// exitCallFailed is varlinkctl 257's exit status for a call answered with an error, whatever
// the error: 257 maps no Varlink error (not InvalidParameter, PermissionDenied, MethodNotFound
// nor ExpectedMore) to an errno exit status of its own. Measured in the test host.
const exitCallFailed = 1

var (
	shared = &testhost.Shared{}
	// binDir holds the binaries built for the host; it is bound to guestBin.
	binDir string
	// apiDir is the repository's api/ directory; it is bound to guestAPI.
	apiDir string

	setupOnce sync.Once
	setupErr  error

	// raceBuild builds the binaries with -race (set under go test -race, see race_test.go).
	raceBuild bool
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	if binDir, err = os.MkdirTemp("", "bitbuilder-integration-"); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if apiDir, err = filepath.Abs("../api"); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	shared.Options = testhost.Options{
		Name: "integration",
		Binds: []testhost.Bind{
			{Host: binDir, Guest: guestBin, ReadOnly: true},
			{Host: apiDir, Guest: guestAPI, ReadOnly: true},
		},
	}
	if examples, err := filepath.Abs("../examples/templates"); err == nil {
		if _, err := os.Stat(examples); err == nil {
			shared.Options.Binds = append(shared.Options.Binds, testhost.Bind{Host: examples, Guest: guestExamples, ReadOnly: true})
		}
	}
	return shared.Main(m)
}

// host returns the package's test host, booted on first use, with the binaries built and
// bound in, group adminGroup and user adminUser created. It skips t with -short, and when the
// machine cannot boot a test host.
func host(t testing.TB) *testhost.Host {
	t.Helper()
	testpolicy.Short(t, "boots a systemd test host")
	h := shared.Host(t)
	setupOnce.Do(func() { setupErr = setup(h) })
	if setupErr != nil {
		t.Fatalf("setting up the test host: %v", setupErr)
	}
	return h
}

// vmHost boots a test host of its own for t on the "vm" variant's tree (QEMU, virtiofsd, systemd-vmspawn and a
// small guest, see testhost.VariantVM), with the package host's binds and setup: the binaries bound in at
// guestBin, group adminGroup and user adminUser created. testhost.Start stops it when t ends, and skips t (or
// fails it, under BITBUILDER_TESTHOST_REQUIRE) when the machine cannot boot such a host. It skips t with -short.
func vmHost(t testing.TB, name string) *testhost.Host {
	t.Helper()
	testpolicy.Short(t, "boots a systemd test host and a VM in it")
	opts := shared.Options
	opts.Name = name
	opts.Variant = testhost.VariantVM
	opts.Binds = slices.Clone(shared.Options.Binds)
	h := testhost.Start(t, opts)
	if err := setup(h); err != nil {
		t.Fatalf("setting up the test host: %v", err)
	}
	return h
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildBinaries builds the binaries into binDir, once for every host (they see it through the bind mount).
func buildBinaries() error {
	buildOnce.Do(func() {
		pkgs := []string{"../cmd/bitbuilderd", "./testdata/idleconns", "./testdata/extractimage"}
		if buildErr = goBuild(pkgs...); buildErr != nil {
			return
		}
		// bbctl is built when it exists; no test depends on it yet, so a broken bbctl is only reported.
		if files, _ := filepath.Glob("../cmd/bbctl/*.go"); len(files) > 0 {
			if err := goBuild("../cmd/bbctl"); err != nil {
				fmt.Fprintf(os.Stderr, "integration: cmd/bbctl does not build, continuing without it: %v\n", err)
			}
		}
	})
	return buildErr
}

// setup builds the binaries into binDir (visible in the host through the bind mount), once, and
// creates the admin group and user inside the host.
func setup(h *testhost.Host) error {
	start := time.Now()
	if err := buildBinaries(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	// The admin group comes from the packaging's sysusers.d file, as on a real host, when there is one.
	createGroup := "groupadd --system " + adminGroup
	if conf, err := os.ReadFile("../packaging/sysusers.d/bitbuilder.conf"); err == nil {
		if err := h.WriteFile("/etc/sysusers.d/bitbuilder.conf", conf, 0o644); err != nil {
			return err
		}
		createGroup = "systemd-sysusers /etc/sysusers.d/bitbuilder.conf"
	}
	script := fmt.Sprintf("%[1]s && getent group %[2]s >/dev/null && useradd --system --no-create-home --user-group --groups %[2]s %[3]s",
		createGroup, adminGroup, adminUser)
	if out, err := h.Shell(ctx, script); err != nil {
		return fmt.Errorf("create %s and %s: %w\n%s", adminGroup, adminUser, err, out)
	}
	fmt.Fprintf(os.Stderr, "integration: built binaries and set up host %s in %v\n", h.Name(), time.Since(start).Round(time.Millisecond))
	return nil
}

func goBuild(pkgs ...string) error {
	args := []string{"build", "-o", binDir + "/"}
	cgo := "CGO_ENABLED=0" // static binaries: nothing to match in the host's libc
	if raceBuild {
		args = append(args, "-race")
		cgo = "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), cgo)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// result is what one command run inside the host gave.
type result struct {
	args   []string
	stdout string
	stderr string
	exit   int
}

func (r result) String() string {
	return fmt.Sprintf("%q: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.exit, r.stdout, r.stderr)
}

// run runs args inside the host with stdin and returns what it did. Only a failure to run it at
// all (or a timeout) fails t; a non-zero exit is for the caller to judge.
func run(t testing.TB, h *testhost.Host, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	stdout, stderr, err := h.RunInput(ctx, strings.NewReader(stdin), args...)
	r := result{args: args, stdout: string(stdout), stderr: string(stderr)}
	var ee *testhost.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode >= 0 && ctx.Err() == nil:
		r.exit = ee.ExitCode
	default:
		t.Fatalf("running %q in the host: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustRun runs args inside the host and fails t unless they succeed.
func mustRun(t testing.TB, h *testhost.Host, args ...string) string {
	t.Helper()
	r := run(t, h, "", args...)
	if r.exit != 0 {
		t.Fatalf("%v", r)
	}
	return r.stdout
}

// caller is who runs a command inside the host: a prefix of its command line.
type caller []string

var (
	asRoot caller
	// asNobody is a plain user without any supplementary group.
	asNobody = caller{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}
	// asAdmin is adminUser: adminGroup is one of its supplementary groups (SO_PEERGROUPS).
	asAdmin = caller{"setpriv", "--reuid=" + adminUser, "--regid=" + adminUser, "--init-groups"}
	// asAdminPrimary is nobody with adminGroup as its primary group and no other (SO_PEERCRED's gid).
	asAdminPrimary = caller{"setpriv", "--reuid=nobody", "--regid=" + adminGroup, "--clear-groups"}
)

// varlinkctl runs varlinkctl with args inside the host as c.
func varlinkctl(t testing.TB, h *testhost.Host, c caller, args ...string) result {
	t.Helper()
	return run(t, h, "", append(append(append([]string(nil), c...), "varlinkctl"), args...)...)
}

// daemon is one bitbuilderd running inside the test host as a transient service.
type daemon struct {
	h        *testhost.Host
	unit     string
	socket   string
	stateDir string
	args     []string // more bitbuilderd arguments
	env      []string // NAME=VALUE set in the daemon's environment
}

// startDaemon starts a bitbuilderd of its own for t in the package's host, named name, with a
// fresh state directory and the extra command-line arguments args, and stops it and removes its
// state when t ends.
func startDaemon(t testing.TB, name string, args ...string) *daemon {
	t.Helper()
	return startDaemonIn(t, host(t), name, args...)
}

// startDaemonIn is startDaemon in host h (set up as host or vmHost sets it up).
func startDaemonIn(t testing.TB, h *testhost.Host, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{
		h:        h,
		unit:     "bitbuilderd-" + name + ".service",
		socket:   "/run/bitbuilder-" + name + "/io.bitbuilder",
		stateDir: "/var/lib/bitbuilder-" + name,
		args:     args,
	}
	mustRun(t, h, "rm", "-rf", d.stateDir, filepath.Dir(d.socket))
	d.start(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		// A test may have stopped it already (the transient unit is then gone).
		_, _, _ = h.Run(ctx, "systemctl", "stop", d.unit)
		if out, _, _ := h.Run(ctx, "systemctl", "is-active", d.unit); strings.TrimSpace(string(out)) == "active" {
			t.Errorf("%s still active after stop", d.unit)
		}
		if t.Failed() {
			t.Logf("journal of %s:\n%s", d.unit, h.JournalTail(ctx, 40, "-u", d.unit))
		}
		_, _, _ = h.Run(ctx, "systemctl", "reset-failed", d.unit)
		if d.changesHost() {
			// What the daemon made on the host (namespaces, links, units, machines) goes with it, also when the
			// test failed half-way: the host is shared, and a tenant left behind holds its network index there.
			cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := append([]string{bitbuilderd, "--socket", d.socket, "--state-dir", d.stateDir}, d.args...)
			if out, errOut, err := h.Run(cctx, append(cmd, "--cleanup")...); err != nil {
				t.Errorf("bitbuilderd --cleanup of %s: %v\n%s%s", d.unit, err, out, errOut)
			}
		}
		_, _, _ = h.Run(ctx, "rm", "-rf", d.stateDir, filepath.Dir(d.socket))
	})
	return d
}

// changesHost reports whether the daemon applies its tenants to the host: the last --no-host on its command line
// (start passes --no-host first) is false.
func (d *daemon) changesHost() bool {
	host := false
	for _, a := range d.args {
		switch a {
		case "--no-host", "--no-host=true":
			host = false
		case "--no-host=false":
			host = true
		}
	}
	return host
}

// start runs the daemon as a transient Type=notify service: systemd-run returns once systemd
// has seen READY=1. It then checks that the socket is there. The daemons of the API tests
// share one host, so they keep records only (--no-host); a test of the host steps passes
// --no-host=false, which comes later on the command line and wins.
func (d *daemon) start(t testing.TB) {
	t.Helper()
	cmd := []string{"systemd-run", "--quiet", "--unit=" + d.unit, "--service-type=notify"}
	for _, e := range d.env {
		cmd = append(cmd, "--setenv="+e)
	}
	cmd = append(cmd, "--", bitbuilderd, "--socket", d.socket, "--state-dir", d.stateDir, "--no-host")
	mustRun(t, d.h, append(cmd, d.args...)...)
	mustRun(t, d.h, "test", "-S", d.socket)
	if got := d.show(t, "ActiveState", "SubState"); got["ActiveState"] != "active" || got["SubState"] != "running" {
		t.Fatalf("%s after start: %v", d.unit, got)
	}
}

// stop stops the daemon and checks that it exited cleanly. The transient unit is then gone,
// but systemd still answers for it: a failed exit would have left Result=exit-code.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	mustRun(t, d.h, "systemctl", "stop", d.unit)
	if got := d.show(t, "ActiveState", "Result"); got["ActiveState"] != "inactive" || got["Result"] != "success" {
		t.Fatalf("%s after stop: %v\n%s", d.unit, got, d.h.JournalTail(t.Context(), 20, "-u", d.unit))
	}
}

// crash kills the daemon with SIGKILL, as a crash or a power cut would end it, and clears the
// unit's failed state so that start can run it again.
func (d *daemon) crash(t testing.TB) {
	t.Helper()
	mustRun(t, d.h, "systemctl", "kill", "--signal=SIGKILL", d.unit)
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.show(t, "ActiveState")
		return got["ActiveState"] == "failed" || got["ActiveState"] == "inactive", fmt.Sprint(got)
	})
	_, _, _ = d.h.Run(t.Context(), "systemctl", "reset-failed", d.unit)
}

func (d *daemon) show(t testing.TB, props ...string) map[string]string {
	t.Helper()
	return showUnit(t, d.h, d.unit, props...)
}

// showUnit returns the properties of a unit as systemctl show prints them.
func showUnit(t testing.TB, h *testhost.Host, unit string, props ...string) map[string]string {
	t.Helper()
	out := mustRun(t, h, "systemctl", "show", "-p", strings.Join(props, ","), unit)
	m := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	return m
}

// mainPID returns the daemon's process id inside the host.
func (d *daemon) mainPID(t testing.TB) int {
	t.Helper()
	pid, err := strconv.Atoi(d.show(t, "MainPID")["MainPID"])
	if err != nil || pid <= 0 {
		t.Fatalf("%s has no main process (%v)", d.unit, err)
	}
	return pid
}

// connections returns the number of client connections the daemon has open on its socket, as
// the kernel lists them (ss: connected unix stream sockets bound to the socket's path).
func (d *daemon) connections(t testing.TB) int {
	t.Helper()
	out := mustRun(t, d.h, "sh", "-c", "ss -xH state connected src "+d.socket+" | wc -l")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("counting connections: %q", out)
	}
	return n
}

// waitConnections waits until the daemon has exactly n client connections open.
func (d *daemon) waitConnections(t testing.TB, n int) {
	t.Helper()
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.connections(t)
		return got == n, fmt.Sprintf("the daemon has %d connections open, want %d", got, n)
	})
}

// checkJournal fails t if the daemon's journal shows a panic or a data race.
func (d *daemon) checkJournal(t testing.TB) {
	t.Helper()
	j := d.h.JournalTail(t.Context(), 2000, "-u", d.unit)
	for _, bad := range []string{"panic:", "fatal error:", "DATA RACE"} {
		if strings.Contains(j, bad) {
			t.Errorf("journal of %s shows %q:\n%s", d.unit, bad, j)
		}
	}
}

// call runs `varlinkctl call [flags] --json=short SOCKET METHOD PARAMS` as c, and checks what
// it printed against the method's IDL (checkReply).
func (d *daemon) call(t testing.TB, c caller, method, params string, flags ...string) result {
	t.Helper()
	args := append(append([]string{"call"}, flags...), "--json=short", d.socket, method, params)
	r := varlinkctl(t, d.h, c, args...)
	checkReply(t, method, flags, r)
	return r
}

// tenant is io.bitbuilder.Tenant's Tenant as varlinkctl prints it.
type tenant struct {
	Name         string `json:"name"`
	NetworkIndex int    `json:"networkIndex"`
	Resources    struct {
		CPUs         float64 `json:"cpus"`
		MemoryBytes  int64   `json:"memoryBytes"`
		StorageBytes int64   `json:"storageBytes"`
	} `json:"resources"`
	Templates      []json.RawMessage `json:"templates"`
	Parameters     map[string]string `json:"parameters"`
	DesiredState   string            `json:"desiredState"`
	Phase          string            `json:"phase"`
	Conditions     []json.RawMessage `json:"conditions"`
	Machines       []machine         `json:"machines"`
	Revision       int64             `json:"revision"`
	CreateRevision int64             `json:"createRevision"`
	CreatedAt      string            `json:"createdAt"`
	UpdatedAt      string            `json:"updatedAt"`
}

// machine is io.bitbuilder.Tenant's Machine as varlinkctl prints it.
type machine struct {
	Name              string `json:"name"`
	MachineName       string `json:"machineName"`
	Kind              string `json:"kind"`
	DesiredState      string `json:"desiredState"`
	RestartGeneration int64  `json:"restartGeneration"`
	Status            *struct {
		State             string   `json:"state"`
		Class             string   `json:"class"`
		Leader            int      `json:"leader"`
		Addresses         []string `json:"addresses"`
		Unit              string   `json:"unit"`
		UnitState         string   `json:"unitState"`
		Commit            string   `json:"commit"`
		RestartGeneration int64    `json:"restartGeneration"`
		Message           string   `json:"message"`
		Extensions        []string `json:"extensions"`
	} `json:"status"`
}

// event is io.bitbuilder.Tenant's Event.
type event struct {
	Type     string  `json:"type"`
	Revision int64   `json:"revision"`
	Name     string  `json:"name"`
	Tenant   *tenant `json:"tenant"`
}

// tenantCall calls a Tenant method that replies {"tenant": ...} and returns the tenant; any
// error reply fails t.
func (d *daemon) tenantCall(t testing.TB, c caller, method, params string) tenant {
	t.Helper()
	r := d.call(t, c, "io.bitbuilder.Tenant."+method, params)
	var reply struct {
		Tenant *tenant `json:"tenant"`
	}
	r.decode(t, &reply)
	if reply.Tenant == nil {
		t.Fatalf("no tenant in the reply: %v", r)
	}
	return *reply.Tenant
}

// create creates a tenant as root with the given Create parameters.
func (d *daemon) create(t testing.TB, params string) tenant {
	t.Helper()
	return d.tenantCall(t, asRoot, "Create", params)
}

// list returns all tenants through `List --more` (none: the NoSuchTenant enumeration end).
func (d *daemon) list(t testing.TB) []tenant {
	t.Helper()
	r := d.call(t, asRoot, "io.bitbuilder.Tenant.List", "{}", "--more")
	if r.exit != 0 {
		if params := r.wantError(t, "io.bitbuilder.Tenant.NoSuchTenant"); params["name"] != "" {
			t.Fatalf("List with no tenants: NoSuchTenant names %v, want an empty name", params["name"])
		}
		return nil
	}
	var ts []tenant
	for _, rec := range r.seq(t) {
		var reply struct {
			Tenant tenant `json:"tenant"`
		}
		decodeJSON(t, rec, &reply)
		ts = append(ts, reply.Tenant)
	}
	return ts
}

// decode parses the stdout of a successful command as one JSON value.
func (r result) decode(t testing.TB, v any) {
	t.Helper()
	if r.exit != 0 {
		t.Fatalf("call failed: %v", r)
	}
	decodeJSON(t, []byte(r.stdout), v)
}

// decodeJSON parses data, one JSON value, into v. Unknown fields are ignored, as a Varlink
// client must; checkReply holds replies to the IDL.
func decodeJSON(t testing.TB, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value in %s", data)
	}
}

// seq parses stdout as JSON-SEQ (RFC 7464), as varlinkctl --more prints it.
func (r result) seq(t testing.TB) []json.RawMessage {
	t.Helper()
	if r.exit != 0 {
		t.Fatalf("call failed: %v", r)
	}
	recs, err := parseSeq(r.stdout)
	if err != nil {
		t.Fatalf("%v\n%v", err, r)
	}
	return recs
}

// parseSeq splits JSON-SEQ text into its records: each starts with RS (0x1E) and holds one JSON
// value. Empty text has no records.
func parseSeq(text string) ([]json.RawMessage, error) {
	if text == "" {
		return nil, nil
	}
	if text[0] != 0x1e {
		return nil, fmt.Errorf("not JSON-SEQ: does not start with RS: %.40q", text)
	}
	var recs []json.RawMessage
	for i, part := range strings.Split(text[1:], "\x1e") {
		part = strings.TrimSpace(part)
		if !json.Valid([]byte(part)) {
			return nil, fmt.Errorf("JSON-SEQ record %d is not one JSON value: %.200q", i, part)
		}
		recs = append(recs, json.RawMessage(part))
	}
	return recs, nil
}

// wantError checks that a call was answered with the Varlink error name, the way varlinkctl 257
// reports it (exit status exitCallFailed, "failed: NAME" on stderr, the error's parameters as
// JSON on stdout), and returns the error's parameters.
func (r result) wantError(t testing.TB, name string) map[string]any {
	t.Helper()
	if r.exit != exitCallFailed {
		t.Fatalf("want error %s (exit status %d), got: %v", name, exitCallFailed, r)
	}
	if !strings.Contains(r.stderr, "failed: "+name+"\n") {
		t.Fatalf("want error %s on stderr, got: %v", name, r)
	}
	// With --more the parameters are the stream's last JSON-SEQ record.
	last := []byte(r.stdout)
	if recs, err := parseSeq(r.stdout); err == nil && len(recs) > 0 {
		last = recs[len(recs)-1]
	}
	params := map[string]any{}
	if err := json.Unmarshal(last, &params); err != nil {
		t.Fatalf("error parameters of %s are not a JSON object: %v\n%v", name, err, r)
	}
	return params
}

// stream is a long-running command inside the host whose stdout is JSON-SEQ in short form (one
// RS-prefixed record per line), read record by record as it arrives.
type stream struct {
	cmd     *exec.Cmd
	records chan json.RawMessage
	done    chan struct{} // closed once stdout ended and the command exited
	stderr  bytes.Buffer
	waitErr error
}

// startStream starts args inside the host; t's end kills it.
func startStream(t testing.TB, h *testhost.Host, args ...string) *stream {
	t.Helper()
	s := &stream{records: make(chan json.RawMessage, 1024), done: make(chan struct{})}
	s.cmd = h.Command(t.Context(), args...)
	s.cmd.Stderr = &s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", args, err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 || line[0] != 0x1e {
				line = append([]byte("not JSON-SEQ: "), line...)
			} else {
				line = line[1:]
			}
			s.records <- json.RawMessage(bytes.Clone(line))
		}
		s.waitErr = s.cmd.Wait()
		close(s.records)
	}()
	t.Cleanup(func() {
		s.kill()
		<-s.done
	})
	return s
}

// next returns the next record, failing t when none comes within timeout.
func (s *stream) next(t testing.TB, timeout time.Duration) json.RawMessage {
	t.Helper()
	select {
	case rec, ok := <-s.records:
		if !ok {
			t.Fatalf("stream ended (%v): %s", s.waitErr, s.stderr.String())
		}
		if !json.Valid(rec) {
			t.Fatalf("bad record: %s", rec)
		}
		return rec
	case <-time.After(timeout):
		t.Fatalf("no record within %v", timeout)
		return nil
	}
}

// nextEvent returns the next Watch event.
func (s *stream) nextEvent(t testing.TB) event {
	t.Helper()
	var reply struct {
		Event event `json:"event"`
	}
	decodeJSON(t, s.next(t, 10*time.Second), &reply)
	return reply.Event
}

// kill kills the command and everything it started inside the host (SIGKILL to its process
// group): the client end of its connection goes away without a goodbye.
func (s *stream) kill() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// eventually polls cond every 50 ms until it holds or timeout passes, then fails t with what
// the last attempt said.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll(t, timeout, 50*time.Millisecond, cond, nil)
}

// poll calls cond every interval until it holds or timeout passes, then fails t with what the last attempt said
// and, when explain is not nil, explain's text.
func poll(t testing.TB, timeout, interval time.Duration, cond func() (bool, string), explain func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if explain != nil {
				msg += "\n" + explain()
			}
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(interval)
	}
}

// seqEvents parses the JSON-SEQ output of a Watch call into its events.
func seqEvents(t testing.TB, stdout string) []event {
	t.Helper()
	recs, err := parseSeq(stdout)
	if err != nil {
		t.Fatal(err)
	}
	var evs []event
	for _, rec := range recs {
		var reply struct {
			Event event `json:"event"`
		}
		decodeJSON(t, rec, &reply)
		evs = append(evs, reply.Event)
	}
	return evs
}

// matchEvents returns the events of evs whose revision is one of want's. The others must be
// "modified" events: changes the daemon made on its own.
func matchEvents(t testing.TB, evs, want []event) []event {
	t.Helper()
	var out []event
	for _, ev := range evs {
		if slices.ContainsFunc(want, func(w event) bool { return w.Revision == ev.Revision }) {
			out = append(out, ev)
		} else if ev.Type != "modified" {
			t.Errorf("unexpected event %s %s at revision %d", ev.Type, ev.Name, ev.Revision)
		}
	}
	return out
}

// checkEvents checks that got are the events want, in order, each carrying its tenant at the
// event's revision.
func checkEvents(t testing.TB, what string, got, want []event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s events: %d of the %d expected: %+v", what, len(got), len(want), got)
	}
	for i, ev := range got {
		w := want[i]
		if ev.Type != w.Type || ev.Name != w.Name || ev.Revision != w.Revision {
			t.Errorf("%s event %d: %s %s at %d, want %s %s at %d", what, i, ev.Type, ev.Name, ev.Revision, w.Type, w.Name, w.Revision)
		}
		if ev.Tenant == nil || ev.Tenant.Name != ev.Name || ev.Tenant.Revision != ev.Revision {
			t.Errorf("%s event %d does not carry the tenant at its revision: %+v", what, i, ev.Tenant)
		}
	}
}

// sameTenant reports whether two records of a tenant agree on everything but its status:
// phase, conditions, revision and updatedAt may change without a call (the reconciler records
// what it observes); every other field changes only through calls.
func sameTenant(a, b tenant) bool {
	for _, x := range []*tenant{&a, &b} {
		x.Phase, x.Conditions, x.Revision, x.UpdatedAt = "", nil, 0, ""
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func mapsEqual(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// errorName returns the Varlink error varlinkctl reported on stderr ("... failed: NAME"), or the
// whole stderr when it reported none.
func errorName(stderr string) string {
	for line := range strings.Lines(stderr) {
		if _, name, ok := strings.Cut(strings.TrimSpace(line), "failed: "); ok {
			return name
		}
	}
	return stderr
}

// lastLine returns the last non-empty line of text.
func lastLine(text string) string {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	return lines[len(lines)-1]
}
