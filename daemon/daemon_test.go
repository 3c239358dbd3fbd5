package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// testDaemon runs the daemon in-process on a real unix socket and a real bbolt file.
type testDaemon struct {
	socket   string
	stateDir string
	cancel   context.CancelFunc
	done     chan error
}

func startDaemon(t testing.TB, mutate ...func(*Config)) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	return startDaemonIn(t, dir, filepath.Join(dir, "state"), mutate...)
}

func startDaemonIn(t testing.TB, sockDir, stateDir string, mutate ...func(*Config)) *testDaemon {
	t.Helper()
	sock := filepath.Join(sockDir, "io.bitbuilder")
	ready := make(chan struct{})
	cfg := Config{
		SocketPath: sock,
		StateDir:   stateDir,
		AdminGroup: "bitbuilder-test-nonexistent",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready:      ready,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &testDaemon{socket: sock, stateDir: stateDir, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- Run(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-d.done:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not become ready")
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *testDaemon) stop(t testing.TB) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("daemon returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("daemon did not stop")
	}
}

// client is a raw Varlink client: it writes exactly what a test gives it.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, sock string) *client {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

type reply struct {
	Parameters map[string]any `json:"parameters"`
	Continues  bool           `json:"continues"`
	Error      string         `json:"error"`
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := c.conn.Write(append([]byte(raw), 0)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) read() (reply, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadBytes(0)
	if err != nil {
		return reply{}, err
	}
	var r reply
	if err := json.Unmarshal(b[:len(b)-1], &r); err != nil {
		c.t.Fatalf("reply is not JSON: %q", b)
	}
	return r, nil
}

// callLean sends method with params and returns the reply's error name ("" for success) and
// its parameters undecoded. The benchmarks' load generators use it: a client that only checks
// the outcome, so that its own decoding does not compete with the daemon for the CPUs.
func (c *client) callLean(method, params string) (string, []byte, error) {
	c.send(`{"method":"` + method + `","parameters":` + params + `}`)
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadBytes(0)
	if err != nil {
		return "", nil, err
	}
	var r struct {
		Parameters json.RawMessage `json:"parameters"`
		Error      string          `json:"error"`
	}
	if err := json.Unmarshal(b[:len(b)-1], &r); err != nil {
		return "", nil, fmt.Errorf("reply is not JSON: %q", b)
	}
	return r.Error, r.Parameters, nil
}

func (c *client) mustRead() reply {
	c.t.Helper()
	r, err := c.read()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return r
}

// call sends method with params (a JSON object or "") and returns the single reply.
func (c *client) call(method, params string) reply {
	c.t.Helper()
	msg := `{"method":"` + method + `"`
	if params != "" {
		msg += `,"parameters":` + params
	}
	c.send(msg + "}")
	return c.mustRead()
}

func (c *client) callMore(method, params string) []reply {
	c.t.Helper()
	c.send(`{"method":"` + method + `","more":true,"parameters":` + params + `}`)
	var out []reply
	for {
		r := c.mustRead()
		out = append(out, r)
		if !r.Continues {
			return out
		}
	}
}

func wantError(t *testing.T, r reply, name string, params map[string]any) {
	t.Helper()
	if r.Error != name {
		t.Fatalf("error = %q (%v), want %q", r.Error, r.Parameters, name)
	}
	for k, v := range params {
		if fmt.Sprint(r.Parameters[k]) != fmt.Sprint(v) {
			t.Errorf("error parameter %s = %v, want %v", k, r.Parameters[k], v)
		}
	}
}

func tenantOf(t *testing.T, r reply) map[string]any {
	t.Helper()
	if r.Error != "" {
		t.Fatalf("unexpected error %s %v", r.Error, r.Parameters)
	}
	tn, ok := r.Parameters["tenant"].(map[string]any)
	if !ok {
		t.Fatalf("reply has no tenant: %v", r.Parameters)
	}
	return tn
}

func TestGetInfoHasAllFields(t *testing.T) {
	d := startDaemon(t)
	r := dial(t, d.socket).call("org.varlink.service.GetInfo", "")
	for _, k := range []string{"vendor", "product", "version", "url"} {
		if s, _ := r.Parameters[k].(string); s == "" {
			t.Errorf("GetInfo %s is empty: %v", k, r.Parameters)
		}
	}
	ifaces := fmt.Sprint(r.Parameters["interfaces"])
	for _, name := range []string{"org.varlink.service", "io.bitbuilder.Tenant", "io.bitbuilder.Template", "io.bitbuilder.Network"} {
		if !strings.Contains(ifaces, name) {
			t.Errorf("GetInfo interfaces %s lack %s", ifaces, name)
		}
	}
}

func TestSocketModeAndStaleSocket(t *testing.T) {
	d := startDaemon(t)
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %o, want 660", fi.Mode().Perm())
	}
	// A second daemon on the same socket must refuse, not steal it.
	err = Run(t.Context(), Config{SocketPath: d.socket, StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "another instance") {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
	if r := dial(t, d.socket).call("io.bitbuilder.Tenant.Create", `{"name":"still-served"}`); r.Error != "" {
		t.Fatalf("first daemon stopped serving: %v", r)
	}
}

func TestLockedDatabaseGivesClearError(t *testing.T) {
	d := startDaemon(t)
	err := Run(t.Context(), Config{SocketPath: filepath.Join(t.TempDir(), "s"), StateDir: d.stateDir, StoreTimeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second daemon on a locked database: %v", err)
	}
}

func TestCorruptDatabaseGivesClearError(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "bitbuilder.db"), bytes.Repeat([]byte("not bbolt "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Run(t.Context(), Config{SocketPath: filepath.Join(t.TempDir(), "s"), StateDir: state, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("daemon on a corrupt database: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(state, "bitbuilder.db"))
	if !bytes.HasPrefix(b, []byte("not bbolt")) {
		t.Error("the corrupt database was modified")
	}
}

func TestTenantLifecycle(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)

	a := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"alpha","resources":{"cpus":2,"memoryBytes":2147483648,"storageBytes":10737418240},"parameters":{"BRIDGE_STP":"yes"}}`))
	if a["networkIndex"] != 1.0 || a["phase"] != "pending" || a["desiredState"] != "running" {
		t.Errorf("created tenant = %v", a)
	}
	b := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"beta","networkIndex":7,"desiredState":"stopped"}`))
	if b["networkIndex"] != 7.0 || b["desiredState"] != "stopped" {
		t.Errorf("beta = %v", b)
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"gamma","networkIndex":7}`),
		"io.bitbuilder.Tenant.NetworkIndexInUse", map[string]any{"networkIndex": 7, "tenant": "beta"})
	wantError(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"gamma","networkIndex":300}`),
		"io.bitbuilder.Tenant.InvalidField", map[string]any{"field": "networkIndex"})
	g := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"gamma"}`))
	if g["networkIndex"] != 2.0 {
		t.Errorf("gamma got index %v, want the lowest free (2)", g["networkIndex"])
	}

	got := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"alpha"}`))
	if got["resources"].(map[string]any)["cpus"] != 2.0 || got["parameters"].(map[string]any)["BRIDGE_STP"] != "yes" {
		t.Errorf("Get alpha = %v", got)
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"nope"}`), "io.bitbuilder.Tenant.NoSuchTenant", map[string]any{"name": "nope"})

	list := c.callMore("io.bitbuilder.Tenant.List", `{}`)
	var names []string
	for i, r := range list {
		names = append(names, tenantOf(t, r)["name"].(string))
		if r.Continues != (i < len(list)-1) {
			t.Errorf("reply %d continues=%v", i, r.Continues)
		}
	}
	if strings.Join(names, ",") != "alpha,beta,gamma" {
		t.Errorf("List = %v", names)
	}

	// The reconciler records the tenant's phase; once it settled, the revision holds still.
	a = waitPhase(t, c, "alpha", "ready")
	rev := int(a["revision"].(float64))
	up := tenantOf(t, c.call("io.bitbuilder.Tenant.Update", fmt.Sprintf(`{"name":"alpha","revision":%d,"resources":{"cpus":4,"memoryBytes":4294967296,"storageBytes":10737418240}}`, rev)))
	if up["resources"].(map[string]any)["cpus"] != 4.0 || int(up["revision"].(float64)) <= rev {
		t.Errorf("Update = %v", up)
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Update", fmt.Sprintf(`{"name":"alpha","revision":%d}`, rev)),
		"io.bitbuilder.Tenant.RevisionMismatch", map[string]any{"expected": rev})

	if s := tenantOf(t, c.call("io.bitbuilder.Tenant.Stop", `{"name":"alpha"}`)); s["desiredState"] != "stopped" {
		t.Errorf("Stop = %v", s)
	}
	if s := tenantOf(t, c.call("io.bitbuilder.Tenant.Start", `{"name":"alpha"}`)); s["desiredState"] != "running" {
		t.Errorf("Start = %v", s)
	}
	if r := c.call("io.bitbuilder.Tenant.Delete", `{"name":"gamma"}`); r.Error != "" {
		t.Fatalf("Delete: %v", r)
	}
	// The reconciler tears down and finalizes: the tenant disappears, its index is free.
	waitFor(t, func() bool {
		return c.call("io.bitbuilder.Tenant.Get", `{"name":"gamma"}`).Error == "io.bitbuilder.Tenant.NoSuchTenant"
	}, "gamma to be finalized")
	if g := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"delta"}`)); g["networkIndex"] != 2.0 {
		t.Errorf("delta got index %v, want gamma's freed 2", g["networkIndex"])
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Delete", `{"name":"nope"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)
}

