package testhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// Start boots a test host for t and registers t.Cleanup to stop it (a failure to clean up fails t). It skips t
// when the machine cannot run hosts: not root, or the rootfs not built (set BITBUILDER_TESTHOST_BUILD=1 to let it
// build, BITBUILDER_TESTHOST_REQUIRE=1 to fail instead of skipping). A boot failure fails t with the console and
// journal tail. Unless opts.Logger is set, progress goes to the test log.
func Start(t testing.TB, opts Options) *Host {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	h, err := New(t.Context(), opts)
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Errorf("testhost: stop %s: %v", h.Name(), err)
		}
	})
	return h
}

// skipOrFatal skips t when err says the machine cannot run hosts (not root, no rootfs), or fails it under
// BITBUILDER_TESTHOST_REQUIRE=1 (testpolicy's rule); any other error fails t.
func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotRoot) || errors.Is(err, ErrNoRootfs) {
		testpolicy.Require(t, false, err.Error())
	}
	t.Fatal(err)
}

// requireHost skips t (or fails it, like skipOrFatal) when the machine cannot boot a test host.
func requireHost(t testing.TB) {
	t.Helper()
	testpolicy.RequireRoot(t, "to boot a host")
	if _, err := LocateRootfs(t.Context(), false); err != nil {
		skipOrFatal(t, err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Shared is one host shared by all tests of a package, booted by the first test that asks for it and stopped
// after the last. Declare it in the test package and hand TestMain to Main:
//
//	var shared = &testhost.Shared{Options: testhost.Options{Name: "netns"}}
//
//	func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		h := shared.Host(t) // skips like Start when the machine cannot run hosts
//		...
//	}
//
// Tests sharing a host must clean up what they make in it (or use distinct names).
type Shared struct {
	Options Options

	once sync.Once
	host *Host
	err  error
}

// Host returns the shared host, booting it on first use. It skips or fails t like Start.
func (s *Shared) Host(t testing.TB) *Host {
	t.Helper()
	s.once.Do(func() {
		opts := s.Options
		if opts.Logger == nil {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		timeout := opts.BootTimeout
		if timeout == 0 {
			timeout = DefaultBootTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
		defer cancel()
		s.host, s.err = New(ctx, opts)
	})
	if s.err != nil {
		skipOrFatal(t, s.err)
	}
	select {
	case <-s.host.Done():
		t.Fatalf("testhost: the shared host %s is down (an earlier test stopped it or powered it off)", s.host.Name())
	default:
	}
	return s.host
}

// Stop stops the shared host if it was booted.
func (s *Shared) Stop() error {
	if s.host == nil {
		return nil
	}
	return s.host.Stop()
}

// Main runs the tests and then stops the shared host; a failure to stop it turns a passing run into exit code 1.
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testhost: stop shared host: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
