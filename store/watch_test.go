package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recv reads n events from ch, failing the test on close or after 10s.
func recv(t testing.TB, ch <-chan Event, n int) []Event {
	t.Helper()
	var out []Event
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("timed out after %d of %d events", len(out), n)
		}
	}
	return out
}

// waitClosed drains ch until it is closed, failing after 10s.
func waitClosed(t testing.TB, ch <-chan Event) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("watch channel not closed")
		}
	}
}

func evString(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%d:%s %s/%s=%s(c%d)", ev.Revision, ev.Type, ev.Kind, ev.Name, ev.Value, ev.CreateRevision))
	}
	return out
}

func TestWatchReplayAndLive(t *testing.T) {
	s := openTest(t)
	mustCommit(t, s, put("t", "a", "1"), put("u", "x", "9"))   // 1
	mustCommit(t, s, put("t", "a", "2"))                       // 2
	mustCommit(t, s, Op{Type: OpDelete, Kind: "t", Name: "a"}) // 3
	tests := []struct {
		name string
		kind string
		from uint64
		want []string // the 3 replayed and 2 live events (or fewer when filtered)
	}{
		{"all from 0", "", 0, []string{
			"1:put t/a=1(c1)", "1:put u/x=9(c1)", "2:put t/a=2(c1)", "3:delete t/a=2(c1)",
			"4:put t/b=live(c4)", "5:put u/y=live(c5)"}},
		{"kind t from 0", "t", 0, []string{
			"1:put t/a=1(c1)", "2:put t/a=2(c1)", "3:delete t/a=2(c1)", "4:put t/b=live(c4)"}},
		{"resume from 2", "", 2, []string{"3:delete t/a=2(c1)", "4:put t/b=live(c4)", "5:put u/y=live(c5)"}},
		{"from current", "", 3, []string{"4:put t/b=live(c4)", "5:put u/y=live(c5)"}},
		{"kind u from 1", "u", 1, []string{"5:put u/y=live(c5)"}},
	}
	var chans []<-chan Event
	for _, tt := range tests {
		ch, err := s.Watch(t.Context(), tt.kind, tt.from)
		if err != nil {
			t.Fatalf("%s: Watch: %v", tt.name, err)
		}
		chans = append(chans, ch)
	}
	mustCommit(t, s, put("t", "b", "live")) // 4
	mustCommit(t, s, put("u", "y", "live")) // 5
	for i, tt := range tests {
		got := evString(recv(t, chans[i], len(tt.want)))
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s:\n got %v\nwant %v", tt.name, got, tt.want)
		}
	}
}

// TestWatchNoGapsNoDuplicates starts watchers while commits are running and
// checks that each sees every revision after its start exactly once, in order.
func TestWatchNoGapsNoDuplicates(t *testing.T) {
	s := openTest(t)
	const total = 400
	ctx := t.Context()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			if _, err := s.Commit(ctx, put("t", fmt.Sprint(i%13), fmt.Sprint(i))); err != nil {
				t.Errorf("commit: %v", err)
				return
			}
		}
	})
	for w := range 8 {
		from := s.Revision()
		ch, err := s.Watch(ctx, "", from)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			next := from + 1
			for next <= total {
				select {
				case ev, ok := <-ch:
					if !ok {
						t.Errorf("watcher %d closed at %d: %v", w, next, s.WatchErr(ch))
						return
					}
					if ev.Revision != next || string(ev.Value) != fmt.Sprint(ev.Revision-1) {
						t.Errorf("watcher %d: got revision %d value %s, want revision %d", w, ev.Revision, ev.Value, next)
						return
					}
					next++
				case <-time.After(10 * time.Second):
					t.Errorf("watcher %d: timeout at %d", w, next)
					return
				}
			}
		})
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
}

