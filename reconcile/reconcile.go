// Package reconcile is BitBuilder's control loop. It follows the store's change log and,
// for one tenant at a time, makes the host match the tenant's record: each Step compares
// what it wants with what the host has and changes only the difference. The loop is
// level-based: the same input twice changes nothing the second time; a failing step is
// retried with exponential backoff and shown as a condition; a periodic resync puts back
// what was removed behind the daemon's back. Deleting a tenant runs the steps' teardowns in
// reverse order, and only when all succeeded is the record finalized (removed).
package reconcile

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// Step is one part of a tenant's host state (its network, its units, ...).
type Step interface {
	// Name identifies the step in logs and in its condition type (e.g. "Network").
	Name() string
	// Ensure makes the host match t and returns the step's conditions. An error means the
	// step should be retried; conditions are still recorded.
	Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error)
	// Teardown removes everything the step made for t. It succeeds when there is nothing
	// to remove.
	Teardown(ctx context.Context, t *tenant.Tenant) error
}

// Observer is told about the whole set of tenants after every change of it (for example to
// keep the boot registry current). It must be idempotent.
type Observer func(ctx context.Context, tenants []*tenant.Tenant) error

// Config configures a Controller.
type Config struct {
	Tenants *tenant.Service
	Store   store.Store
	Steps   []Step
	// Observer, when set, is called with all tenants after each reconcile pass that
	// changed the set or a tenant's spec.
	Observer Observer
	// Workers reconciling different tenants in parallel (default 4).
	Workers int
	// Resync is how long a tenant goes at most without being compared with the host when
	// nothing changed (default 10 min). Host events (units, machines, links) and store
	// changes wake a tenant at once; the resync is the safety net for what no event reports.
	// Each tenant is due Resync after its last pass, so an idle resync tick costs O(due
	// tenants), not O(tenants).
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the retry delay of a failing tenant (1 s, 5 min).
	MinBackoff, MaxBackoff time.Duration
	// StepTimeout bounds each step's Ensure or Teardown of one tenant (default 5 min): a
	// step that hangs fails that pass and is retried, and other tenants go on.
	StepTimeout time.Duration
	// Poll is how soon a tenant whose machines are starting or stopping is looked at again
	// even without an event (default 2 s).
	Poll time.Duration
	// FailureSummary is how often a tenant that keeps failing for the same cause is logged
	// again, with the number of failures since (default 10 min): the first failure of a cause
	// is logged at once, its repeats only counted.
	FailureSummary time.Duration
	Logger         *slog.Logger
}

// Controller runs the loop.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	queued   map[string]bool // waiting in queue
	active   map[string]bool // being reconciled
	dirty    map[string]bool // changed while active: run again
	failures map[string]int
	queue    chan string
	passes   map[string]int // completed reconciles per tenant, for tests
	notify   chan struct{}
	// due says when each tenant is next compared with the host without a change (a heap
	// ordered by time, with the map holding each tenant's current entry).
	due     dueHeap
	dueAt   map[string]time.Time
	nowFunc func() time.Time
	// read is the Generation of the record each tenant's latest pass started from: a change
	// that leaves it (a status write) needs no pass.
	read map[string]int64
	// failing is each failing tenant's current cause of failure, for logging it once.
	failing map[string]*failure
}

// failure is a tenant's current cause of failure and how often it repeated.
type failure struct {
	cause        string
	first        time.Time
	count        int // failures of this cause so far
	logged       int // count when it was last logged
	lastReported time.Time
}

// dueEntry is a tenant and when it is due.
type dueEntry struct {
	name string
	at   time.Time
}

// dueHeap is a min-heap of dueEntry by time (container/heap).
type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// schedule makes name due at at (replacing an earlier schedule); forget drops it. Callers hold c.mu.
func (c *Controller) schedule(name string, at time.Time) {
	c.dueAt[name] = at
	heap.Push(&c.due, dueEntry{name: name, at: at})
	// Stale entries are skipped when popped; compact when they dominate.
	if len(c.due) > 4*len(c.dueAt)+64 {
		c.due = c.due[:0]
		for n, t := range c.dueAt {
			c.due = append(c.due, dueEntry{name: n, at: t})
		}
		heap.Init(&c.due)
	}
}

// popDue returns the tenants due at now and removes them from the schedule. Callers hold c.mu.
func (c *Controller) popDue(now time.Time) []string {
	var out []string
	for len(c.due) > 0 && !c.due[0].at.After(now) {
		e := heap.Pop(&c.due).(dueEntry)
		if at, ok := c.dueAt[e.name]; ok && at.Equal(e.at) {
			delete(c.dueAt, e.name)
			out = append(out, e.name)
		}
	}
	return out
}

