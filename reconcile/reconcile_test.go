package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// fakeHost is a step whose "host" is a map: the end state tests assert on.
type fakeHost struct {
	name  string
	mu    sync.Mutex
	state map[string]int // tenant -> network index it was set up with
	fail  map[string]error
	calls int
}

func newFakeHost(name string) *fakeHost {
	return &fakeHost{name: name, state: map[string]int{}, fail: map[string]error{}}
}

func (f *fakeHost) Name() string { return f.name }

func (f *fakeHost) Ensure(_ context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if err := f.fail[t.Name]; err != nil {
		return nil, err
	}
	f.state[t.Name] = t.NetworkIndex
	return []tenant.Condition{{Type: f.name + "Ready", Status: "true", Reason: "Configured"}}, nil
}

func (f *fakeHost) Teardown(_ context.Context, t *tenant.Tenant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[t.Name]; err != nil {
		return err
	}
	delete(f.state, t.Name)
	return nil
}

func (f *fakeHost) get(name string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.state[name]
	return v, ok
}

func (f *fakeHost) set(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, name)
	} else {
		f.fail[name] = err
	}
}

func (f *fakeHost) removeBehindBack(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.state, name)
}

type env struct {
	svc  *tenant.Service
	host *fakeHost
	ctl  *Controller
	seen chan []string
}

