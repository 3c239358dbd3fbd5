package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// A --wait follows one tenant with Tenant.Watch, from the reply of the call that changed it,
// and judges every snapshot with a goal until the goal is met, fails, or --timeout ends it.
// tenant create, start, stop and delete and machine start, stop and restart share it; they
// differ only in their goal.

// goal judges one snapshot of a tenant; nil means the tenant was deleted. A goal is a pure
// function of the snapshot.
type goal func(t *vt.Tenant) verdict

// verdict is a goal's judgement of one snapshot.
type verdict struct {
	// pending says what is not reached yet; nothing (and no failure) means the wait is over.
	pending []string
	// failure, when set, says why the wait cannot succeed any more.
	failure string
	// observed says that the failure is in the observed state (phase, a machine's status),
	// which the reply a wait starts from may show from before the daemon acted on the call.
	observed bool
}

func fail(format string, args ...any) verdict {
	return verdict{failure: fmt.Sprintf(format, args...)}
}

func failObserved(format string, args ...any) verdict {
	return verdict{failure: fmt.Sprintf(format, args...), observed: true}
}

// afterObserved judges a snapshot with g only once the daemon has derived the tenant's
// observed state from generation gen or later (observedGeneration): before that, the phase
// and machine states may predate the change the wait follows.
func afterObserved(gen int64, g goal) goal {
	return func(t *vt.Tenant) verdict {
		if t != nil && t.ObservedGeneration < gen {
			return verdict{pending: []string{fmt.Sprintf("the daemon has not acted on the change yet (observed generation %d of %d)", t.ObservedGeneration, gen)}}
		}
		return g(t)
	}
}

// tenantReady is the goal of tenant create and start: phase ready, and every machine that
// should run (the tenant's and the machine's desired state both running) running.
func tenantReady(t *vt.Tenant) verdict {
	if v := gone(t); v.failure != "" {
		return v
	}
	if t.DesiredState != "running" {
		return fail("its desired state changed to %s", t.DesiredState)
	}
	if t.Phase == "failed" {
		return failObserved("failed: %s", failedConditions(t))
	}
	var v verdict
	if t.Phase != "ready" {
		v.pending = append(v.pending, fmt.Sprintf("phase %s, not ready", t.Phase))
	}
	for _, m := range t.Machines {
		if m.DesiredState != "running" {
			continue
		}
		mv := machineReaches(m, "running", 0)
		if mv.failure != "" {
			return mv
		}
		v.pending = append(v.pending, mv.pending...)
	}
	return v
}

// tenantStopped is the goal of tenant stop (and of create --stopped): phase stopped, and
// every machine stopped or never seen.
func tenantStopped(t *vt.Tenant) verdict {
	if v := gone(t); v.failure != "" {
		return v
	}
	if t.DesiredState != "stopped" {
		return fail("its desired state changed to %s", t.DesiredState)
	}
	if t.Phase == "failed" {
		return failObserved("failed: %s", failedConditions(t))
	}
	var v verdict
	if t.Phase != "stopped" {
		v.pending = append(v.pending, fmt.Sprintf("phase %s, not stopped", t.Phase))
	}
	for _, m := range t.Machines {
		mv := machineReaches(m, "stopped", 0)
		if mv.failure != "" {
			return mv
		}
		v.pending = append(v.pending, mv.pending...)
	}
	return v
}

// tenantGone is the goal of tenant delete. The daemon retries a failed teardown, so nothing
// but the time fails it.
func tenantGone(t *vt.Tenant) verdict {
	if t == nil {
		return verdict{}
	}
	return verdict{pending: []string{fmt.Sprintf("phase %s, not deleted", t.Phase)}}
}

// machineTarget is what machine start, stop or restart --wait waits for: machine name in
// state (running or stopped), having carried out restart generation (restart only; 0 else).
type machineTarget struct {
	name       string
	state      vt.MachineState
	generation int64
}

// machinesReach is the goal of machine start, stop and restart.
func machinesReach(targets []machineTarget) goal {
	return func(t *vt.Tenant) verdict {
		if v := gone(t); v.failure != "" {
			return v
		}
		var v verdict
		for _, tg := range targets {
			i := machineIndex(*t, tg.name)
			if i < 0 {
				return fail("machine %s was removed", tg.name)
			}
			m := t.Machines[i]
			if m.DesiredState != vt.DesiredState(tg.state) {
				return fail("the desired state of machine %s changed to %s", m.Name, m.DesiredState)
			}
			if tg.state == "running" && t.DesiredState != "running" {
				return fail("the tenant is stopped, so machine %s will not run until it is started (bbctl tenant start %s)", m.Name, t.Name)
			}
			mv := machineReaches(m, tg.state, tg.generation)
			if mv.failure != "" {
				return mv
			}
			v.pending = append(v.pending, mv.pending...)
		}
		return v
	}
}

// gone fails a wait for a tenant that was deleted or is being deleted.
func gone(t *vt.Tenant) verdict {
	switch {
	case t == nil:
		return fail("it was deleted")
	case t.Phase == "deleting":
		return fail("it is being deleted")
	}
	return verdict{}
}

// machineReaches judges one machine against a state and a restart generation. A machine
// that never had a status counts as stopped.
func machineReaches(m vt.Machine, state vt.MachineState, generation int64) verdict {
	st := m.Status
	if st == nil {
		if state == "stopped" {
			return verdict{}
		}
		return verdict{pending: []string{fmt.Sprintf("machine %s has no status yet, not %s", m.Name, state)}}
	}
	if st.RestartGeneration < generation {
		// What it shows is from before the restart, failures included.
		return verdict{pending: []string{fmt.Sprintf("machine %s is %s and not restarted yet (generation %d of %d)", m.Name, st.State, st.RestartGeneration, generation)}}
	}
	if st.State == "failed" {
		return failObserved("machine %s failed: %s", m.Name, orDefault(deref(st.Message), "no reason given"))
	}
	if st.State != state {
		p := fmt.Sprintf("machine %s is %s, not %s", m.Name, st.State, state)
		if msg := deref(st.Message); msg != "" {
			p += ": " + msg
		}
		return verdict{pending: []string{p}}
	}
	return verdict{}
}