func TestListEmptyAndExpectedMore(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	wantError(t, c.call("io.bitbuilder.Tenant.List", `{}`), "org.varlink.service.ExpectedMore", nil)
	r := c.callMore("io.bitbuilder.Tenant.List", `{}`)
	if len(r) != 1 {
		t.Fatalf("empty List gave %d replies", len(r))
	}
	wantError(t, r[0], "io.bitbuilder.Tenant.NoSuchTenant", map[string]any{"name": ""})
	wantError(t, c.call("io.bitbuilder.Tenant.Watch", `{}`), "org.varlink.service.ExpectedMore", nil)
}

// TestBadInput sends what a broken or hostile client might; each must get the right
// error on its own connection while the daemon keeps serving.
func TestBadInput(t *testing.T) {
	d := startDaemon(t)
	long := strings.Repeat("a", 64)
	cases := []struct {
		name, msg string
		wantErr   string
		param     string
	}{
		{"unknown method", `{"method":"io.bitbuilder.Tenant.Frobnicate","parameters":{}}`, "org.varlink.service.MethodNotFound", ""},
		{"unknown interface", `{"method":"io.example.Nope.Get","parameters":{}}`, "org.varlink.service.InterfaceNotFound", ""},
		{"no interface", `{"method":"Get"}`, "org.varlink.service.InvalidParameter", "method"},
		{"missing parameters", `{"method":"io.bitbuilder.Tenant.Get"}`, "org.varlink.service.InvalidParameter", "name"},
		{"null parameters", `{"method":"io.bitbuilder.Tenant.Get","parameters":null}`, "org.varlink.service.InvalidParameter", "name"},
		{"parameters not an object", `{"method":"io.bitbuilder.Tenant.Get","parameters":[1]}`, "org.varlink.service.InvalidParameter", "parameters"},
		{"mistyped", `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":5}}`, "org.varlink.service.InvalidParameter", "name"},
		{"mistyped nested", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","resources":{"cpus":1,"memoryBytes":"lots","storageBytes":1}}}`, "org.varlink.service.InvalidParameter", "resources.memoryBytes"},
		{"float for int", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","networkIndex":1.5}}`, "org.varlink.service.InvalidParameter", "networkIndex"},
		{"bad enum", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","desiredState":"paused"}}`, "org.varlink.service.InvalidParameter", "desiredState"},
		{"unknown field", `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"x","colour":"red"}}`, "org.varlink.service.InvalidParameter", "colour"},
		{"unknown nested field", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","templates":[{"role":"sysext","name":"a","template":"b","x":1}]}}`, "org.varlink.service.InvalidParameter", "templates[0].x"},
		{"upgrade", `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"x"},"upgrade":true}`, "org.varlink.service.InvalidParameter", "upgrade"},
		{"path name", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"../x"}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"empty name", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":""}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"64 characters", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"` + long + `"}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"upper case", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"Alpha"}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"unicode", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"t\u00e9nant"}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"reserved", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"localhost"}}`, "io.bitbuilder.Tenant.InvalidName", ""},
		{"bad resources", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","resources":{"cpus":0,"memoryBytes":1073741824,"storageBytes":1073741824}}}`, "io.bitbuilder.Tenant.InvalidField", ""},
		{"injected parameter", `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"x","parameters":{"PEER":"a\n[Network]"}}}`, "io.bitbuilder.Tenant.InvalidField", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, d.socket)
			c.send(tc.msg)
			r := c.mustRead()
			var params map[string]any
			if tc.param != "" {
				params = map[string]any{"parameter": tc.param}
			}
			wantError(t, r, tc.wantErr, params)
			// The same connection still works after an error reply.
			if r := c.call("org.varlink.service.GetInfo", "{}"); r.Error != "" {
				t.Fatalf("connection broken after error reply: %v", r)
			}
		})
	}
	// Nothing of the refused creates was stored.
	c := dial(t, d.socket)
	wantError(t, c.callMore("io.bitbuilder.Tenant.List", `{}`)[0], "io.bitbuilder.Tenant.NoSuchTenant", nil)
}

// TestBrokenConnectionsAffectOnlyThemselves: malformed JSON, a message without its NUL
// terminator, and an oversized message close that client's connection only.
func TestBrokenConnectionsAffectOnlyThemselves(t *testing.T) {
	d := startDaemon(t, func(c *Config) { c.MaxMessageSize = 1 << 20 })
	good := dial(t, d.socket)

	bad := dial(t, d.socket)
	bad.send(`{"method": "io.bitbuilder.Tenant.Get", "parameters": {`)
	if _, err := bad.read(); !errors.Is(err, io.EOF) {
		t.Errorf("malformed JSON: read = %v, want the connection closed", err)
	}

	partial := dial(t, d.socket)
	if _, err := partial.conn.Write([]byte(`{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"half"}}`)); err != nil {
		t.Fatal(err)
	}
	partial.conn.Close()

	huge := dial(t, d.socket)
	errc := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		var err error
		for i := 0; i < 100 && err == nil; i++ { // 100 MiB
			_, err = huge.conn.Write(chunk)
		}
		errc <- err
	}()
	if _, err := huge.read(); err == nil {
		t.Error("oversized message: got a reply, want the connection closed")
	}
	if err := <-errc; err == nil {
		t.Error("oversized message: the daemon read all 100 MiB")
	}

	if r := good.call("io.bitbuilder.Tenant.Create", `{"name":"unaffected"}`); r.Error != "" {
		t.Fatalf("healthy connection failed: %v", r)
	}
	if r := good.call("io.bitbuilder.Tenant.Get", `{"name":"half"}`); r.Error != "io.bitbuilder.Tenant.NoSuchTenant" {
		t.Errorf("a message without NUL terminator was executed: %v", r)
	}
}

func TestOnewayCreatesWithoutReply(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	c.send(`{"method":"io.bitbuilder.Tenant.Create","oneway":true,"parameters":{"name":"quiet"}}`)
	c.send(`{"method":"io.bitbuilder.Tenant.Get","oneway":true,"parameters":{"name":"nope"}}`)
	// The next reply on the connection belongs to this call: oneway calls sent none.
	r := c.call("io.bitbuilder.Tenant.Get", `{"name":"quiet"}`)
	tenantOf(t, r)

	// A oneway call from a client that hangs up right away still happens.
	c2 := dial(t, d.socket)
	c2.send(`{"method":"io.bitbuilder.Tenant.Create","oneway":true,"parameters":{"name":"fire-and-forget"}}`)
	c2.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := dial(t, d.socket).call("io.bitbuilder.Tenant.Get", `{"name":"fire-and-forget"}`)
		if r.Error == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("oneway create from a closed connection never happened: %v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPipelinedCallsAnsweredInOrder(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	var msgs []byte
	for i := range 20 {
		msgs = append(msgs, fmt.Sprintf(`{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"p%d"}}`, i)...)
		msgs = append(msgs, 0)
	}
	if _, err := c.conn.Write(msgs); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if n := tenantOf(t, c.mustRead())["name"]; n != fmt.Sprintf("p%d", i) {
			t.Fatalf("reply %d is for %v", i, n)
		}
	}
}

func TestConcurrentDuplicateCreates(t *testing.T) {
	d := startDaemon(t)
	const n = 24
	var wg sync.WaitGroup
	results := make(chan reply, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- dial(t, d.socket).call("io.bitbuilder.Tenant.Create", `{"name":"racer"}`)
		}()
	}
	wg.Wait()
	close(results)
	ok := 0
	for r := range results {
		switch r.Error {
		case "":
			ok++
		case "io.bitbuilder.Tenant.TenantExists":
		default:
			t.Errorf("unexpected reply %v", r)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creates of one name succeeded, want exactly 1", ok)
	}
	// Distinct names racing for automatic indexes all get distinct ones.
	var wg2 sync.WaitGroup
	idx := make(chan float64, n)
	for i := range n {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			r := dial(t, d.socket).call("io.bitbuilder.Tenant.Create", fmt.Sprintf(`{"name":"auto-%d"}`, i))
			if r.Error != "" {
				t.Errorf("create auto-%d: %v", i, r)
				return
			}
			idx <- r.Parameters["tenant"].(map[string]any)["networkIndex"].(float64)
		}()
	}
	wg2.Wait()
	close(idx)
	seen := map[float64]bool{}
	for i := range idx {
		if seen[i] {
			t.Errorf("network index %v allocated twice", i)
		}
		seen[i] = true
	}
}

func TestWatchStreamsAndResumes(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"w1"}`))
	waitPhase(t, c, "w1", "ready")

	w := dial(t, d.socket)
	w.send(`{"method":"io.bitbuilder.Tenant.Watch","more":true,"parameters":{}}`)
	first := w.mustRead()
	ev := first.Parameters["event"].(map[string]any)
	if ev["type"] != "added" || ev["name"] != "w1" || !first.Continues {
		t.Fatalf("first event = %v", first)
	}
	snapshot := ev["revision"].(float64)

	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"w2"}`))
	waitPhase(t, c, "w2", "ready")
	tenantOf(t, c.call("io.bitbuilder.Tenant.Stop", `{"name":"w1"}`))
	// Expect, in order: w2 added, w2 modified by the reconciler (phase), w1 modified
	// (desiredState stopped); the reconciler may add more modifications after that.
	want := []string{"added:w2:running", "modified:w2:running", "modified:w1:stopped"}
	var seen []string
	var lastRev float64
	for range want {
		r := w.mustRead()
		e := r.Parameters["event"].(map[string]any)
		tn := e["tenant"].(map[string]any)
		seen = append(seen, e["type"].(string)+":"+e["name"].(string)+":"+tn["desiredState"].(string))
		if rev := e["revision"].(float64); rev <= snapshot || rev <= lastRev {
			t.Errorf("revision %v not increasing (snapshot %v, last %v)", rev, snapshot, lastRev)
		} else {
			lastRev = rev
		}
	}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("events = %v, want %v", seen, want)
	}

	// Resume from the snapshot revision: the same changes, nothing before.
	w2 := dial(t, d.socket)
	w2.send(fmt.Sprintf(`{"method":"io.bitbuilder.Tenant.Watch","more":true,"parameters":{"revision":%d}}`, int(snapshot)))
	for _, want := range []string{"w2", "w2", "w1"} {
		e := w2.mustRead().Parameters["event"].(map[string]any)
		if e["name"] != want {
			t.Errorf("resumed event for %v, want %s", e["name"], want)
		}
	}
	// A filtered watch sees only its tenant.
	w3 := dial(t, d.socket)
	w3.send(fmt.Sprintf(`{"method":"io.bitbuilder.Tenant.Watch","more":true,"parameters":{"name":"w2","revision":%d}}`, int(snapshot)))
	if e := w3.mustRead().Parameters["event"].(map[string]any); e["name"] != "w2" {
		t.Errorf("filtered watch got %v", e)
	}
}