func TestWatchFromListRevision(t *testing.T) {
	s := openTest(t)
	for i := range 5 {
		mustCommit(t, s, put("t", fmt.Sprint(i), "v"))
	}
	_, rev, err := s.List(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(t.Context(), "t", rev)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, put("t", "next", "v"))
	if got := recv(t, ch, 1); got[0].Name != "next" || got[0].Revision != rev+1 {
		t.Fatalf("first event after List: %v", evString(got))
	}
}

func TestWatchCompacted(t *testing.T) {
	s := openAt(t, dbPath(t), Options{LogRetention: 5})
	for i := range 12 {
		mustCommit(t, s, put("t", "a", fmt.Sprint(i)))
	}
	// Revisions 1..7 are compacted: 8..12 remain, from >= 7 works.
	for _, tc := range []struct {
		from uint64
		ok   bool
	}{{0, false}, {6, false}, {7, true}, {12, true}} {
		ch, err := s.Watch(t.Context(), "", tc.from)
		if tc.ok {
			if err != nil {
				t.Errorf("Watch(%d): %v", tc.from, err)
				continue
			}
			if n := int(12 - tc.from); n > 0 {
				if got := recv(t, ch, n); got[0].Revision != tc.from+1 {
					t.Errorf("Watch(%d) first revision %d", tc.from, got[0].Revision)
				}
			}
			continue
		}
		var ce *CompactedError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) || ce.Oldest != 8 || ce.Requested != tc.from {
			t.Errorf("Watch(%d): %v, want *CompactedError oldest 8", tc.from, err)
		}
	}
	var logRevs []uint64
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLog).ForEach(func(k, _ []byte) error {
			r, _ := keyRev(k)
			logRevs = append(logRevs, r)
			return nil
		})
	})
	if fmt.Sprint(logRevs) != "[8 9 10 11 12]" {
		t.Errorf("change log holds revisions %v, want [8 9 10 11 12]", logRevs)
	}
	if _, err := s.Watch(t.Context(), "", 13); !errors.Is(err, ErrFutureRevision) {
		t.Errorf("Watch(13) at revision 12: %v, want ErrFutureRevision", err)
	}
	if err := check(s.Path(), 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("Check while open: %v, want ErrLocked", err)
	}
}

