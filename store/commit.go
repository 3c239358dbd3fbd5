package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// commitReq is one Commit call, or one deferred write, waiting for the
// committer.
type commitReq struct {
	ctx  context.Context
	ops  []Op
	done chan commitResult // buffered, receives exactly one result; nil for a deferred write
	t0   time.Time         // when Commit queued it
	// A deferred write (Defer): its ops are computed by merge inside the
	// transaction that applies it.
	kind, name string
	merge      Merge
	// set by the committer while the batch transaction runs
	res commitResult
	evs []Event
}

type commitResult struct {
	rev uint64
	err error
}

// logFillPercent is how full the change log's pages are filled before they split.
const logFillPercent = 0.9

// errNoWrites rolls back a batch transaction in which every caller failed.
var errNoWrites = errors.New("no writes")

// errUnchanged marks a deferred write whose merge left the record as it was.
var errUnchanged = errors.New("unchanged")

// Commit applies ops atomically as one new revision and returns it once the
// transaction is fsync'd. Concurrent calls are grouped into one bbolt
// transaction (group commit), but each is evaluated on its own against the
// state left by the calls before it in the batch: a failing op fails only its
// own Commit, with an *OpError. If ctx ends before the committer takes the
// call, it fails with ctx's error and nothing is applied; once taken, Commit
// waits for the outcome so that its result is always the truth.
func (b *Bolt) Commit(ctx context.Context, ops ...Op) (uint64, error) {
	if err := validOps(ops); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.failure(); err != nil {
		return 0, err
	}
	// Copy the ops: the caller may reuse its buffers once Commit returns,
	// and the values live on in watchers' events.
	own := make([]Op, len(ops))
	for i, op := range ops {
		own[i] = op
		if op.Type == OpDelete {
			own[i].Value = nil
		} else {
			own[i].Value = append([]byte{}, op.Value...)
		}
	}
	req := &commitReq{ctx: ctx, ops: own, done: make(chan commitResult, 1), t0: time.Now()}
	select {
	case b.reqs <- req:
	case <-b.closing:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.rev, r.err
	case <-b.stopped:
		select {
		case r := <-req.done:
			return r.rev, r.err
		default:
			return 0, ErrClosed
		}
	}
}

// Merge computes the value of a deferred write from the record's current
// value (nil when the record does not exist) and ModRevision, inside the
// transaction that applies it. cur may alias the database's memory: it must
// not be kept or changed. Merge returns the record's new value, or nil to
// leave the record as it is (no revision is used then). It must not call the
// store.
type Merge func(cur []byte, modRevision uint64) ([]byte, error)

// Defer queues a write of one record that no caller waits for, such as an
// observed status that is recomputed after a restart anyway. The committer
// applies it in the next transaction it runs, ahead of the Commit calls of
// that transaction: together with them when there are some (so it costs no
// sync of its own), else on its own within DeferDelay. A second Defer of the
// same record before the first was applied replaces it (writes are coalesced
// per record). A Commit that starts after Defer returned is applied after the
// deferred write.
//
// A deferred write is durable when the transaction that applies it is; it is
// visible to Get, List and Watch only from then on, like any commit. Until
// then a crash loses it; nobody was told it happened. A merge that fails is
// logged and dropped.
func (b *Bolt) Defer(kind, name string, merge Merge) error {
	if err := validKindName(kind, name); err != nil {
		return err
	}
	if merge == nil {
		return fmt.Errorf("store: defer %s/%s: nil merge: %w", kind, name, ErrInvalid)
	}
	if err := b.failure(); err != nil {
		return err
	}
	select {
	case <-b.closing:
		return ErrClosed
	default:
	}
	k := kind + "\x00" + name
	b.dmu.Lock()
	defer b.dmu.Unlock()
	if i, ok := b.dindex[k]; ok {
		b.dqueue[i].merge = merge
		b.coalesced.Add(1)
		return nil
	}
	if len(b.dqueue) == 0 {
		select {
		case b.dkick <- struct{}{}:
		default:
		}
	}
	b.dindex[k] = len(b.dqueue)
	b.dqueue = append(b.dqueue, &commitReq{ctx: context.Background(), kind: kind, name: name, merge: merge})
	return nil
}

// takeDeferred returns the queued deferred writes and empties the queue.
func (b *Bolt) takeDeferred() []*commitReq {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	q := b.dqueue
	if len(q) == 0 {
		return nil
	}
	b.dqueue = nil
	clear(b.dindex)
	return q
}

func (b *Bolt) hasDeferred() bool {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	return len(b.dqueue) > 0
}