// TestHangupMidStreamFreesTheConnection: a client that vanishes while watching does not
// leave its handler behind.
func TestHangupMidStreamFreesTheConnection(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	for i := range 3 {
		tenantOf(t, c.call("io.bitbuilder.Tenant.Create", fmt.Sprintf(`{"name":"h%d"}`, i)))
	}
	for range 20 {
		w, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(`{"method":"io.bitbuilder.Tenant.Watch","more":true,"parameters":{}}` + "\x00"))
		buf := make([]byte, 10)
		w.Read(buf) // mid-stream
		w.Close()
	}
	// Only c is left once the watchers' handlers noticed.
	waitFor(t, func() bool { return connections(t, d) == 1 }, "watch handlers to end after hang-up")
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"after"}`))
}

// connections asks the daemon indirectly: it counts its own open connection fds.
func connections(t testing.TB, d *testDaemon) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	testpolicy.RequireNoError(t, err, "counting connections needs /proc/self/fd")
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	// Each in-process connection is two sockets (ours and the daemon's); the listener one.
	return (n - 1) / 2
}

// waitPhase polls Get until the tenant reaches phase and returns it.
func waitPhase(t *testing.T, c *client, name, phase string) map[string]any {
	t.Helper()
	var tn map[string]any
	waitFor(t, func() bool {
		tn = tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"`+name+`"}`))
		return tn["phase"] == phase
	}, name+" to reach phase "+phase)
	return tn
}

