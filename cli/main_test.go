package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/daemon"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// execEnv, when set in the environment, makes the test binary act as bbctl (see
// TestPermissions, which runs it as an unprivileged user).
const execEnv = "BBCTL_TEST_AS_BBCTL"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		os.Exit(Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// ageOffset puts the tests' clock far after every record's creation, so that ages print
// as a stable "400d" in golden files.
const ageOffset = 400 * 24 * time.Hour

// testDaemon is a real bitbuilderd serving on a unix socket in a temporary directory.
type testDaemon struct {
	dir    string
	socket string
	addr   string
}

// startDaemon runs the daemon in-process until the test ends; opts change its Config (for
// example to add reconciler steps).
func startDaemon(t *testing.T, opts ...func(*daemon.Config)) *testDaemon {
	t.Helper()
	d, _ := startDaemonIn(t, t.TempDir(), opts...)
	return d
}

// startDaemonIn runs the daemon with its socket and state in dir until stop is called or the
// test ends; a daemon started again in the same dir has the same socket and state (a restart).
func startDaemonIn(t *testing.T, dir string, opts ...func(*daemon.Config)) (d *testDaemon, stop func()) {
	t.Helper()
	d = &testDaemon{dir: dir, socket: filepath.Join(dir, "io.bitbuilder")}
	d.addr = "unix:" + d.socket
	l, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cfg := daemon.Config{
		StateDir: filepath.Join(dir, "state"),
		Listener: l,
		Ready:    ready,
		NoSync:   true,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	go func() {
		done <- daemon.Run(ctx, cfg)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not become ready")
	}
	return d, stop
}

// result is what one bbctl invocation did.
type result struct {
	stdout, stderr string
	code           int
}

// bbctl runs bbctl in-process with BITBUILDER_ADDRESS set to addr.
func bbctl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return bbctlCtx(t.Context(), addr, args...)
}

func bbctlCtx(ctx context.Context, addr string, args ...string) result {
	var out, errb bytes.Buffer
	app := testApp(addr, &out, &errb)
	code := app.Run(ctx, args)
	return result{out.String(), errb.String(), code}
}

func testApp(addr string, stdout, stderr io.Writer) *App {
	return &App{
		Stdin:  bytes.NewReader(nil),
		Stdout: stdout,
		Stderr: stderr,
		Getenv: func(k string) string {
			if k == "BITBUILDER_ADDRESS" {
				return addr
			}
			return ""
		},
		Now:              func() time.Time { return time.Now().Add(ageOffset) },
		StderrIsTerminal: func() bool { return false },
		Version:          "test",
	}
}

// mustRun runs bbctl and fails the test unless it exits 0.
func mustRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := bbctl(t, addr, args...)
	if r.code != 0 {
		t.Fatalf("bbctl %q: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout
}

var (
	timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+`)
	commit    = regexp.MustCompile(`\b[0-9a-f]{12}([0-9a-f]{28})?\b`)
)

// golden compares got with testdata/name, after replacing timestamps and commit hashes (which
// change with the example templates); -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = timestamp.ReplaceAllString(got, "<TIME>")
	got = commit.ReplaceAllString(got, "<COMMIT>")
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}