func TestWatchContextCancelClosesChannel(t *testing.T) {
	s := openTest(t)
	mustCommit(t, s, put("t", "a", "1"))
	for _, caughtUp := range []bool{false, true} {
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := s.Watch(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if caughtUp {
			recv(t, ch, 1)
		}
		cancel()
		waitClosed(t, ch)
		if err := s.WatchErr(ch); err != nil {
			t.Errorf("WatchErr after cancel: %v, want nil", err)
		}
	}
}

func TestWatchCloseStoreClosesChannel(t *testing.T) {
	s, err := Open(dbPath(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, put("t", "a", "1"))
	ch, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	if err := s.WatchErr(ch); !errors.Is(err, ErrClosed) {
		t.Errorf("WatchErr: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(t.Context(), "", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
}

// TestWatchSlowConsumer checks that a consumer that stops reading does not
// block writers, loses its channel with ErrWatchOverflow, and can resume
// from the last revision it received without gaps.
func TestWatchSlowConsumer(t *testing.T) {
	const buffer = 16
	s := openAt(t, dbPath(t), Options{WatchBuffer: buffer})
	ctx := t.Context()
	slow, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, put("t", "a", "0"))
	first := recv(t, slow, 1)[0] // slow is now live; it reads nothing more for a while
	// The fast watcher reads each event before the next commit: it keeps up however the goroutines
	// are scheduled (reading from another goroutine, a starved reader overflowed too on a loaded machine).
	fastGot := recv(t, fast, 1)
	for i := 1; i < 100; i++ {
		mustCommit(t, s, put("t", "a", fmt.Sprint(i))) // must not block on slow
		fastGot = append(fastGot, recv(t, fast, 1)...)
	}
	if len(fastGot) != 100 || fastGot[99].Revision != 100 {
		t.Fatalf("fast watcher got %d events", len(fastGot))
	}
	// The slow watcher was blocked handing event 2 to its consumer; the
	// overflow must close the channel without the consumer reading.
	select {
	case ev, ok := <-slow:
		if ok {
			t.Fatalf("slow watcher still delivers (revision %d) after overflowing", ev.Revision)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow watcher's channel not closed")
	}
	if err := s.WatchErr(slow); !errors.Is(err, ErrWatchOverflow) {
		t.Fatalf("WatchErr(slow): %v, want ErrWatchOverflow", err)
	}
	if err := s.WatchErr(fast); err != nil {
		t.Fatalf("WatchErr(fast) while open: %v", err)
	}
	resumed, err := s.Watch(ctx, "", first.Revision)
	if err != nil {
		t.Fatal(err)
	}
	got := recv(t, resumed, 99)
	for i, ev := range got {
		if ev.Revision != first.Revision+1+uint64(i) {
			t.Fatalf("resumed event %d has revision %d", i, ev.Revision)
		}
	}
}

// TestWatchSlowReplayDoesNotOverflow: a replay longer than the buffer is
// paced by the consumer.
func TestWatchSlowReplayDoesNotOverflow(t *testing.T) {
	s := openAt(t, dbPath(t), Options{WatchBuffer: 4})
	for i := range 50 {
		mustCommit(t, s, put("t", "a", fmt.Sprint(i)))
	}
	ch, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := recv(t, ch, 50)
	if got[49].Revision != 50 {
		t.Fatalf("last replayed revision %d", got[49].Revision)
	}
}

// TestWatchOverflowAtRevisionBoundary: a consumer that stops in the middle
// of a multi-op revision still gets the rest of that revision before its
// channel closes for overflow, so resuming from the last revision it saw
// misses nothing.
func TestWatchOverflowAtRevisionBoundary(t *testing.T) {
	s := openAt(t, dbPath(t), Options{WatchBuffer: 8})
	ctx := t.Context()
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	three := func(i int) []Op {
		return []Op{put("t", "a", fmt.Sprint(i)), put("t", "b", fmt.Sprint(i)), put("t", "c", fmt.Sprint(i))}
	}
	mustCommit(t, s, three(1)...)
	first := recv(t, ch, 1) // the consumer stops after 1 of 3 events of revision 1
	for i := 2; i <= 10; i++ {
		mustCommit(t, s, three(i)...) // overflows the buffer of 8
	}
	var got []Event
	for ev := range ch {
		got = append(got, ev)
	}
	if err := s.WatchErr(ch); !errors.Is(err, ErrWatchOverflow) {
		t.Fatalf("WatchErr: %v, want ErrWatchOverflow", err)
	}
	all := append(first, got...)
	last := all[len(all)-1].Revision
	n := 0
	for _, ev := range all {
		if ev.Revision == last {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("closed in the middle of revision %d (%d of 3 events): %v", last, n, evString(all))
	}
	resumed, err := s.Watch(ctx, "", last)
	if err != nil {
		t.Fatal(err)
	}
	rest := recv(t, resumed, int(10-last)*3)
	if rest[0].Revision != last+1 || rest[len(rest)-1].Revision != 10 {
		t.Fatalf("resumed events %v", evString(rest))
	}
}

// TestWatchBigCommitDoesNotOverflow: one Commit with more ops than the
// watch buffer reaches a consumer that keeps up.
func TestWatchBigCommitDoesNotOverflow(t *testing.T) {
	s := openAt(t, dbPath(t), Options{WatchBuffer: 4})
	ch, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range 50 {
		ops = append(ops, put("t", fmt.Sprint(i), "v"))
	}
	mustCommit(t, s, put("t", "first", "v"))
	recv(t, ch, 1) // live now, nothing pending
	mustCommit(t, s, ops...)
	got := recv(t, ch, 50)
	if got[49].Revision != 2 || got[49].Name != "49" {
		t.Fatalf("last event %v", evString(got[49:]))
	}
}