// Stats are the committer's figures since Open.
type Stats struct {
	Transactions uint64        // write transactions run
	Commits      uint64        // Commit calls taken into them
	Deferred     uint64        // deferred writes taken into them (after coalescing)
	Coalesced    uint64        // deferred writes replaced by a later one of the same record
	MaxBatch     int           // most Commit calls in one transaction
	Wait         time.Duration // summed over Commit calls: from Commit to the start of its transaction
	Busy         time.Duration // summed over transactions: apply, write and sync
}

// Stats returns the committer's figures since Open: the mean batch is
// Commits/Transactions, the mean wait of a caller before its transaction
// starts Wait/Commits.
func (b *Bolt) Stats() Stats {
	return Stats{
		Transactions: b.batches.Load(),
		Commits:      b.commits.Load(),
		Deferred:     b.deferredN.Load(),
		Coalesced:    b.coalesced.Load(),
		MaxBatch:     int(b.maxSeen.Load()),
		Wait:         time.Duration(b.waitNs.Load()),
		Busy:         time.Duration(b.busyNs.Load()),
	}
}

// commitLoop is the single writer. It gathers the waiting Commit calls into
// the next batch while the current batch's transaction runs (and syncs) on
// another goroutine, and starts the next transaction once that one is done
// and the callers it answered are back (at most GatherWait): callers that
// arrive meanwhile share the next transaction, however many they are (up to
// MaxBatchSize), and a lone caller never waits for company. Deferred writes ride along with the next batch, or get a
// transaction of their own once DeferDelay has passed without callers.
func (b *Bolt) commitLoop() {
	defer close(b.stopped)
	var (
		next    = make([]*commitReq, 0, b.maxBatch)
		running bool
		done    = make(chan struct{}, 1)
		timer   = time.NewTimer(time.Hour)
		timerOn bool
		due     bool // deferred writes have waited DeferDelay
		// The callers answered by the last transaction come back one by one, each a
		// round trip later: the next transaction waits for as many (or GatherWait), so
		// that they share it instead of the first of them taking one of its own. It takes
		// every caller waiting then, however many.
		inFlight  int // callers of the running transaction
		expect    int // callers expected back before the next transaction starts
		gather    = time.NewTimer(time.Hour)
		gatherOn  bool
		gatherEnd bool // GatherWait passed
	)
	timer.Stop()
	gather.Stop()
	defer timer.Stop()
	defer gather.Stop()
	for {
		if !running && (len(next) >= expect || gatherEnd) && (len(next) > 0 || due && b.hasDeferred()) {
			batch, defs := next, b.takeDeferred()
			next = make([]*commitReq, 0, b.maxBatch)
			b.gathered.Store(0)
			due, expect, gatherEnd = false, 0, false
			if timerOn {
				timer.Stop()
				timerOn = false
			}
			if gatherOn {
				gather.Stop()
				gatherOn = false
			}
			if len(batch) <= 1 && len(b.reqs) == 0 {
				// A lone caller: handing its transaction to another goroutine
				// costs it two wake-ups; anyone arriving during the sync waits
				// in the channel and joins the next batch just the same.
				b.runBatch(batch, defs)
				continue
			}
			running, inFlight = true, len(batch)
			go func() {
				b.runBatch(batch, defs)
				done <- struct{}{}
			}()
		}
		reqs := b.reqs
		if len(next) >= b.maxBatch {
			reqs = nil // full: the rest waits in the channel for the batch after
		}
		select {
		case r := <-reqs:
			next = append(next, r)
			// Take the callers already waiting without going round the loop.
			for len(next) < b.maxBatch {
				select {
				case r := <-b.reqs:
					next = append(next, r)
					continue
				default:
				}
				break
			}
			b.gathered.Store(int64(len(next)))
		case <-done:
			running = false
			if inFlight > 1 && b.gatherWait > 0 {
				expect, gatherEnd = min(inFlight, b.maxBatch), false
				gather.Reset(b.gatherWait)
				gatherOn = true
			}
		case <-gather.C:
			gatherOn, gatherEnd = false, true
		case <-b.dkick:
			if !timerOn {
				timer.Reset(b.deferDelay)
				timerOn = true
			}
		case <-timer.C:
			timerOn, due = false, true
		case <-b.closing:
			if running {
				<-done
			}
			for _, r := range next {
				r.done <- commitResult{err: ErrClosed}
			}
			b.failPending()
			// What is deferred is written on the way out; nobody waits for it.
			if defs := b.takeDeferred(); len(defs) > 0 {
				b.runBatch(nil, defs)
			}
			return
		}
	}
}

func (b *Bolt) failPending() {
	for {
		select {
		case r := <-b.reqs:
			r.done <- commitResult{err: ErrClosed}
		default:
			return
		}
	}
}

