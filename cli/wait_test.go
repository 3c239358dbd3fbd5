package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
	"github.com/bitbuilder/bitbuilder/daemon"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// snap is a snapshot of tenant acme.
func snap(phase, desired string, ms ...vt.Machine) *vt.Tenant {
	return &vt.Tenant{Name: "acme", Phase: vt.Phase(phase), DesiredState: vt.DesiredState(desired), Machines: ms}
}

func mach(name, desired string, st *vt.MachineStatus) vt.Machine {
	return vt.Machine{Name: name, MachineName: "acme-" + name, Kind: "container", Template: "web", DesiredState: vt.DesiredState(desired), Status: st}
}

func mstatus(state string, generation int64, message string, addrs ...string) *vt.MachineStatus {
	st := &vt.MachineStatus{State: vt.MachineState(state), Addresses: append([]string{}, addrs...), Unit: "bitbuilder-machine@acme-web.service",
		RestartGeneration: generation, Since: "2026-11-28T11:59:00Z"}
	if message != "" {
		st.Message = &message
	}
	return st
}

func withConditions(t *vt.Tenant, cs ...vt.Condition) *vt.Tenant {
	t.Conditions = cs
	return t
}

// TestGoals runs each wait's goal over a sequence of tenant snapshots (the first is the
// call's reply, the rest what Tenant.Watch would stream; nil is a deleted event) and checks
// at which snapshot the wait ends, and how.
func TestGoals(t *testing.T) {
	broken := vt.Condition{Type: "NetworkReady", Status: "false", Reason: "Failed", Message: "bridge br-tenant-3: file exists"}
	cases := []struct {
		name    string
		goal    goal
		snaps   []*vt.Tenant
		endAt   int    // index of the snapshot that ends the wait; -1: it goes on
		failure string // a substring of the failure; "" for success
		pending string // with endAt -1: a substring of what is still pending
	}{
		{"create: ready once the phase is ready and the machines run", tenantReady, []*vt.Tenant{
			snap("pending", "running", mach("web", "running", nil)),
			snap("provisioning", "running", mach("web", "running", nil)),
			snap("degraded", "running", mach("web", "running", nil)),
			snap("ready", "running", mach("web", "running", nil)),
			snap("ready", "running", mach("web", "running", mstatus("starting", 0, ""))),
			snap("ready", "running", mach("web", "running", mstatus("running", 0, "", "10.3.0.101"))),
		}, 5, "", ""},
		{"start: machines that should not run are not waited for", tenantReady, []*vt.Tenant{
			snap("ready", "running", mach("db", "stopped", nil), mach("old", "stopped", mstatus("failed", 0, "exited"))),
		}, 0, "", ""},
		{"start: degraded keeps waiting", tenantReady, []*vt.Tenant{
			snap("provisioning", "running"),
			withConditions(snap("degraded", "running"), broken),
			withConditions(snap("degraded", "running"), broken),
		}, -1, "", "phase degraded, not ready"},
		{"start: phase failed fails with the conditions' messages", tenantReady, []*vt.Tenant{
			snap("provisioning", "running"),
			withConditions(snap("failed", "running"), vt.Condition{Type: "UnitsInstalled", Status: "true"}, broken),
		}, 1, "failed: NetworkReady: bridge br-tenant-3: file exists", ""},
		{"start: a machine that fails fails the wait with its message", tenantReady, []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("starting", 0, ""))),
			snap("ready", "running", mach("web", "running", mstatus("failed", 0, "nspawn exited with status 1"))),
		}, 1, "machine web failed: nspawn exited with status 1", ""},
		{"start: a machine starting for too long is named with its message", tenantReady, []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("starting", 0, "waiting for the network"))),
		}, -1, "", "machine web is starting, not running: waiting for the network"},
		{"start: deleted meanwhile", tenantReady, []*vt.Tenant{snap("provisioning", "running"), nil}, 1, "it was deleted", ""},
		{"start: being deleted", tenantReady, []*vt.Tenant{snap("provisioning", "running"), snap("deleting", "running")}, 1, "it is being deleted", ""},
		{"start: stopped meanwhile", tenantReady, []*vt.Tenant{snap("provisioning", "running"), snap("provisioning", "stopped")}, 1, "desired state changed to stopped", ""},
		{"stop: stopped once the phase is stopped and every machine stopped", tenantStopped, []*vt.Tenant{
			snap("ready", "stopped", mach("web", "running", mstatus("running", 0, "", "10.3.0.101")), mach("db", "stopped", nil)),
			snap("stopping", "stopped", mach("web", "running", mstatus("stopping", 0, "")), mach("db", "stopped", nil)),
			snap("stopped", "stopped", mach("web", "running", mstatus("stopping", 0, "")), mach("db", "stopped", nil)),
			snap("stopped", "stopped", mach("web", "running", mstatus("stopped", 0, "")), mach("db", "stopped", nil)),
		}, 3, "", ""},
		{"stop: pending names the machine", tenantStopped, []*vt.Tenant{
			snap("stopped", "stopped", mach("web", "running", mstatus("stopping", 0, ""))),
		}, -1, "", "machine web is stopping, not stopped"},
		{"stop: a machine that fails fails the wait", tenantStopped, []*vt.Tenant{
			snap("stopping", "stopped", mach("web", "running", mstatus("failed", 0, "unit failed"))),
		}, 0, "machine web failed: unit failed", ""},
		{"delete: gone at the deleted event", tenantGone, []*vt.Tenant{
			snap("deleting", "running"),
			withConditions(snap("deleting", "running"), vt.Condition{Type: "Deleted", Status: "false", Reason: "TeardownFailed", Message: "busy"}),
			nil,
		}, 2, "", ""},
		{"machine start: running", machinesReach([]machineTarget{{name: "web", state: "running"}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("stopped", 0, ""))),
			snap("ready", "running", mach("web", "running", mstatus("starting", 0, ""))),
			snap("ready", "running", mach("web", "running", mstatus("running", 0, "", "10.3.0.101"))),
		}, 2, "", ""},
		{"machine start: of a stopped tenant cannot succeed", machinesReach([]machineTarget{{name: "web", state: "running"}}), []*vt.Tenant{
			snap("stopped", "stopped", mach("web", "running", nil)),
		}, 0, "the tenant is stopped", ""},
		{"machine stop: a machine never seen counts as stopped", machinesReach([]machineTarget{{name: "web", state: "stopped"}, {name: "db", state: "stopped"}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "stopped", mstatus("running", 0, "")), mach("db", "stopped", nil)),
			snap("ready", "running", mach("web", "stopped", mstatus("stopped", 0, "")), mach("db", "stopped", nil)),
		}, 1, "", ""},
		{"machine restart: a failure from before the restart is not final", machinesReach([]machineTarget{{name: "web", state: "running", generation: 2}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("failed", 1, "out of memory"))),
			snap("ready", "running", mach("web", "running", mstatus("starting", 2, ""))),
			snap("ready", "running", mach("web", "running", mstatus("running", 2, "", "10.3.0.101"))),
		}, 2, "", ""},
		{"machine restart: running at the old generation is not restarted", machinesReach([]machineTarget{{name: "web", state: "running", generation: 2}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("running", 1, ""))),
		}, -1, "", "not restarted yet (generation 1 of 2)"},
		{"machine restart: failing after the restart fails", machinesReach([]machineTarget{{name: "web", state: "running", generation: 2}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "running", mstatus("running", 1, ""))),
			snap("ready", "running", mach("web", "running", mstatus("failed", 2, "vmspawn exited with status 1"))),
		}, 1, "machine web failed: vmspawn exited with status 1", ""},
		{"machine: removed meanwhile", machinesReach([]machineTarget{{name: "web", state: "running"}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "running", nil)),
			snap("ready", "running"),
		}, 1, "machine web was removed", ""},
		{"machine: stopped by someone else meanwhile", machinesReach([]machineTarget{{name: "web", state: "running"}}), []*vt.Tenant{
			snap("ready", "running", mach("web", "stopped", nil)),
		}, 0, "desired state of machine web changed to stopped", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWaiter("acme", c.goal, nil)
			end := -1
			for i, s := range c.snaps {
				if i == 0 {
					w.start(s)
					if w.done() || w.failure != "" {
						end = 0
						break
					}
					continue
				}
				if w.see(s) {
					end = i
					break
				}
			}
			if end != c.endAt {
				t.Fatalf("the wait ended at snapshot %d, want %d (pending %q, failure %q)", end, c.endAt, w.pending, w.failure)
			}
			switch {
			case c.failure != "" && !strings.Contains(w.failure, c.failure):
				t.Errorf("failure %q, want %q", w.failure, c.failure)
			case c.failure == "" && w.failure != "":
				t.Errorf("failed: %q", w.failure)
			case c.endAt < 0 && !strings.Contains(strings.Join(w.pending, "; "), c.pending):
				t.Errorf("pending %q, want %q", w.pending, c.pending)
			}
		})
	}
}

