package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// testIface is a small served interface: Get and Sleep need Read, Create needs Write.
type testIface struct{}

func (testIface) VarlinkGetName() string { return "org.example.limits" }

func (testIface) VarlinkGetDescription() string {
	return `interface org.example.limits

# Reads.
method Get() -> (ok: bool)

# Changes.
method Create() -> (ok: bool)

# Answers after ms milliseconds.
method Sleep(ms: int) -> (ok: bool)

# Answers n (Quick).
method Echo(n: int) -> (n: int)
`
}

func (testIface) VarlinkDispatch(ctx context.Context, c varlink.Call, method string) error {
	if method == "Echo" {
		var in struct {
			N int `json:"n"`
		}
		if err := c.GetParameters(&in); err != nil {
			return err
		}
		return c.Reply(ctx, in)
	}
	if method == "Sleep" {
		var in struct {
			Ms int `json:"ms"`
		}
		if err := c.GetParameters(&in); err != nil {
			return err
		}
		select {
		case <-time.After(time.Duration(in.Ms) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return c.Reply(ctx, map[string]bool{"ok": true})
}

// testServer serves testIface on a socket any uid may connect to (authorization is the
// server's, by SO_PEERCRED) and on a read-only one, in a directory any uid may enter.
type testServer struct {
	*Server
	socket, roSocket string
	logs             *countingHandler
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "bbrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logs := &countingHandler{}
	cfg.Vendor, cfg.Product, cfg.Version, cfg.URL = "test", "test", "1", "https://example.org"
	cfg.AdminGroup = -1
	cfg.Logger = slog.New(logs)
	cfg.Interfaces = []Interface{{Dispatcher: testIface{}, Methods: map[string]Method{
		"Get": {Access: Read}, "Sleep": {Access: Read}, "Create": {Access: Write}, "Echo": {Access: Read, Quick: true},
	}}}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, socket: filepath.Join(dir, "rw"), roSocket: filepath.Join(dir, "ro"), logs: logs}
	l, err := Listen(ts.socket, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	lro, err := Listen(ts.roSocket, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Serve(ctx, l) }()
	go func() { defer wg.Done(); s.ServeReadOnly(ctx, lro) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ts
}

func (s *testServer) connections(uid uint32) (total, ofUID int) {
	s.admission.mu.Lock()
	defer s.admission.mu.Unlock()
	return s.admission.total, s.admission.perUID[uid]
}

// countingHandler counts the records logged at Warn and above.
type countingHandler struct{ warn atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warn.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

type testClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialTest(t *testing.T, socket string) *testClient {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{t: t, conn: c, r: bufio.NewReader(c)}
}

type testReply struct {
	Parameters map[string]any `json:"parameters"`
	Error      string         `json:"error"`
}

// call sends one call and reads its reply; err is the connection's failure.
func (c *testClient) call(method, params string) (testReply, error) {
	msg := `{"method":"` + method + `","parameters":` + params + "}\x00"
	if _, err := c.conn.Write([]byte(msg)); err != nil {
		return testReply{}, err
	}
	return c.read(10 * time.Second)
}

func (c *testClient) read(timeout time.Duration) (testReply, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := c.r.ReadBytes(0)
	if err != nil {
		return testReply{}, err
	}
	var r testReply
	if err := json.Unmarshal(b[:len(b)-1], &r); err != nil {
		c.t.Fatalf("reply %q: %v", b, err)
	}
	return r, nil
}

func (c *testClient) mustCall(method, params string) testReply {
	c.t.Helper()
	r, err := c.call(method, params)
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	return r
}

// closedWithin waits until the server closes c and says after how long.
func (c *testClient) closedWithin(limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	c.conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c.conn)
	return time.Since(start), err == nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireRoot skips a test that must run clients as other uids (or fails it, under testpolicy's rule).
func requireRoot(t *testing.T) {
	t.Helper()
	testpolicy.RequireRoot(t, "to run clients as other uids")
}

// hostile runs testdata/hostile as uid (and gid) and returns once its connects were tried;
// its connections stay open until stop is called or the test ends. stop returns how many
// calls its info connections got answered. See testdata/hostile for the kinds.
func hostile(t *testing.T, uid uint32, socket string, n int, kinds string, size int) (stop func() int) {
	t.Helper()
	dir, err := os.MkdirTemp("", "bbhostile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "hostile")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/hostile").CombinedOutput(); err != nil {
		t.Fatalf("build the hostile client: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-socket", socket, "-n", strconv.Itoa(n), "-kinds", kinds, "-size", strconv.Itoa(size))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	stop = sync.OnceValue(func() int {
		stdin.Close()
		line, _ := out.ReadString('\n')
		cmd.Wait()
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "answered ")))
		return n
	})
	t.Cleanup(func() { stop() })
	line, err := out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("hostile client as uid %d: %q, %v\n%s", uid, line, err, stderr.Bytes())
	}
	return stop
}

// TestRootIsNotLockedOut: one unprivileged uid opens more idle connections than the server
// takes. Root still gets in (the reserve), as a boot unit calling Tenant.Start must; other
// users do not.
func TestRootIsNotLockedOut(t *testing.T) {
	requireRoot(t)
	s := startServer(t, Config{MaxConnections: 40, RootReserve: 4, MaxConnectionsPerUID: 1000})
	hostile(t, 65534, s.socket, 100, "idle,partial", 0)
	waitFor(t, "100 connections accepted or refused", func() bool { return s.refused.Load() == 64 })
	if total, nobody := s.connections(65534); total != 36 || nobody != 36 {
		t.Fatalf("%d connections, %d of uid 65534; want 36 and 36", total, nobody)
	}

	// Root can take every slot of its reserve, and is served on each.
	for i := range 4 {
		if r := dialTest(t, s.socket).mustCall("org.example.limits.Create", "{}"); r.Error != "" {
			t.Fatalf("root connection %d: %v", i, r)
		}
	}
	// Another unprivileged uid cannot use the reserve.
	hostile(t, 65533, s.socket, 1, "idle", 0)
	waitFor(t, "the other uid refused", func() bool { return s.refused.Load() == 65 })
	if _, other := s.connections(65533); other != 0 {
		t.Errorf("uid 65533 got %d connections out of root's reserve", other)
	}
	// Refusals were logged, but not each one.
	if n := s.logs.warn.Load(); n == 0 || n > logBurst {
		t.Errorf("%d warnings for 65 refusals, want 1..%d", n, logBurst)
	}
}

// TestConnectionsPerUID: one uid gets MaxConnectionsPerUID connections, another uid its own.
func TestConnectionsPerUID(t *testing.T) {
	requireRoot(t)
	s := startServer(t, Config{MaxConnections: 100, MaxConnectionsPerUID: 10})
	hostile(t, 65534, s.socket, 30, "idle", 0)
	waitFor(t, "30 connections accepted or refused", func() bool { return s.refused.Load() == 20 })
	if _, n := s.connections(65534); n != 10 {
		t.Fatalf("uid 65534 has %d connections, want 10", n)
	}
	hostile(t, 65533, s.roSocket, 5, "idle", 0)
	waitFor(t, "uid 65533's connections", func() bool { _, n := s.connections(65533); return n == 5 })
	if r := dialTest(t, s.socket).mustCall("org.example.limits.Get", "{}"); r.Error != "" {
		t.Fatalf("root: %v", r)
	}
	if got := s.refused.Load(); got != 20 {
		t.Errorf("%d refused, want 20", got)
	}
}

// TestRefusalsAreLoggedAtABoundedRate: a flood of refused connections logs a few lines, not
// one each.
func TestRefusalsAreLoggedAtABoundedRate(t *testing.T) {
	s := startServer(t, Config{MaxConnections: 2, RootReserve: -1})
	for range 2 {
		dialTest(t, s.socket).mustCall("org.example.limits.Get", "{}")
	}
	for range 300 {
		c, err := net.Dial("unix", s.socket)
		if err == nil {
			c.Close()
		}
	}
	waitFor(t, "300 refusals", func() bool { return s.refused.Load() == 300 })
	if n := s.logs.warn.Load(); n == 0 || n > logBurst {
		t.Errorf("%d warnings for 300 refusals, want 1..%d", n, logBurst)
	}
}

// TestHalfSentMessageIsClosed: a message that does not end within MessageTimeout closes its
// connection, even when bytes keep trickling in; one that ends in time is served.
func TestHalfSentMessageIsClosed(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := startServer(t, Config{MessageTimeout: timeout, IdleTimeout: time.Minute})

	half := dialTest(t, s.socket)
	half.conn.Write([]byte(`{"method":"org.example.limits.Get","parameters":{`))
	if d, closed := half.closedWithin(5 * time.Second); !closed || d < timeout-50*time.Millisecond {
		t.Errorf("half-sent message: closed %v after %v, want closed after %v", closed, d, timeout)
	}

	trickle := dialTest(t, s.socket)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if _, err := trickle.conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	trickle.conn.Write([]byte(`{"method":"org.example.limits.Get",`))
	if d, closed := trickle.closedWithin(5 * time.Second); !closed || d > 5*timeout {
		t.Errorf("trickled message: closed %v after %v, want closed after about %v", closed, d, timeout)
	}

	slow := dialTest(t, s.socket)
	slow.conn.Write([]byte(`{"method":"org.example.limits.Get",`))
	time.Sleep(timeout / 3)
	slow.conn.Write([]byte(`"parameters":{}}` + "\x00"))
	if r, err := slow.read(5 * time.Second); err != nil || r.Error != "" {
		t.Errorf("message finished in time: %v, %v", r, err)
	}
}

// TestIdleConnectionIsClosed: a connection with no call running is closed after IdleTimeout;
// a running call keeps it, and the clock starts when the call is answered.
func TestIdleConnectionIsClosed(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := startServer(t, Config{IdleTimeout: idle})

	if d, closed := dialTest(t, s.socket).closedWithin(5 * time.Second); !closed || d < idle-50*time.Millisecond {
		t.Errorf("idle connection: closed %v after %v, want closed after %v", closed, d, idle)
	}

	busy := dialTest(t, s.socket)
	if r := busy.mustCall("org.example.limits.Sleep", `{"ms":1000}`); r.Error != "" {
		t.Fatalf("a call longer than the idle timeout: %v", r)
	}
	if d, closed := busy.closedWithin(5 * time.Second); !closed || d < idle-50*time.Millisecond {
		t.Errorf("after its call: closed %v after %v, want closed after %v", closed, d, idle)
	}

	active := dialTest(t, s.socket)
	for range 10 {
		if r := active.mustCall("org.example.limits.Get", "{}"); r.Error != "" {
			t.Fatal(r)
		}
		time.Sleep(idle / 4)
	}
}

// heapSampler records the peak of HeapInuse while it runs.
type heapSampler struct {
	base, peak uint64
	stop       chan struct{}
	done       chan struct{}
}

func sampleHeap() *heapSampler {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h := &heapSampler{base: m.HeapInuse, peak: m.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			select {
			case <-h.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			h.peak = max(h.peak, m.HeapInuse)
		}
	}()
	return h
}

// growth stops sampling and returns the peak over the base.
func (h *heapSampler) growth() uint64 {
	close(h.stop)
	<-h.done
	return h.peak - h.base
}

// TestBufferedBytesAreBounded: 64 connections each sending a message of almost the largest
// size without its end, then 16 sending such messages complete and costly to decode, then 16
// sending calls that pass the check and whose error reply repeats them, without reading the
// replies, hold no more than MaxBufferedBytes less root's share in the server, and the heap
// grows accordingly. What the budget refuses is closed, and root can still make a call of
// the largest size.
func TestBufferedBytesAreBounded(t *testing.T) {
	requireRoot(t)
	const msg = 1 << 20
	limit := 2 * CallCost(msg)
	reserve := CallCost(msg)
	s := startServer(t, Config{MaxMessageSize: msg, MaxBufferedBytes: limit, MessageTimeout: 5 * time.Second})

	idle := func() {
		waitFor(t, "the hostile connections gone", func() bool {
			total, _ := s.connections(0)
			return total == 0 && s.buf.used.Load() == 0
		})
	}
	heap := sampleHeap()
	stop := hostile(t, 65534, s.socket, 64, "flood", msg-100)
	waitFor(t, "the floods beyond the limit refused", func() bool {
		_, n := s.connections(65534)
		return n <= limit/msg
	})
	time.Sleep(200 * time.Millisecond)
	// The floods hold all that unprivileged users may: small calls of another uid are
	// answered all the same (each connection's own allowance).
	info := hostile(t, 65531, s.socket, 4, "info", 0)
	time.Sleep(300 * time.Millisecond)
	if n := info(); n == 0 {
		t.Error("no small call of another uid was answered while the floods held the buffer limit")
	}
	floodGrowth := heap.growth()
	stop()
	idle()

	// Alone, an unprivileged caller's calls of the largest size are answered, one after the
	// other, although its connection reads ahead into the next.
	before := s.calls.Load()
	stop = hostile(t, 65530, s.socket, 1, "name", msg-100)
	waitFor(t, "an unprivileged call of the largest size answered", func() bool { return s.calls.Load() >= before+2 })
	stop()
	idle()
	if peak := s.buf.peak.Load(); peak > int64(limit-reserve) {
		t.Errorf("%d bytes charged at the peak, over the %d unprivileged users may have", peak, limit-reserve)
	}

	heap = sampleHeap()
	stop = hostile(t, 65533, s.socket, 16, "call", msg-100)
	time.Sleep(time.Second)
	callGrowth := heap.growth()
	stop()
	idle()

	heap = sampleHeap()
	hostile(t, 65532, s.socket, 16, "name", msg-100)
	time.Sleep(time.Second)
	echoGrowth := heap.growth()
	if peak := s.buf.peak.Load(); peak > int64(limit-reserve) {
		t.Errorf("%d bytes charged at the peak, over the %d unprivileged users may have", peak, limit-reserve)
	}
	t.Logf("heap growth: %d KiB under 64 floods, %d KiB under 16 costly calls, %d KiB under 16 echoed calls; budget %d KiB, peak charged %d KiB",
		floodGrowth>>10, callGrowth>>10, echoGrowth>>10, limit>>10, s.buf.peak.Load()>>10)
	// Beyond what is charged: buffers given up as they grew and the library's pooled encoder
	// buffers (garbage until the next GC), the pooled read chunks. The collector lets the heap
	// reach about twice what is live; when it runs is up to the machine's load, so a quarter more
	// is allowed before the test calls the bound broken (a broken bound grows with the floods'
	// 64 x 8 MiB, far beyond).
	for name, g := range map[string]uint64{"floods": floodGrowth, "calls": callGrowth, "echoed calls": echoGrowth} {
		if g > uint64(2*limit+limit/2) {
			t.Errorf("heap grew by %d KiB under the %s, want at most %d KiB", g>>10, name, (2*limit+limit/2)>>10)
		}
	}

	// Root's share of the budget is free: a call of the largest size gets its answer.
	root := dialTest(t, s.socket)
	big := fmt.Sprintf(`{"method":"org.example.limits.Get","parameters":{}%s}`, strings.Repeat(" ", msg-100))
	if _, err := root.conn.Write(append([]byte(big), 0)); err != nil {
		t.Fatal(err)
	}
	if r, err := root.read(10 * time.Second); err != nil || r.Error != "" {
		t.Errorf("root's call of %d bytes under the flood: %v, %v", len(big), r, err)
	}
}

// TestReadOnlySocket: on the read-only socket Read methods are served and others refused with
// PermissionDenied even for root, who may call them on the main socket.
func TestReadOnlySocket(t *testing.T) {
	s := startServer(t, Config{})
	ro := dialTest(t, s.roSocket)
	if r := ro.mustCall("org.example.limits.Get", "{}"); r.Error != "" {
		t.Errorf("Get on the read-only socket: %v", r)
	}
	if r := ro.mustCall("org.varlink.service.GetInfo", "{}"); r.Error != "" {
		t.Errorf("GetInfo on the read-only socket: %v", r)
	}
	if r := ro.mustCall("org.example.limits.Create", "{}"); r.Error != "org.varlink.service.PermissionDenied" {
		t.Errorf("Create on the read-only socket: %v, want PermissionDenied", r)
	}
	if os.Getuid() == 0 {
		if r := dialTest(t, s.socket).mustCall("org.example.limits.Create", "{}"); r.Error != "" {
			t.Errorf("root's Create on the main socket: %v", r)
		}
	}
}

// TestConnectionEndReturnsItsBytes: whatever a connection held (a partial message, calls
// read ahead) goes back to the budget when it ends.
func TestConnectionEndReturnsItsBytes(t *testing.T) {
	s := startServer(t, Config{})
	c := dialTest(t, s.socket)
	var pipelined []byte
	for range 100 {
		pipelined = append(pipelined, `{"method":"org.example.limits.Sleep","parameters":{"ms":50}}`+"\x00"...)
	}
	pipelined = append(pipelined, `{"method":"org.example.limits.Get","parameters":{`...)
	c.conn.Write(pipelined)
	waitFor(t, "bytes held", func() bool { return s.buf.used.Load() > 0 })
	c.conn.Close()
	waitFor(t, "the connection's bytes given back", func() bool {
		total, _ := s.connections(0)
		return s.buf.used.Load() == 0 && total == 0
	})
}