// failure returns the ErrFailed error once a write transaction failed.
func (b *Bolt) failure() error {
	if p := b.failed.Load(); p != nil {
		return fmt.Errorf("store: %s: %w (after: %w)", b.path, ErrFailed, *p)
	}
	return nil
}

// runBatch commits the deferred writes defs and the Commit calls of batch,
// in that order, in one transaction and answers every caller.
func (b *Bolt) runBatch(batch, defs []*commitReq) {
	if err := b.failure(); err != nil {
		for _, r := range batch {
			r.done <- commitResult{err: err}
		}
		return
	}
	start := time.Now()
	var wait time.Duration
	for _, r := range batch {
		wait += start.Sub(r.t0)
	}
	all := batch
	if len(defs) > 0 {
		all = append(defs, batch...)
	}
	base := b.rev.Load()
	b.batches.Add(1)
	b.commits.Add(uint64(len(batch)))
	b.deferredN.Add(uint64(len(defs)))
	b.waitNs.Add(int64(wait))
	if n := int64(len(batch)); n > b.maxSeen.Load() {
		b.maxSeen.Store(n)
	}
	rev, err := b.update(func(tx *bolt.Tx) (uint64, error) { return b.applyBatch(tx, base, all) })
	took := time.Since(start)
	b.busyNs.Add(int64(took))
	if b.log.Enabled(context.Background(), slog.LevelDebug) {
		b.log.Debug("batch committed", "callers", len(batch), "deferred", len(defs), "revision", rev,
			"took", took, "meanWait", wait/time.Duration(max(len(batch), 1)))
	}
	if err != nil && !errors.Is(err, errNoWrites) {
		// The outcome on disk is unknown (a failed fsync may or may not
		// have written the meta page): refuse further commits.
		b.failed.Store(&err)
		b.log.Error("write transaction failed; refusing further commits until reopened", "callers", len(batch), "err", err)
		for _, r := range batch {
			r.done <- commitResult{err: fmt.Errorf("store: commit (outcome unknown): %w: %w", ErrFailed, err)}
		}
		return
	}
	if rev > base {
		b.rev.Store(rev)
		b.hub.publish(all, rev, b.watchBuffer)
	}
	for _, r := range defs {
		if r.res.err != nil && !errors.Is(r.res.err, errUnchanged) {
			b.log.Warn("deferred write dropped", "kind", r.kind, "name", r.name, "err", r.res.err)
		}
		r.evs = nil
	}
	for _, r := range batch {
		r.done <- r.res
		r.evs = nil
	}
}

// deferredOps turns a deferred write into the ops it makes against tx's
// state; errUnchanged when its merge leaves the record as it is.
func (b *Bolt) deferredOps(kinds *bolt.Bucket, r *commitReq) ([]Op, error) {
	var (
		cur    []byte
		modRev uint64
	)
	if kb := kinds.Bucket([]byte(r.kind)); kb != nil {
		if v := kb.Get([]byte(r.name)); v != nil {
			s, err := parseRecord(v)
			if err != nil {
				return nil, b.corrupt(fmt.Errorf("%s/%s: %w", r.kind, r.name, err))
			}
			cur, modRev = s.value, s.modRev
		}
	}
	v, err := r.merge(cur, modRev)
	switch {
	case err != nil:
		return nil, err
	case v == nil:
		return nil, errUnchanged
	case len(v) > MaxValueSize:
		return nil, fmt.Errorf("store: deferred write %s/%s: value is %d bytes, more than %d: %w", r.kind, r.name, len(v), MaxValueSize, ErrInvalid)
	}
	return []Op{{Type: OpPut, Kind: r.kind, Name: r.name, Value: v, ExpectRevision: modRev}}, nil
}

// update runs fn in a write transaction; a bbolt panic becomes an error.
func (b *Bolt) update(fn func(*bolt.Tx) (uint64, error)) (rev uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = b.corrupt(fmt.Errorf("bbolt panicked while writing: %v", p))
		}
	}()
	err = b.db.Update(func(tx *bolt.Tx) error {
		var err error
		rev, err = fn(tx)
		return err
	})
	return rev, err
}