// New returns a Controller.
func New(cfg Config) *Controller {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 5 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.FailureSummary <= 0 {
		cfg.FailureSummary = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Controller{
		cfg: cfg, log: cfg.Logger,
		queued: map[string]bool{}, active: map[string]bool{}, dirty: map[string]bool{},
		failures: map[string]int{}, passes: map[string]int{},
		queue: make(chan string, 1<<16), notify: make(chan struct{}, 1),
		dueAt: map[string]time.Time{}, nowFunc: time.Now, failing: map[string]*failure{}, read: map[string]int64{},
	}
}

// Enqueue asks for tenant name to be reconciled soon.
func (c *Controller) Enqueue(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active[name] {
		c.dirty[name] = true
		return
	}
	if c.queued[name] {
		return
	}
	c.queued[name] = true
	select {
	case c.queue <- name:
	default:
		// The queue is full: the periodic resync will come back to it.
		delete(c.queued, name)
	}
}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	// Names only: each tenant's record is decoded once, by its pass.
	recs, rev, err := c.cfg.Tenants.Records(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		c.Enqueue(r.Name)
	}
	c.observe(ctx)

	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.work(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watch(ctx, rev)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.resync(ctx)
	}()
	wg.Wait()
	return nil
}

// watch follows the store's tenant changes, resuming after overflows and starting over
// from a fresh list after compaction.
func (c *Controller) watch(ctx context.Context, rev uint64) {
	for ctx.Err() == nil {
		ch, err := c.cfg.Store.Watch(ctx, tenant.KindTenant, rev)
		if err != nil {
			var ce *store.CompactedError
			if errors.As(err, &ce) {
				ts, r, lerr := c.cfg.Tenants.List(ctx)
				if lerr == nil {
					for _, t := range ts {
						c.Enqueue(t.Name)
					}
					rev = r
					continue
				}
			}
			c.log.Warn("watching tenants failed, retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for ev := range ch {
			rev = ev.Revision
			if !c.statusOnly(ev) {
				c.Enqueue(ev.Name)
			}
			c.signalObserver() // coalesced; the observer writes only what changed
		}
	}
}

// statusOnly reports whether ev is a write that left the tenant's Generation where its latest
// pass read it: a status write (the passes' own, most of all), which another pass would only
// compute again. Only the generation is read (tenant.Generation), not the whole record.
func (c *Controller) statusOnly(ev store.Event) bool {
	if ev.Type != store.EventPut {
		return false
	}
	c.mu.Lock()
	g, ok := c.read[ev.Name]
	c.mu.Unlock()
	if !ok {
		return false
	}
	gen, ok := tenant.Generation(ev.Value)
	return ok && gen == g
}

func (c *Controller) signalObserver() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// resync enqueues the tenants that are due (see Config.Resync) and keeps the observer current.
func (c *Controller) resync(ctx context.Context) {
	t := time.NewTicker(min(c.cfg.Resync, time.Second))
	defer t.Stop()
	obs := time.NewTicker(c.cfg.Resync)
	defer obs.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.ResyncTick(c.nowFunc())
		case <-obs.C:
			c.signalObserver()
		case <-c.notify:
			c.observe(ctx)
		}
	}
}

// ResyncTick runs one resync tick at now and returns how many tenants it enqueued (for
// benchmarks and tests).
func (c *Controller) ResyncTick(now time.Time) int {
	c.mu.Lock()
	due := c.popDue(now)
	c.mu.Unlock()
	for _, n := range due {
		c.Enqueue(n)
	}
	return len(due)
}

// Schedule makes tenant name due at at (for benchmarks and tests).
func (c *Controller) Schedule(name string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.schedule(name, at)
}

func (c *Controller) observe(ctx context.Context) {
	if c.cfg.Observer == nil {
		return
	}
	ts, _, err := c.cfg.Tenants.List(ctx)
	if err == nil {
		err = c.cfg.Observer(ctx, ts)
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("observer failed", "err", OneLine(err))
	}
}

func (c *Controller) work(ctx context.Context) {
	for {
		var name string
		select {
		case <-ctx.Done():
			return
		case name = <-c.queue:
		}
		c.mu.Lock()
		delete(c.queued, name)
		c.active[name] = true
		c.mu.Unlock()

		res, err := c.safeReconcile(ctx, name)

		c.mu.Lock()
		delete(c.active, name)
		again := c.dirty[name]
		delete(c.dirty, name)
		c.passes[name]++
		if res.Gone {
			delete(c.dueAt, name)
		} else {
			c.schedule(name, c.nowFunc().Add(c.cfg.Resync))
		}
		var delay time.Duration
		if err != nil {
			c.failures[name]++
			delay = backoff(c.failures[name], c.cfg.MinBackoff, c.cfg.MaxBackoff)
		} else {
			delete(c.failures, name)
			delay = res.RequeueAfter
		}
		c.mu.Unlock()
		if ctx.Err() == nil {
			c.logOutcome(name, err, delay)
		}
		switch {
		case again:
			c.Enqueue(name)
		case delay > 0:
			time.AfterFunc(delay, func() {
				if ctx.Err() == nil {
					c.Enqueue(name)
				}
			})
		}
	}
}