// TestWaiterLines feeds a waiter the snapshots a Watch stream would send and checks the
// progress lines: one per change of the phase, a condition's status or a machine's state,
// none for the starting snapshot and none for a snapshot that changes nothing shown.
func TestWaiterLines(t *testing.T) {
	var b bytes.Buffer
	w := newWaiter("acme", tenantReady, &b)
	cond := func(typ, status, reason, msg string) vt.Condition {
		return vt.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
	}
	w.start(snap("pending", "running", mach("web", "running", nil)))
	steps := []*vt.Tenant{
		withConditions(snap("provisioning", "running", mach("web", "running", nil)), cond("NetworkReady", "unknown", "", "")),
		withConditions(snap("degraded", "running", mach("web", "running", mstatus("starting", 0, ""))),
			cond("NetworkReady", "false", "LinkFailed", "vx-tenant-3: operation not supported")),
		withConditions(snap("ready", "running", mach("web", "running", mstatus("starting", 0, ""))), cond("NetworkReady", "true", "Configured", "")),
		withConditions(snap("ready", "running", mach("web", "running", mstatus("running", 0, "", "10.3.0.101"))), cond("NetworkReady", "true", "Configured", "")),
	}
	for i, s := range steps {
		if over := w.see(s); over != (i == len(steps)-1) {
			t.Fatalf("snapshot %d: over %v (pending %q, failure %q)", i, over, w.pending, w.failure)
		}
	}
	want := `acme: phase provisioning
acme: condition NetworkReady unknown
acme: phase degraded
acme: condition NetworkReady false (LinkFailed: vx-tenant-3: operation not supported)
acme: machine web starting
acme: phase ready
acme: condition NetworkReady true
acme: machine web running (10.3.0.101)
`
	if b.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	w = newWaiter("acme", machinesReach([]machineTarget{{name: "web", state: "running", generation: 1}}), &b)
	w.start(snap("ready", "running", mach("web", "running", mstatus("running", 0, "", "10.3.0.101"))))
	w.see(snap("ready", "running", mach("web", "running", mstatus("running", 1, "", "10.3.0.101"))))
	if want := "acme: machine web running (10.3.0.101)\n"; b.String() != want || !w.done() {
		t.Errorf("a restart carried out without a visible change of state: %q, done %v; want %q", b.String(), w.done(), want)
	}
}

