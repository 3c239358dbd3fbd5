package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bitbuilder/bitbuilder/store"
)

// A reconciler lists a kind, then follows changes from the List revision.
// When the watch channel closes, WatchErr says why: after ErrWatchOverflow
// it resumes from the last revision it saw; after a compaction it lists
// again.
func Example() {
	dir, _ := os.MkdirTemp("", "store-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	rev, _ := s.Commit(ctx, store.Op{Type: store.OpCreate, Kind: "tenant", Name: "acme", Value: []byte(`{"index":1}`)})
	fmt.Println("created at revision", rev)

	_, err = s.Commit(ctx, store.Op{Type: store.OpCreate, Kind: "tenant", Name: "acme"})
	fmt.Println("second create:", errors.Is(err, store.ErrExists))

	recs, listRev, _ := s.List(ctx, "tenant")
	fmt.Println("listed", len(recs), "at revision", listRev)

	events, _ := s.Watch(ctx, "tenant", listRev)
	s.Commit(ctx, store.Op{Type: store.OpUpdate, Kind: "tenant", Name: "acme", Value: []byte(`{"index":2}`), ExpectRevision: recs[0].ModRevision})
	ev := <-events
	fmt.Println(ev.Type, ev.Name, string(ev.Value), "at revision", ev.Revision)

	cancel()
	for range events { // drained and closed once ctx ends
	}
	if err := s.WatchErr(events); errors.Is(err, store.ErrWatchOverflow) {
		// resume: s.Watch(ctx, "tenant", ev.Revision)
	} else if errors.Is(err, store.ErrCompacted) {
		// start over: List, then Watch from its revision
	}
	// Output:
	// created at revision 1
	// second create: true
	// listed 1 at revision 1
	// put acme {"index":2} at revision 2
}