// applyBatch evaluates and applies each caller's ops in order, giving each
// successful caller the next revision; it returns the last revision used.
func (b *Bolt) applyBatch(tx *bolt.Tx, base uint64, batch []*commitReq) (uint64, error) {
	meta, logb, kinds := tx.Bucket(bucketMeta), tx.Bucket(bucketLog), tx.Bucket(bucketKinds)
	// The log's keys only grow: its pages are filled before they split instead of left
	// half empty (bbolt's default for keys that arrive in any order), as etcd does for its
	// sequential keys. Half as many log pages to allocate, write and compact away.
	logb.FillPercent = logFillPercent
	rev := base
	for _, r := range batch {
		r.res, r.evs = commitResult{}, nil
		if err := r.ctx.Err(); err != nil {
			r.res.err = err
			continue
		}
		ops := r.ops
		if r.merge != nil {
			var err error
			if ops, err = b.deferredOps(kinds, r); err != nil {
				r.res.err = err
				continue
			}
		}
		evs, writes, err := b.evaluate(kinds, ops, rev+1)
		if err != nil {
			r.res.err = err
			continue
		}
		rev++
		for _, w := range writes {
			kb, err := kinds.CreateBucketIfNotExists([]byte(w.kind))
			if err != nil {
				return 0, fmt.Errorf("bucket %q: %w", w.kind, err)
			}
			if w.rec == nil {
				err = kb.Delete([]byte(w.name))
			} else {
				err = kb.Put([]byte(w.name), encodeRecord(*w.rec))
			}
			if err != nil {
				return 0, fmt.Errorf("%s/%s: %w", w.kind, w.name, err)
			}
		}
		if err := logb.Put(revKey(rev), encodeEvents(evs)); err != nil {
			return 0, fmt.Errorf("log entry %d: %w", rev, err)
		}
		r.res.rev, r.evs = rev, evs
	}
	if rev == base {
		return base, errNoWrites
	}
	if err := putU64(meta, keyRevision, rev); err != nil {
		return 0, err
	}
	if err := b.compact(meta, logb, rev); err != nil {
		return 0, err
	}
	return rev, nil
}

// compact drops log entries older than the retention.
func (b *Bolt) compact(meta, logb *bolt.Bucket, rev uint64) error {
	if rev <= b.retention {
		return nil
	}
	floor := rev - b.retention
	compacted, err := readU64(meta, keyCompacted)
	if err != nil {
		return b.corrupt(err)
	}
	if floor <= compacted {
		return nil
	}
	var dead [][]byte
	c := logb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		r, err := keyRev(k)
		if err != nil {
			return b.corrupt(err)
		}
		if r > floor {
			break
		}
		dead = append(dead, k)
	}
	for _, k := range dead {
		if err := logb.Delete(k); err != nil {
			return err
		}
	}
	return putU64(meta, keyCompacted, floor)
}

// write is one staged change of a Commit: rec nil deletes.
type write struct {
	kind, name string
	rec        *stored
}

// evaluate checks ops against the transaction's state and returns the
// events and writes they make at revision rev, or an *OpError. It writes
// nothing, so a failing Commit leaves no trace.
func (b *Bolt) evaluate(kinds *bolt.Bucket, ops []Op, rev uint64) ([]Event, []write, error) {
	type key struct{ kind, name string }
	staged := make(map[key]int, len(ops)) // index into writes
	writes := make([]write, 0, len(ops))
	evs := make([]Event, 0, len(ops))
	for i, op := range ops {
		k := key{op.Kind, op.Name}
		var cur *stored
		if j, ok := staged[k]; ok {
			cur = writes[j].rec
		} else if kb := kinds.Bucket([]byte(op.Kind)); kb != nil {
			if v := kb.Get([]byte(op.Name)); v != nil {
				s, err := decodeRecord(v)
				if err != nil {
					return nil, nil, b.corrupt(fmt.Errorf("%s/%s: %w", op.Kind, op.Name, err))
				}
				cur = &s
			}
		}
		fail := func(err error) ([]Event, []write, error) {
			return nil, nil, &OpError{Index: i, Op: op, Err: err}
		}
		switch {
		case op.Type == OpCreate && cur != nil:
			return fail(ErrExists)
		case (op.Type == OpUpdate || op.Type == OpDelete) && cur == nil:
			return fail(ErrNotFound)
		}
		if op.ExpectRevision != 0 {
			var have uint64
			if cur != nil {
				have = cur.modRev
			}
			if have != op.ExpectRevision {
				return fail(fmt.Errorf("%w: expected %d, record is at %d", ErrRevisionMismatch, op.ExpectRevision, have))
			}
		}
		var next *stored
		ev := Event{Kind: op.Kind, Name: op.Name, Revision: rev}
		if op.Type == OpDelete {
			ev.Type, ev.Value, ev.CreateRevision = EventDelete, cur.value, cur.createRev
		} else {
			next = &stored{createRev: rev, modRev: rev, value: op.Value}
			if cur != nil {
				next.createRev = cur.createRev
			}
			ev.Type, ev.Value, ev.CreateRevision = EventPut, op.Value, next.createRev
		}
		if j, ok := staged[k]; ok {
			writes[j].rec = next
		} else {
			staged[k] = len(writes)
			writes = append(writes, write{kind: op.Kind, name: op.Name, rec: next})
		}
		evs = append(evs, ev)
	}
	return evs, writes, nil
}