// brokenStep is a reconciler step that fails for tenants whose name starts with "broken",
// so that the daemon reports them as failed.
type brokenStep struct{}

var _ reconcile.Step = brokenStep{}

func (brokenStep) Name() string { return "Broken" }

func (brokenStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	if strings.HasPrefix(t.Name, "broken") {
		return nil, errors.New("the test says no")
	}
	return nil, nil
}

func (brokenStep) Teardown(ctx context.Context, t *tenant.Tenant) error { return nil }

func withBrokenStep(cfg *daemon.Config) { cfg.Steps = append(cfg.Steps, brokenStep{}) }

// bbctlGrace runs bbctl with App.FailGrace set.
func bbctlGrace(t *testing.T, addr string, grace time.Duration, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	app := testApp(addr, &out, &errb)
	app.FailGrace = grace
	code := app.Run(t.Context(), args)
	return result{out.String(), errb.String(), code}
}

// TestWaitEndToEnd runs --wait against the in-process daemon. Its reconciler runs no host
// steps, so tenants become ready or stopped at once; a test step makes tenants named
// broken* fail. The daemon observes no machines, so their states are covered by TestGoals.
func TestWaitEndToEnd(t *testing.T) {
	d := startDaemon(t, withBrokenStep)
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"create --wait returns when ready", []string{"tenant", "create", "a", "--wait", "--timeout", "10s"}, 0,
			[]string{`tenant "a" created`, `tenant "a": desired state running, phase ready`}, []string{"a: phase ready"}},
		{"create --stopped --wait returns when stopped", []string{"tenant", "create", "b", "--stopped", "--wait", "--timeout", "10s"}, 0,
			[]string{`tenant "b": desired state stopped, phase stopped`}, nil},
		{"create --wait on an existing tenant does not wait", []string{"tenant", "create", "a", "--wait"}, ExitConflict, nil, []string{"exists already"}},
		{"stop --wait several, one missing: each reported, the first failure's code", []string{"tenant", "stop", "a", "nope", "b", "--wait", "--timeout", "10s"}, ExitNotFound,
			[]string{`tenant "a": desired state stopped, phase stopped`, `tenant "b": desired state stopped, phase stopped`},
			[]string{`bbctl: tenant "nope" not found`, "a: phase stopped"}},
		{"create --wait of a tenant that fails", []string{"tenant", "create", "broken", "--wait", "--timeout", "10s"}, ExitFailure,
			[]string{`tenant "broken" created`}, []string{`bbctl: tenant "broken": failed: BrokenReady: the test says no`, "broken: phase failed"}},
		{"start --wait of a tenant that failed before", []string{"tenant", "start", "broken", "--wait", "--timeout", "10s"}, ExitFailure,
			nil, []string{`bbctl: tenant "broken": failed: BrokenReady: the test says no`}},
		{"delete --wait several", []string{"tenant", "delete", "b", "broken", "--force", "--wait", "--timeout", "10s"}, 0,
			[]string{`tenant "b" deleted`, `tenant "broken" deleted`}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bbctlGrace(t, d.addr, 200*time.Millisecond, c.args...)
			if r.code != c.code {
				t.Fatalf("bbctl %q: exit %d, want %d; stdout %q, stderr %q", c.args, r.code, c.code, r.stdout, r.stderr)
			}
			for _, s := range c.stdout {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout %q lacks %q", r.stdout, s)
				}
			}
			for _, s := range c.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q lacks %q", r.stderr, s)
				}
			}
		})
	}

	t.Run("start --wait --json: the tenants when the wait ended, no progress lines", func(t *testing.T) {
		mustRun(t, d.addr, "tenant", "create", "c", "--stopped")
		r := bbctl(t, d.addr, "tenant", "start", "a", "c", "--wait", "--json", "--timeout", "10s")
		var got []vt.Tenant
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
			t.Fatalf("exit %d, %v: stdout %q, stderr %q", r.code, err, r.stdout, r.stderr)
		}
		if len(got) != 2 || got[0].Name != "a" || got[1].Name != "c" || got[0].Phase != "ready" || got[1].Phase != "ready" {
			t.Errorf("replies %+v", got)
		}
		if r.stderr != "" {
			t.Errorf("progress on stderr with --json: %q", r.stderr)
		}
	})

	t.Run("stop --wait of a stopped tenant returns at once", func(t *testing.T) {
		mustRun(t, d.addr, "tenant", "stop", "c", "--wait", "--timeout", "10s")
		start := time.Now()
		if r := bbctl(t, d.addr, "tenant", "stop", "c", "--wait", "--timeout", "10s"); r.code != 0 || r.stderr != "" {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
	})
}

