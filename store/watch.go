package store

import (
	"context"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// replayChunk is how many revisions a catching-up watcher reads from the
// change log per read transaction.
const replayChunk = 256

// hub hands the events of acknowledged commits to live watchers.
type hub struct {
	mu   sync.Mutex
	rev  uint64                 // last published revision
	live map[*watcher]struct{}  // watchers that have caught up
	errs map[<-chan Event]error // why a channel was closed, until its ctx ends
}

func (h *hub) init(rev uint64) {
	h.rev = rev
	h.live = make(map[*watcher]struct{})
	h.errs = make(map[<-chan Event]error)
}

// watcher is one Watch call. Until it has caught up it reads the change log
// itself, paced by its consumer; then the committer queues events for it.
type watcher struct {
	kind string
	out  chan Event

	// guarded by hub.mu
	pos    uint64 // events up to pos have been delivered or are queued
	queue  []Event
	notify chan struct{} // capacity 1: the queue grew

	overflow chan struct{} // closed by publish when the queue overflowed
}

// publish queues the events of a committed batch for the live watchers. It
// is called by the committer only, in revision order.
func (h *hub) publish(batch []*commitReq, rev uint64, limit int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.live {
		n := len(w.queue)
		for _, r := range batch {
			if r.res.err != nil || r.res.rev <= w.pos {
				continue
			}
			for _, ev := range r.evs {
				if w.kind == "" || ev.Kind == w.kind {
					w.queue = append(w.queue, ev)
				}
			}
		}
		w.pos = rev
		// Overflow only a consumer that is behind: a watcher with nothing
		// pending takes a batch of any size (one big Commit must not
		// overflow every watcher).
		if n > 0 && len(w.queue) > limit {
			w.queue = nil
			delete(h.live, w)
			close(w.overflow) // also stops a send blocked on the consumer
			continue
		} else if len(w.queue) == n {
			continue
		}
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
	h.rev = rev
}

// Watch replays the change log after fromRevision for kind ("" for all
// kinds), then streams new events. See Store.Watch. Event values are shared
// between watchers: do not modify them.
func (b *Bolt) Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan Event, error) {
	if kind != "" {
		if err := validKind(kind); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	err := b.view(func(tx *bolt.Tx) error { return b.checkFrom(tx, fromRevision, true) })
	if err != nil {
		return nil, err
	}
	w := &watcher{kind: kind, out: make(chan Event), notify: make(chan struct{}, 1), overflow: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.wg.Add(1)
	b.mu.Unlock()
	go b.runWatcher(ctx, w, fromRevision)
	return w.out, nil
}

// checkFrom verifies that the log holds every revision after from.
func (b *Bolt) checkFrom(tx *bolt.Tx, from uint64, future bool) error {
	meta := tx.Bucket(bucketMeta)
	compacted, err := readU64(meta, keyCompacted)
	if err != nil {
		return b.corrupt(err)
	}
	if from < compacted {
		return &CompactedError{Requested: from, Oldest: compacted + 1}
	}
	if future {
		rev, err := readU64(meta, keyRevision)
		if err != nil {
			return b.corrupt(err)
		}
		if from > rev {
			return fmt.Errorf("store: watch from revision %d, store is at %d: %w", from, rev, ErrFutureRevision)
		}
	}
	return nil
}

// WatchErr returns why a channel returned by Watch was closed; see
// Store.WatchErr. The reason is kept until the watch's context ends.
func (b *Bolt) WatchErr(ch <-chan Event) error {
	b.hub.mu.Lock()
	defer b.hub.mu.Unlock()
	return b.hub.errs[ch]
}

func (b *Bolt) runWatcher(ctx context.Context, w *watcher, from uint64) {
	defer b.wg.Done()
	err := b.follow(ctx, w, from)
	h := &b.hub
	h.mu.Lock()
	delete(h.live, w)
	if err != nil && ctx.Err() == nil {
		h.errs[w.out] = err
		context.AfterFunc(ctx, func() {
			h.mu.Lock()
			delete(h.errs, w.out)
			h.mu.Unlock()
		})
	}
	h.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		b.log.Warn("watch closed", "kind", w.kind, "err", err)
	}
	close(w.out)
}

// follow catches up from the change log, then delivers queued live events,
// until ctx ends, the store closes or the watcher overflows.
func (b *Bolt) follow(ctx context.Context, w *watcher, pos uint64) error {
	h := &b.hub
	for {
		h.mu.Lock()
		if pos >= h.rev {
			w.pos = pos
			h.live[w] = struct{}{}
			h.mu.Unlock()
			break
		}
		target := h.rev
		h.mu.Unlock()
		evs, last, err := b.readLog(w.kind, pos, min(target, pos+replayChunk))
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := b.send(ctx, w, ev, nil); err != nil {
				return err
			}
		}
		pos = last
	}
	for {
		select {
		case <-w.notify:
		case <-w.overflow:
			return fmt.Errorf("store: watch %q: %w", w.kind, ErrWatchOverflow)
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closing:
			return ErrClosed
		}
		h.mu.Lock()
		q := w.queue
		w.queue = nil
		h.mu.Unlock()
		for i, ev := range q {
			// An overflow closes the channel only between revisions, so
			// that resuming from the last revision received loses nothing.
			overflow := w.overflow
			if i > 0 && q[i-1].Revision == ev.Revision {
				overflow = nil
			}
			if err := b.send(ctx, w, ev, overflow); err != nil {
				return err
			}
		}
	}
}

// send hands ev to the consumer unless ctx ends, the store closes, or
// overflow (if not nil) is closed.
func (b *Bolt) send(ctx context.Context, w *watcher, ev Event, overflow <-chan struct{}) error {
	select {
	case w.out <- ev:
		return nil
	case <-overflow:
		return fmt.Errorf("store: watch %q: %w", w.kind, ErrWatchOverflow)
	case <-ctx.Done():
		return ctx.Err()
	case <-b.closing:
		return ErrClosed
	}
}

// readLog returns the events of kind with revisions in (from, to], and to.
func (b *Bolt) readLog(kind string, from, to uint64) ([]Event, uint64, error) {
	var evs []Event
	err := b.view(func(tx *bolt.Tx) error {
		if err := b.checkFrom(tx, from, false); err != nil {
			return err
		}
		c := tx.Bucket(bucketLog).Cursor()
		next := from + 1
		for k, v := c.Seek(revKey(next)); k != nil; k, v = c.Next() {
			rev, err := keyRev(k)
			if err != nil {
				return b.corrupt(err)
			}
			if rev > to {
				break
			}
			if rev != next {
				return b.corrupt(fmt.Errorf("change log: revision %d missing", next))
			}
			next++
			all, err := decodeEvents(rev, v)
			if err != nil {
				return b.corrupt(err)
			}
			for _, ev := range all {
				if kind == "" || ev.Kind == kind {
					evs = append(evs, ev)
				}
			}
		}
		if next != to+1 {
			return b.corrupt(fmt.Errorf("change log: revisions %d to %d missing", next, to))
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return evs, to, nil
}