// logOutcome logs a pass's failure once per cause: the first failure of a cause at once, its
// repeats counted and summarized every FailureSummary, and the recovery (or a new cause) with
// how often the previous cause repeated. Errors are logged on one line.
func (c *Controller) logOutcome(name string, err error, retryIn time.Duration) {
	now := c.nowFunc()
	c.mu.Lock()
	f := c.failing[name]
	var summarize *failure
	logNew := false
	switch {
	case err == nil:
		if f != nil {
			delete(c.failing, name)
			summarize = f
		}
	case f != nil && f.cause == OneLine(err):
		f.count++
		if now.Sub(f.lastReported) >= c.cfg.FailureSummary {
			cp := *f
			summarize = &cp
			f.logged, f.lastReported = f.count, now
		}
	default:
		if f != nil {
			summarize = f
		}
		c.failing[name] = &failure{cause: OneLine(err), first: now, count: 1, logged: 1, lastReported: now}
		logNew = true
	}
	c.mu.Unlock()
	switch {
	case err == nil && summarize != nil:
		c.log.Info("reconcile succeeded again", "tenant", name, "failures", summarize.count,
			"failingFor", now.Sub(summarize.first).Round(time.Second), "lastErr", summarize.cause)
	case err != nil && !logNew && summarize != nil:
		c.log.Warn("reconcile still failing", "tenant", name, "failures", summarize.count,
			"sinceLastLogged", summarize.count-summarize.logged, "failingFor", now.Sub(summarize.first).Round(time.Second),
			"retryIn", retryIn.Round(time.Millisecond), "err", summarize.cause)
	case logNew:
		if summarize != nil && summarize.count > 1 {
			c.log.Info("reconcile failure changed cause", "tenant", name, "failures", summarize.count, "lastErr", summarize.cause)
		}
		c.log.Warn("reconcile failed, will retry", "tenant", name, "retryIn", retryIn.Round(time.Millisecond), "err", OneLine(err))
	}
}

// OneLine is err's message on one line: the parts of a joined error are separated by "; ".
func OneLine(err error) string {
	return strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ").Replace(err.Error())
}

// backoff is MinBackoff * 2^(n-1), capped, with up to 10% jitter.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// Passes returns how many reconciles of name have completed (for tests and metrics).
func (c *Controller) Passes(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes[name]
}

// safeReconcile is Reconcile with a panic turned into an error of that pass, so that one
// tenant's bad pass neither stops the daemon nor other tenants.
func (c *Controller) safeReconcile(ctx context.Context, name string) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("reconcile panicked", "tenant", name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("reconcile panicked: %v", r)
		}
	}()
	return c.Reconcile(ctx, name)
}

// Result says when to reconcile a tenant again without a change.
type Result struct {
	RequeueAfter time.Duration
	// Gone says the tenant no longer exists (finalized): nothing is scheduled for it.
	Gone bool
}