// TestAfterObserved: a snapshot whose observed generation is older than the change's is never judged, so a stale
// "ready" or "failed" from before the daemon acted cannot end the wait.
func TestAfterObserved(t *testing.T) {
	g := afterObserved(3, tenantReady)
	stale := &vt.Tenant{Name: "a", DesiredState: "running", Phase: "ready", Generation: 3, ObservedGeneration: 2}
	if v := g(stale); len(v.pending) != 1 || v.failure != "" {
		t.Fatalf("stale ready judged: %+v", v)
	}
	staleFailed := &vt.Tenant{Name: "a", DesiredState: "running", Phase: "failed", Generation: 3, ObservedGeneration: 2}
	if v := g(staleFailed); v.failure != "" {
		t.Fatalf("stale failure judged: %+v", v)
	}
	fresh := &vt.Tenant{Name: "a", DesiredState: "running", Phase: "ready", Generation: 3, ObservedGeneration: 3}
	if v := g(fresh); len(v.pending) != 0 || v.failure != "" {
		t.Fatalf("fresh ready not reached: %+v", v)
	}
	if v := g(nil); v.failure == "" {
		t.Fatalf("a deleted tenant must still be judged: %+v", v)
	}
}

// gateStep keeps every tenant degraded with a false Gate condition, so that a wait for ready
// goes on until a daemon without it takes over.
type gateStep struct{}

func (gateStep) Name() string { return "Gate" }

func (gateStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	return []tenant.Condition{{Type: "Gate", Status: "false", Reason: "Closed", Message: "the test holds it", LastTransitionTime: time.Now()}}, nil
}

func (gateStep) Teardown(ctx context.Context, t *tenant.Tenant) error { return nil }

// TestWaitSurvivesDaemonRestart: tenant create --wait follows a tenant the first daemon keeps
// degraded; the daemon is restarted without the gate, and the wait reconnects, resumes and
// ends when the new daemon makes the tenant ready.
func TestWaitSurvivesDaemonRestart(t *testing.T) {
	dir := t.TempDir()
	d, stop := startDaemonIn(t, dir, func(cfg *daemon.Config) { cfg.Steps = append(cfg.Steps, gateStep{}) })
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		app := testApp(d.addr, &stdout, &stderr)
		done <- app.Run(t.Context(), []string{"tenant", "create", "a", "--wait", "--timeout", "60s"})
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("stderr %q never said %q", stderr.String(), what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("a: condition Gate false (Closed: the test holds it)")
	stop()
	waitFor("reconnecting")
	startDaemonIn(t, dir)
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(stdout.String(), `tenant "a": desired state running, phase ready`) {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the wait did not end after the restart: stderr %q", stderr.String())
	}
	if !strings.Contains(stderr.String(), "reconnected; resuming after revision") || !strings.Contains(stderr.String(), "a: phase ready") {
		t.Errorf("stderr %q", stderr.String())
	}
}