func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestThousandIdleConnections(t *testing.T) {
	d := startDaemon(t)
	conns := make([]net.Conn, 0, 1000)
	for range 1000 {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	c := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"busy"}`))
	// One of the idle connections wakes up and is served too.
	w := &client{t: t, conn: conns[500], r: bufio.NewReader(conns[500])}
	tenantOf(t, w.call("io.bitbuilder.Tenant.Get", `{"name":"busy"}`))
}

func TestConnectionLimit(t *testing.T) {
	d := startDaemon(t, func(c *Config) { c.MaxConnections = 5 })
	var conns []*client
	for range 5 {
		c := dial(t, d.socket)
		c.call("org.varlink.service.GetInfo", "{}")
		conns = append(conns, c)
	}
	extra := dial(t, d.socket)
	extra.conn.Write([]byte(`{"method":"org.varlink.service.GetInfo"}` + "\x00")) // may fail: closed at once
	if _, err := extra.read(); err == nil {
		t.Fatal("connection over the limit was served")
	}
	conns[0].conn.Close()
	waitFor(t, func() bool {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			return false
		}
		defer c.Close()
		cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
		if _, err := c.Write([]byte(`{"method":"org.varlink.service.GetInfo"}` + "\x00")); err != nil {
			return false
		}
		_, err = cl.read()
		return err == nil
	}, "a freed connection slot")
}

func TestGracefulShutdownKeepsData(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	d := startDaemonIn(t, dir, state)
	c := dial(t, d.socket)
	for i := range 10 {
		tenantOf(t, c.call("io.bitbuilder.Tenant.Create", fmt.Sprintf(`{"name":"keep%d"}`, i)))
	}
	d.stop(t)
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
	d2 := startDaemonIn(t, dir, state)
	list := dial(t, d2.socket).callMore("io.bitbuilder.Tenant.List", `{}`)
	if len(list) != 10 {
		t.Fatalf("after restart %d tenants, want 10", len(list))
	}
}

func TestInvalidNamesAreInvalidEverywhere(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	for _, m := range []string{"Get", "Delete", "Start", "Stop", "Update"} {
		wantError(t, c.call("io.bitbuilder.Tenant."+m, `{"name":"a/b"}`), "io.bitbuilder.Tenant.InvalidName", map[string]any{"name": "a/b"})
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"localhost"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)
	wantError(t, c.call("org.varlink.service.GetInterfaceDescription", `{"interface":"io.example.Nope"}`),
		"org.varlink.service.InterfaceNotFound", map[string]any{"interface": "io.example.Nope"})
	if r := c.call("org.varlink.service.GetInterfaceDescription", `{"interface":"io.bitbuilder.Tenant"}`); r.Error != "" || !strings.Contains(fmt.Sprint(r.Parameters["description"]), "interface io.bitbuilder.Tenant") {
		t.Errorf("GetInterfaceDescription: %v", r)
	}
}
