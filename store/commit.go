package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// commitReq is one Commit call waiting for the committer.
type commitReq struct {
	ctx  context.Context
	ops  []Op
	done chan commitResult // buffered, receives exactly one result
	// set by the committer while the batch transaction runs
	res commitResult
	evs []Event
}

type commitResult struct {
	rev uint64
	err error
}

// errNoWrites rolls back a batch transaction in which every caller failed.
var errNoWrites = errors.New("no writes")

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
	req := &commitReq{ctx: ctx, ops: own, done: make(chan commitResult, 1)}
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

// commitLoop is the single writer: it takes the waiting Commit calls, runs
// them in one transaction, publishes their events and answers them.
func (b *Bolt) commitLoop() {
	defer close(b.stopped)
	batch := make([]*commitReq, 0, b.maxBatch)
	last := 1 // size of the previous batch
	for {
		batch = batch[:0]
		select { // Close wins over waiting callers
		case <-b.closing:
			b.failPending()
			return
		default:
		}
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.closing:
			b.failPending()
			return
		}
		batch = b.gather(batch, last)
		last = len(batch)
		b.runBatch(batch)
		clear(batch)
	}
}

// gather adds the Commit calls already waiting. When the previous batch
// had company, it also waits up to MaxBatchDelay for as many callers as that
// batch had: callers answered by the last transaction come back one by one,
// and the first of them should not get a transaction (and two fsyncs) of its
// own. A lone client never waits.
func (b *Bolt) gather(batch []*commitReq, last int) []*commitReq {
	for len(batch) < b.maxBatch {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
			continue
		default:
		}
		break
	}
	want := min(last, b.maxBatch)
	if b.batchDelay <= 0 || len(batch) >= want {
		return batch
	}
	t := time.NewTimer(b.batchDelay)
	defer t.Stop()
	for len(batch) < want {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-t.C:
			return batch
		case <-b.closing:
			return batch
		}
	}
	return batch
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

// runBatch commits a batch in one transaction and answers every caller.
func (b *Bolt) runBatch(batch []*commitReq) {
	if err := b.failure(); err != nil {
		for _, r := range batch {
			r.done <- commitResult{err: err}
		}
		return
	}
	base := b.rev.Load()
	b.batches.Add(1)
	rev, err := b.update(func(tx *bolt.Tx) (uint64, error) { return b.applyBatch(tx, base, batch) })
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
		b.hub.publish(batch, rev, b.watchBuffer)
	}
	for _, r := range batch {
		r.done <- r.res
		r.evs = nil
	}
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
	rev := base
	for _, r := range batch {
		r.res, r.evs = commitResult{}, nil
		if err := r.ctx.Err(); err != nil {
			r.res.err = err
			continue
		}
		evs, writes, err := b.evaluate(kinds, r.ops, rev+1)
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
