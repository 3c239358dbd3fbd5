package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// setTo is a Merge that writes v, or leaves the record when it already holds v.
func setTo(v string) Merge {
	return func(cur []byte, _ uint64) ([]byte, error) {
		if string(cur) == v {
			return nil, nil
		}
		return []byte(v), nil
	}
}

// TestDeferRidesWithCommit checks that deferred writes share the next Commit's transaction,
// are applied before it, and are coalesced per record.
func TestDeferRidesWithCommit(t *testing.T) {
	s := openAt(t, dbPath(t), Options{DeferDelay: time.Hour})
	ctx := t.Context()
	mustCommit(t, s, put("st", "a", "0"))
	before := s.Stats()
	for i := range 5 {
		if err := s.Defer("st", "a", setTo(fmt.Sprint(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Defer("st", "b", setTo("x")); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get(ctx, "st", "a"); string(r.Value) != "0" {
		t.Fatalf("a deferred write is visible before its transaction: %q", r.Value)
	}
	// A conditional Commit on the record's revision before the deferred write fails: the
	// deferred write was queued first, so it is applied first.
	rev := mustCommit(t, s, put("other", "x", "y"))
	after := s.Stats()
	if got := after.Transactions - before.Transactions; got != 1 {
		t.Errorf("deferred writes and a Commit took %d transactions, want 1", got)
	}
	if got := after.Deferred - before.Deferred; got != 2 {
		t.Errorf("%d deferred writes applied, want 2 (five of one record coalesce)", got)
	}
	if got := after.Coalesced - before.Coalesced; got != 4 {
		t.Errorf("%d coalesced, want 4", got)
	}
	a, err := s.Get(ctx, "st", "a")
	if err != nil || string(a.Value) != "5" || a.ModRevision >= rev {
		t.Fatalf("st/a = %q at %d (%v), want the last deferred value at a revision before the Commit's %d", a.Value, a.ModRevision, err, rev)
	}
	if b, err := s.Get(ctx, "st", "b"); err != nil || string(b.Value) != "x" {
		t.Fatalf("st/b = %q (%v)", b.Value, err)
	}
	// A merge that changes nothing uses no revision.
	if err := s.Defer("st", "a", setTo("5")); err != nil {
		t.Fatal(err)
	}
	rev2 := mustCommit(t, s, put("other", "x", "z"))
	if rev2 != rev+1 {
		t.Errorf("a merge that changed nothing used a revision: %d after %d", rev2, rev)
	}
	// A failing merge fails alone.
	if err := s.Defer("st", "a", func([]byte, uint64) ([]byte, error) { return nil, errors.New("boom") }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, put("other", "x", "w")); err != nil {
		t.Fatalf("a Commit failed with a failing deferred write in its batch: %v", err)
	}
}

// TestDeferAlone checks that a deferred write without any Commit is applied within DeferDelay,
// is seen by Watch, and that Close writes what is still deferred.
func TestDeferAlone(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path, Options{DeferDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := s.Watch(ctx, "st", s.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Defer("st", "a", setTo("1")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Name != "a" || string(ev.Value) != "1" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deferred write without Commits was never applied")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// This one waits for Close.
	if s, err = Open(path, Options{DeferDelay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := s.Defer("st", "b", setTo("2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	if r, err := s.Get(t.Context(), "st", "b"); err != nil || string(r.Value) != "2" {
		t.Fatalf("deferred write pending at Close: %q, %v", r.Value, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Defer("st", "c", setTo("3")); !errors.Is(err, ErrClosed) {
		t.Errorf("Defer after Close: %v, want ErrClosed", err)
	}
	if err := s.Defer("", "b", setTo("2")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Defer with an empty kind: %v", err)
	}
}