// Reconcile makes the host match one tenant's record. It is safe to call at any time; the
// controller never runs it for one tenant twice at once.
func (c *Controller) Reconcile(ctx context.Context, name string) (Result, error) {
	t, err := c.cfg.Tenants.Get(ctx, name)
	if errors.Is(err, tenant.ErrNotFound) {
		c.mu.Lock()
		delete(c.read, name)
		c.mu.Unlock()
		return Result{Gone: true}, nil // finalized: nothing left to do
	}
	if err != nil {
		return Result{}, err
	}
	c.mu.Lock()
	c.read[name] = t.Generation
	c.mu.Unlock()
	log := c.log.With("tenant", name, "revision", t.Revision)

	if t.Deleting() {
		if err := TeardownSteps(ctx, c.cfg.Steps, t, c.cfg.StepTimeout); err != nil {
			c.setStatus(ctx, t, tenant.PhaseDeleting, []tenant.Condition{{
				Type: "Deleted", Status: "false", Reason: "TeardownFailed", Message: err.Error(),
			}})
			return Result{}, err
		}
		if err := c.cfg.Tenants.Finalize(ctx, t); err != nil {
			if errors.Is(err, store.ErrRevisionMismatch) {
				return Result{}, fmt.Errorf("tenant changed during teardown, again: %w", err)
			}
			return Result{}, err
		}
		log.Info("tenant deleted: host state removed and record finalized")
		return Result{Gone: true}, nil
	}

	var conds []tenant.Condition
	var errs []error
	var statuses []tenant.MachineStatus
	for _, s := range c.cfg.Steps {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.StepTimeout)
		stepStart := time.Now()
		var cs []tenant.Condition
		var err error
		if ss, ok := s.(StatusStep); ok {
			var st []tenant.MachineStatus
			cs, st, err = ss.EnsureStatus(sctx, t)
			if st != nil {
				statuses = st
			}
		} else {
			cs, err = s.Ensure(sctx, t)
		}
		if err == nil && sctx.Err() != nil {
			err = fmt.Errorf("step did not finish within %v: %w", c.cfg.StepTimeout, sctx.Err())
		}
		cancel()
		log.Debug("step done", "step", s.Name(), "took", time.Since(stepStart).Round(time.Microsecond))
		conds = append(conds, cs...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
			if !hasCondition(cs, s.Name()+"Ready") {
				conds = append(conds, tenant.Condition{Type: s.Name() + "Ready", Status: "false", Reason: "Failed", Message: err.Error()})
			}
		}
	}
	phase := phaseOf(t, conds, len(errs) > 0)
	var res Result
	if p, transient := machinePhase(t, statuses); transient {
		if phase != tenant.PhaseFailed {
			phase = p
		}
		res.RequeueAfter = c.cfg.Poll
	} else if awaitingAddress(statuses) {
		// A VM's address comes from the bridge's DHCP leases, which no event reports.
		res.RequeueAfter = 5 * c.cfg.Poll
	}
	// The status is not waited for: it rides along with the next durable commit (one sync per
	// client change, not two), and after a crash the first pass writes it again.
	if err := c.cfg.Tenants.QueueStatus(ctx, t, phase, conds, statuses, max(t.Generation, 1)); err != nil && ctx.Err() == nil && !errors.Is(err, tenant.ErrNotFound) {
		c.log.Warn("recording tenant status failed", "tenant", t.Name, "err", err)
	}
	return res, errors.Join(errs...)
}

// TeardownSteps removes everything steps made for t, in reverse order, each step within
// timeout, and returns every failure. It is what deleting a tenant does to the host, and what
// bitbuilderd --cleanup does for each tenant.
func TeardownSteps(ctx context.Context, steps []Step, t *tenant.Tenant, timeout time.Duration) error {
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err := s.Teardown(sctx, t)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s teardown: %w", s.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// awaitingAddress reports whether a running VM has no address yet.
func awaitingAddress(statuses []tenant.MachineStatus) bool {
	for _, st := range statuses {
		if st.State == tenant.MachineRunning && st.Class == "vm" && len(st.Addresses) == 0 {
			return true
		}
	}
	return false
}

// machinePhase says whether t's machines are on their way somewhere, and which phase that is:
// provisioning while machines start for a running tenant, stopping while they stop for a
// stopped one.
func machinePhase(t *tenant.Tenant, statuses []tenant.MachineStatus) (tenant.Phase, bool) {
	moving := false
	for _, st := range statuses {
		if st.State == tenant.MachineStarting || st.State == tenant.MachineStopping {
			moving = true
		}
	}
	if !moving {
		return "", false
	}
	if t.DesiredState == tenant.Stopped {
		return tenant.PhaseStopping, true
	}
	return tenant.PhaseProvisioning, true
}

func hasCondition(cs []tenant.Condition, typ string) bool {
	for _, c := range cs {
		if c.Type == typ {
			return true
		}
	}
	return false
}

// ReasonRecordsOnly is the reason of a condition that says what the daemon was told not to
// do (bitbuilderd --no-host: HostApplied=false): not a failure, so it does not degrade the phase.
const ReasonRecordsOnly = "RecordsOnly"

// phaseOf derives the phase: failed when a step errored and nothing is ready, degraded
// when some condition is false (except ReasonRecordsOnly), otherwise ready (or stopped when
// stopped is desired).
func phaseOf(t *tenant.Tenant, conds []tenant.Condition, failed bool) tenant.Phase {
	anyTrue, anyFalse := false, false
	for _, c := range conds {
		if c.Reason == ReasonRecordsOnly {
			continue
		}
		switch c.Status {
		case "true":
			anyTrue = true
		case "false":
			anyFalse = true
		}
	}
	switch {
	case failed && !anyTrue:
		return tenant.PhaseFailed
	case anyFalse || failed:
		return tenant.PhaseDegraded
	case t.DesiredState == tenant.Stopped:
		return tenant.PhaseStopped
	default:
		return tenant.PhaseReady
	}
}

func (c *Controller) setStatus(ctx context.Context, t *tenant.Tenant, phase tenant.Phase, conds []tenant.Condition) {
	if _, err := c.cfg.Tenants.SetStatus(ctx, t.Name, phase, conds); err != nil && ctx.Err() == nil && !errors.Is(err, tenant.ErrNotFound) {
		c.log.Warn("recording tenant status failed", "tenant", t.Name, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