// failedConditions says why a tenant failed: its false conditions' messages.
func failedConditions(t *vt.Tenant) string {
	var out []string
	for _, c := range t.Conditions {
		if c.Status == "false" {
			out = append(out, fmt.Sprintf("%s: %s", c.Type, orDefault(c.Message, c.Reason)))
		}
	}
	if len(out) == 0 {
		return "phase failed"
	}
	return strings.Join(out, "; ")
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// waiter follows the snapshots of one tenant: it prints each change of the phase, of a
// condition's status and of a machine's state as a line to out (nil: print nothing), and
// judges each snapshot with its goal.
type waiter struct {
	name string
	goal goal
	out  io.Writer

	last     *vt.Tenant // the last snapshot seen; nil when deleted
	verdict             // the goal's verdict on it
	phase    vt.Phase
	conds    map[string]string // condition type -> status
	machines map[string]string // machine name -> its line and restart generation
}

func newWaiter(name string, g goal, out io.Writer) *waiter {
	return &waiter{name: name, goal: g, out: out, conds: map[string]string{}, machines: map[string]string{}}
}

// start takes the snapshot the wait starts from (the call's reply) without printing it.
func (w *waiter) start(t *vt.Tenant) {
	out := w.out
	w.out = nil
	w.see(t)
	w.out = out
}

// see takes the next snapshot (nil: the tenant was deleted), prints what changed and
// judges it. It reports whether the wait is over: reached (done) or failed (failure set).
func (w *waiter) see(t *vt.Tenant) bool {
	w.last = t
	if t != nil {
		if t.Phase != w.phase {
			w.phase = t.Phase
			w.printf("phase %s", t.Phase)
		}
		for _, c := range t.Conditions {
			if w.conds[c.Type] != c.Status {
				w.conds[c.Type] = c.Status
				line := fmt.Sprintf("condition %s %s", c.Type, c.Status)
				if why := joinNonEmpty(": ", c.Reason, firstLine(c.Message)); c.Status != "true" && why != "" {
					line += " (" + why + ")"
				}
				w.printf("%s", line)
			}
		}
		for _, m := range t.Machines {
			line := machineLine(m)
			if line == "" {
				continue
			}
			// A restart carried out shows even when the state looks the same.
			if key := fmt.Sprintf("%s [%d]", line, m.Status.RestartGeneration); w.machines[m.Name] != key {
				w.machines[m.Name] = key
				w.printf("%s", line)
			}
		}
	}
	w.verdict = w.goal(t)
	return w.failure != "" || len(w.pending) == 0
}

// done reports whether the last snapshot reached the goal.
func (w *waiter) done() bool { return w.failure == "" && len(w.pending) == 0 }

func (w *waiter) printf(format string, args ...any) {
	if w.out != nil {
		fmt.Fprintf(w.out, "%s: %s\n", w.name, fmt.Sprintf(format, args...))
	}
}

// machineLine is how a wait shows a machine's state: "machine web running (10.3.0.101)";
// empty while the machine has no status.
func machineLine(m vt.Machine) string {
	st := m.Status
	if st == nil {
		return ""
	}
	s := fmt.Sprintf("machine %s %s", m.Name, st.State)
	if len(st.Addresses) > 0 {
		s += fmt.Sprintf(" (%s)", st.Addresses[0])
	}
	if msg := deref(st.Message); msg != "" && st.State != "running" {
		s += ": " + msg
	}
	return s
}

// waitFor waits until tenant name meets g, starting from from (the reply of the call that
// changed the tenant) and following Tenant.Watch after its revision on a connection of its
// own. Progress lines go to standard error unless --json. It returns the last snapshot (nil
// when the tenant was deleted). A failure in the observed state that from shows already ends
// the wait only when a later change still shows a failure or after App.FailGrace without a
// change: the daemon may not have acted on the call yet.
func (e *env) waitFor(ctx context.Context, name string, from *vt.Tenant, g goal) (*vt.Tenant, error) {
	if from != nil {
		g = afterObserved(from.Generation, g)
	}
	var out io.Writer
	if !e.g.json {
		out = e.stderr()
	}
	w := newWaiter(name, g, out)
	w.start(from)
	switch {
	case w.done():
		return w.last, nil
	case w.failure != "" && !w.observed:
		return nil, &WaitError{Tenant: name, Reason: w.failure}
	}
	c, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var graceOver atomic.Bool
	if w.failure != "" {
		tm := time.AfterFunc(e.app.FailGrace, func() {
			graceOver.Store(true)
			cancel()
		})
		defer tm.Stop()
	}
	rev := from.Revision
	err = e.watch(wctx, c, &name, &rev, func(ev vt.Event) (bool, error) {
		t := ev.Tenant
		switch {
		case ev.Type == "deleted":
			t = nil
		case t == nil:
			return false, nil
		}
		return w.see(t), nil
	})
	switch {
	case w.done():
		return w.last, nil
	case w.failure != "" && (err == nil || graceOver.Load() || errors.Is(ctx.Err(), context.DeadlineExceeded)):
		return nil, &WaitError{Tenant: name, Reason: w.failure}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, &WaitError{Tenant: name, Reason: fmt.Sprintf("not reached within %s: %s", e.waitTimeout(), strings.Join(w.pending, "; "))}
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("the watch of tenant %q ended before the wait was over", name)
}