func start(t *testing.T, resync time.Duration) *env {
	t.Helper()
	return startLogged(t, resync, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// startLogged is start with the controller logging to log.
func startLogged(t *testing.T, resync time.Duration, log *slog.Logger) *env {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := tenant.New(tenant.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{svc: svc, host: newFakeHost("Network"), seen: make(chan []string, 100)}
	e.ctl = New(Config{
		Tenants: svc, Store: st, Steps: []Step{e.host},
		Resync: resync, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: log,
		Observer: func(_ context.Context, ts []*tenant.Tenant) error {
			var names []string
			for _, t := range ts {
				names = append(names, t.Name)
			}
			e.seen <- names
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.ctl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCreateConvergesAndDeleteTearsDown(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	a, err := e.svc.Create(ctx, tenant.Spec{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "network set up", func() bool { idx, ok := e.host.get("a"); return ok && idx == a.NetworkIndex })
	eventually(t, "phase ready", func() bool {
		got, _ := e.svc.Get(ctx, "a")
		return got.Phase == tenant.PhaseReady && len(got.Conditions) == 1 && got.Conditions[0].Status == "true"
	})

	if _, err := e.svc.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "record finalized", func() bool { _, err := e.svc.Get(ctx, "a"); return errors.Is(err, tenant.ErrNotFound) })
	if _, ok := e.host.get("a"); ok {
		t.Fatal("host state left after delete")
	}
	// The freed index can be reused.
	b, err := e.svc.Create(ctx, tenant.Spec{Name: "b"})
	if err != nil || b.NetworkIndex != a.NetworkIndex {
		t.Fatalf("index not released: %v %+v", err, b)
	}
}

func TestFailingStepShowsConditionAndRetries(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	e.host.set("a", errors.New("bridge br-tenant-1: operation not permitted"))
	if _, err := e.svc.Create(ctx, tenant.Spec{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "failed phase with the reason", func() bool {
		got, _ := e.svc.Get(ctx, "a")
		return got.Phase == tenant.PhaseFailed && len(got.Conditions) == 1 &&
			got.Conditions[0].Status == "false" && got.Conditions[0].Message != ""
	})
	e.host.set("a", nil) // the cause goes away: backoff retries find it fixed
	eventually(t, "recovered", func() bool {
		got, _ := e.svc.Get(ctx, "a")
		_, ok := e.host.get("a")
		return ok && got.Phase == tenant.PhaseReady
	})
}

func TestFailingTeardownKeepsRecord(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	e.svc.Create(ctx, tenant.Spec{Name: "a"})
	eventually(t, "set up", func() bool { _, ok := e.host.get("a"); return ok })
	e.host.set("a", errors.New("busy"))
	e.svc.Delete(ctx, "a", 0)
	eventually(t, "teardown failure recorded", func() bool {
		got, err := e.svc.Get(ctx, "a")
		return err == nil && got.Phase == tenant.PhaseDeleting && len(got.Conditions) == 1 && got.Conditions[0].Reason == "TeardownFailed"
	})
	e.host.set("a", nil)
	eventually(t, "finalized after retry", func() bool { _, err := e.svc.Get(ctx, "a"); return errors.Is(err, tenant.ErrNotFound) })
}

// TestResyncRestoresWhatWasRemoved removes a settled tenant's host state behind the
// controller's back, with no store change and no event: only the resync can put it back. The
// same removal under a resync of an hour stays removed, so the first case cannot pass through
// a pass that something else caused.
func TestResyncRestoresWhatWasRemoved(t *testing.T) {
	for _, c := range []struct {
		name     string
		resync   time.Duration
		restored bool
	}{
		{"resync every 50ms", 50 * time.Millisecond, true},
		{"resync every hour", time.Hour, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, c.resync)
			ctx := t.Context()
			if _, err := e.svc.Create(ctx, tenant.Spec{Name: "a"}); err != nil {
				t.Fatal(err)
			}
			// Settled: ready (a status write causes no pass).
			eventually(t, "settled", func() bool {
				got, _ := e.svc.Get(ctx, "a")
				e.host.mu.Lock()
				defer e.host.mu.Unlock()
				return got.Phase == tenant.PhaseReady && e.host.calls >= 1
			})
			before, _ := e.svc.Get(ctx, "a")
			e.host.removeBehindBack("a")
			if c.restored {
				eventually(t, "put back", func() bool { _, ok := e.host.get("a"); return ok })
			} else {
				time.Sleep(300 * time.Millisecond)
				if _, ok := e.host.get("a"); ok {
					t.Fatal("put back without a resync: a pass ran that the removal did not cause")
				}
			}
			if after, _ := e.svc.Get(ctx, "a"); after.Revision != before.Revision {
				t.Errorf("the store changed (revision %d -> %d): a store event, not the resync, may have caused the pass", before.Revision, after.Revision)
			}
		})
	}
}

func TestIdempotentNoStatusChurn(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	e.svc.Create(ctx, tenant.Spec{Name: "a"})
	eventually(t, "ready", func() bool { got, _ := e.svc.Get(ctx, "a"); return got.Phase == tenant.PhaseReady })
	before, _ := e.svc.Get(ctx, "a")
	for range 3 {
		if _, err := e.ctl.Reconcile(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := e.svc.Get(ctx, "a")
	if after.Revision != before.Revision {
		t.Fatalf("reconciling an unchanged tenant wrote it again: revision %d -> %d", before.Revision, after.Revision)
	}
}

func TestObserverSeesTheSet(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	e.svc.Create(ctx, tenant.Spec{Name: "a"})
	e.svc.Create(ctx, tenant.Spec{Name: "b"})
	deadline := time.After(5 * time.Second)
	for {
		select {
		case names := <-e.seen:
			if len(names) == 2 {
				return
			}
		case <-deadline:
			t.Fatal("observer never saw both tenants")
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	prev := time.Duration(0)
	for n := 1; n <= 10; n++ {
		d := backoff(n, lo, hi)
		if d < prev && d < hi || d > hi+hi/10 {
			t.Errorf("backoff(%d) = %v after %v", n, d, prev)
		}
		prev = d
	}
}

// A pass's own status write does not cause another pass (it would compute the same status);
// a change of what the tenant should be does.
func TestStatusWriteCausesNoPass(t *testing.T) {
	e := start(t, time.Hour)
	ctx := t.Context()
	if _, err := e.svc.Create(ctx, tenant.Spec{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", func() bool { got, _ := e.svc.Get(ctx, "a"); return got.Phase == tenant.PhaseReady })
	time.Sleep(200 * time.Millisecond)
	if n := e.ctl.Passes("a"); n != 1 {
		t.Fatalf("%d passes after a create and its status write, want 1", n)
	}
	if _, err := e.svc.Update(ctx, "a", 0, tenant.Changes{Parameters: &map[string]string{"K": "v"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a pass for the update", func() bool { return e.ctl.Passes("a") == 2 })
}
