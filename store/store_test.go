package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "state.db") }

func openAt(t testing.TB, path string, opts Options) *Bolt {
	t.Helper()
	b, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func openTest(t testing.TB) *Bolt { return openAt(t, dbPath(t), Options{}) }

func mustCommit(t testing.TB, s Store, ops ...Op) uint64 {
	t.Helper()
	rev, err := s.Commit(context.Background(), ops...)
	if err != nil {
		t.Fatalf("Commit(%v): %v", ops, err)
	}
	return rev
}

func put(kind, name, value string) Op {
	return Op{Type: OpPut, Kind: kind, Name: name, Value: []byte(value)}
}

// snapshot returns every record of the given kinds as "kind/name=value@create/mod".
func snapshot(t testing.TB, s Store, kinds ...string) []string {
	t.Helper()
	var out []string
	for _, k := range kinds {
		recs, _, err := s.List(t.Context(), k)
		if err != nil {
			t.Fatalf("List(%s): %v", k, err)
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%s/%s=%s@%d/%d", r.Kind, r.Name, r.Value, r.CreateRevision, r.ModRevision))
		}
	}
	return out
}

func TestCommitOps(t *testing.T) {
	tests := []struct {
		name    string
		setup   []Op   // committed first, as revision 1
		ops     []Op   // the commit under test, revision 2 if it succeeds
		wantErr error  // nil, or the sentinel the *OpError wraps
		wantIdx int    // index in *OpError
		want    string // Get(kind "t", name "a") afterwards: "value@create/mod" or "absent"
	}{
		{name: "create new", ops: []Op{{Type: OpCreate, Kind: "t", Name: "a", Value: []byte("1")}}, want: "1@2/2"},
		{name: "create existing", setup: []Op{put("t", "a", "0")},
			ops: []Op{{Type: OpCreate, Kind: "t", Name: "a", Value: []byte("1")}}, wantErr: ErrExists, want: "0@1/1"},
		{name: "update existing keeps create revision", setup: []Op{put("t", "a", "0")},
			ops: []Op{{Type: OpUpdate, Kind: "t", Name: "a", Value: []byte("1")}}, want: "1@1/2"},
		{name: "update missing", ops: []Op{{Type: OpUpdate, Kind: "t", Name: "a", Value: []byte("1")}},
			wantErr: ErrNotFound, want: "absent"},
		{name: "put creates", ops: []Op{put("t", "a", "1")}, want: "1@2/2"},
		{name: "put replaces", setup: []Op{put("t", "a", "0")}, ops: []Op{put("t", "a", "1")}, want: "1@1/2"},
		{name: "delete existing", setup: []Op{put("t", "a", "0")},
			ops: []Op{{Type: OpDelete, Kind: "t", Name: "a"}}, want: "absent"},
		{name: "delete missing", ops: []Op{{Type: OpDelete, Kind: "t", Name: "a"}}, wantErr: ErrNotFound, want: "absent"},
		{name: "expect revision matches", setup: []Op{put("t", "a", "0")},
			ops: []Op{{Type: OpUpdate, Kind: "t", Name: "a", Value: []byte("1"), ExpectRevision: 1}}, want: "1@1/2"},
		{name: "expect revision stale", setup: []Op{put("t", "a", "0")},
			ops:     []Op{{Type: OpPut, Kind: "t", Name: "a", Value: []byte("1"), ExpectRevision: 7}},
			wantErr: ErrRevisionMismatch, want: "0@1/1"},
		{name: "expect revision on absent record", setup: []Op{put("t", "b", "0")},
			ops:     []Op{{Type: OpPut, Kind: "t", Name: "a", Value: []byte("1"), ExpectRevision: 1}},
			wantErr: ErrRevisionMismatch, want: "absent"},
		{name: "delete with stale revision", setup: []Op{put("t", "a", "0")},
			ops: []Op{{Type: OpDelete, Kind: "t", Name: "a", ExpectRevision: 2}}, wantErr: ErrRevisionMismatch, want: "0@1/1"},
		{name: "multi-op all applied", ops: []Op{put("t", "a", "1"), put("u", "b", "2")}, want: "1@2/2"},
		{name: "multi-op one fails, nothing written", setup: []Op{put("t", "x", "0")},
			ops:     []Op{put("t", "a", "1"), {Type: OpCreate, Kind: "t", Name: "x"}, put("t", "c", "3")},
			wantErr: ErrExists, wantIdx: 1, want: "absent"},
		{name: "create then update in one commit", ops: []Op{
			{Type: OpCreate, Kind: "t", Name: "a", Value: []byte("1")},
			{Type: OpUpdate, Kind: "t", Name: "a", Value: []byte("2")}}, want: "2@2/2"},
		{name: "delete then create in one commit", setup: []Op{put("t", "a", "0")}, ops: []Op{
			{Type: OpDelete, Kind: "t", Name: "a"},
			{Type: OpCreate, Kind: "t", Name: "a", Value: []byte("1")}}, want: "1@2/2"},
		{name: "create then delete then update fails", ops: []Op{
			{Type: OpCreate, Kind: "t", Name: "a", Value: []byte("1")},
			{Type: OpDelete, Kind: "t", Name: "a"},
			{Type: OpUpdate, Kind: "t", Name: "a", Value: []byte("2")}}, wantErr: ErrNotFound, wantIdx: 2, want: "absent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			ctx := t.Context()
			setup := append([]Op{put("setup", "marker", "")}, tt.setup...)
			if rev := mustCommit(t, s, setup...); rev != 1 {
				t.Fatalf("setup revision %d, want 1", rev)
			}
			before := snapshot(t, s, "t", "u")
			rev, err := s.Commit(ctx, tt.ops...)
			if tt.wantErr != nil {
				var oe *OpError
				if !errors.As(err, &oe) || !errors.Is(err, tt.wantErr) || oe.Index != tt.wantIdx {
					t.Fatalf("Commit: err %v, want *OpError index %d wrapping %v", err, tt.wantIdx, tt.wantErr)
				}
				if s.Revision() != 1 {
					t.Errorf("failed commit moved revision to %d", s.Revision())
				}
				if after := snapshot(t, s, "t", "u"); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("failed commit changed state:\nbefore %v\nafter  %v", before, after)
				}
			} else if err != nil || rev != 2 {
				t.Fatalf("Commit: rev %d err %v, want rev 2", rev, err)
			}
			got := "absent"
			r, err := s.Get(ctx, "t", "a")
			switch {
			case err == nil:
				got = fmt.Sprintf("%s@%d/%d", r.Value, r.CreateRevision, r.ModRevision)
			case !errors.Is(err, ErrNotFound):
				t.Fatalf("Get: %v", err)
			}
			if got != tt.want {
				t.Errorf("t/a = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	long := string(bytes.Repeat([]byte("k"), MaxKindLen+1))
	tests := []struct {
		name string
		ops  []Op
	}{
		{"no ops", nil},
		{"empty kind", []Op{put("", "a", "")}},
		{"empty name", []Op{put("t", "", "")}},
		{"NUL in name", []Op{put("t", "a\x00b", "")}},
		{"kind too long", []Op{put(long, "a", "")}},
		{"name too long", []Op{put("t", string(bytes.Repeat([]byte("n"), MaxNameLen+1)), "")}},
		{"unknown op", []Op{{Type: 99, Kind: "t", Name: "a"}}},
		{"zero op", []Op{{Kind: "t", Name: "a"}}},
		{"value too large", []Op{{Type: OpPut, Kind: "t", Name: "a", Value: make([]byte, MaxValueSize+1)}}},
		{"second op bad", []Op{put("t", "ok", "1"), put("t", "", "")}},
	}
	s := openTest(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev, err := s.Commit(t.Context(), tt.ops...)
			if !errors.Is(err, ErrInvalid) || rev != 0 {
				t.Fatalf("Commit: rev %d err %v, want ErrInvalid", rev, err)
			}
			if s.Revision() != 0 || len(snapshot(t, s, "t")) != 0 {
				t.Fatalf("invalid commit changed the store")
			}
		})
	}
	for _, tc := range []struct{ kind, name string }{{"", "a"}, {"t", ""}, {"t\x00", "a"}} {
		if _, err := s.Get(t.Context(), tc.kind, tc.name); !errors.Is(err, ErrInvalid) {
			t.Errorf("Get(%q, %q): %v, want ErrInvalid", tc.kind, tc.name, err)
		}
	}
	if _, _, err := s.List(t.Context(), ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("List(\"\"): %v, want ErrInvalid", err)
	}
}

func TestListSortedWithRevision(t *testing.T) {
	s := openTest(t)
	names := []string{"m", "b", "z", "a", "aa", "B"}
	for _, n := range names {
		mustCommit(t, s, put("t", n, "v-"+n))
	}
	mustCommit(t, s, put("other", "x", "y"))
	recs, rev, err := s.List(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if rev != 7 {
		t.Errorf("List revision %d, want 7", rev)
	}
	var got []string
	for _, r := range recs {
		if string(r.Value) != "v-"+r.Name || r.Kind != "t" {
			t.Errorf("record %+v has wrong kind or value", r)
		}
		got = append(got, r.Name)
	}
	if want := "[B a aa b m z]"; fmt.Sprint(got) != want {
		t.Errorf("List names %v, want %s", got, want)
	}
	if recs, _, err := s.List(t.Context(), "none"); err != nil || len(recs) != 0 {
		t.Errorf("List(none) = %v, %v; want empty", recs, err)
	}
}

func TestRevisionsStrictlyIncrease(t *testing.T) {
	s := openTest(t)
	var last uint64
	for i := range 50 {
		rev := mustCommit(t, s, put("t", fmt.Sprint(i%7), fmt.Sprint(i)))
		if rev != last+1 || s.Revision() != rev {
			t.Fatalf("commit %d: revision %d (store %d), want %d", i, rev, s.Revision(), last+1)
		}
		last = rev
	}
}

func TestCallerBufferReuseDoesNotLeak(t *testing.T) {
	s := openTest(t)
	buf := []byte("first")
	mustCommit(t, s, Op{Type: OpPut, Kind: "t", Name: "a", Value: buf})
	copy(buf, "XXXXX")
	r, err := s.Get(t.Context(), "t", "a")
	if err != nil || string(r.Value) != "first" {
		t.Fatalf("Get = %q, %v; want first", r.Value, err)
	}
	r.Value[0] = 'Y'
	if r2, _ := s.Get(t.Context(), "t", "a"); string(r2.Value) != "first" {
		t.Fatalf("modifying a returned value changed the store: %q", r2.Value)
	}
}

// TestConcurrentCommitters checks group commit: every caller gets its own
// result and revision, business errors stay with their caller.
func TestConcurrentCommitters(t *testing.T) {
	const n = 64
	s := openTest(t)
	mustCommit(t, s, put("t", "taken", "x"))
	ctx := t.Context()
	var wg sync.WaitGroup
	revs := make([]uint64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ops := []Op{put("t", fmt.Sprintf("g%02d", i), fmt.Sprint(i))}
			if i%8 == 0 { // every 8th caller also tries to create an existing record
				ops = append(ops, Op{Type: OpCreate, Kind: "t", Name: "taken"})
			}
			revs[i], errs[i] = s.Commit(ctx, ops...)
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i := range n {
		if i%8 == 0 {
			if !errors.Is(errs[i], ErrExists) {
				t.Errorf("caller %d: %v, want ErrExists", i, errs[i])
			}
			if _, err := s.Get(ctx, "t", fmt.Sprintf("g%02d", i)); !errors.Is(err, ErrNotFound) {
				t.Errorf("caller %d failed but its record exists (%v)", i, err)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
			continue
		}
		if seen[revs[i]] || revs[i] < 2 {
			t.Errorf("caller %d: revision %d duplicate or too small", i, revs[i])
		}
		seen[revs[i]] = true
		r, err := s.Get(ctx, "t", fmt.Sprintf("g%02d", i))
		if err != nil || string(r.Value) != fmt.Sprint(i) || r.ModRevision != revs[i] {
			t.Errorf("caller %d: Get = %+v, %v; want value %d at revision %d", i, r, err, i, revs[i])
		}
	}
	if want := uint64(1 + n - n/8); s.Revision() != want {
		t.Errorf("store revision %d, want %d", s.Revision(), want)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustCommit(t, s, put("t", fmt.Sprint(i), fmt.Sprint(i)))
	}
	mustCommit(t, s, Op{Type: OpDelete, Kind: "t", Name: "3"})
	want := snapshot(t, s, "t")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "t", "1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Commit(t.Context(), put("t", "x", "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	s2 := openAt(t, path, Options{})
	if s2.Revision() != 21 {
		t.Errorf("revision after reopen %d, want 21", s2.Revision())
	}
	if got := snapshot(t, s2, "t"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after reopen\n got %v\nwant %v", got, want)
	}
	if rev := mustCommit(t, s2, put("t", "new", "")); rev != 22 {
		t.Errorf("first commit after reopen: revision %d, want 22", rev)
	}
}

func TestCommitCanceledContext(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Commit(ctx, put("t", "a", "")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with canceled ctx: %v", err)
	}
	if _, err := s.Get(t.Context(), "t", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("canceled commit was applied: %v", err)
	}
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitIsolation holds the committer so that 63 callers queue up,
// then checks they share one transaction while each gets its own result:
// callers whose ops fail (against the store, or against an earlier caller
// of the same batch) fail alone and leave nothing behind.
func TestGroupCommitIsolation(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	mustCommit(t, s, put("t", "taken", "x"))
	s.hub.mu.Lock() // the committer will block publishing its next batch
	unlocked := false
	defer func() {
		if !unlocked {
			s.hub.mu.Unlock()
		}
	}()
	first := make(chan error, 1)
	go func() { _, err := s.Commit(ctx, put("t", "first", "x")); first <- err }()
	waitFor(t, "the first batch", func() bool { return s.batches.Load() == 2 })

	const n = 63
	var wg sync.WaitGroup
	revs, errs := make([]uint64, n), make([]error, n)
	for i := range n {
		ops := []Op{put("t", fmt.Sprintf("g%02d", i), fmt.Sprint(i))}
		switch i % 4 {
		case 0: // fails against the store
			ops = append(ops, Op{Type: OpCreate, Kind: "t", Name: "taken"})
		case 2, 3: // callers 2 and 3 of each group of 4 race for one name
			ops = append(ops, Op{Type: OpCreate, Kind: "pair", Name: fmt.Sprint(i / 4), Value: []byte(fmt.Sprint(i))})
		}
		wg.Go(func() { revs[i], errs[i] = s.Commit(ctx, ops...) })
	}
	waitFor(t, "63 queued callers", func() bool { return len(s.reqs)+int(s.gathered.Load()) == n })
	before := s.batches.Load()
	s.hub.mu.Unlock()
	unlocked = true
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := s.batches.Load() - before; got != 1 {
		t.Errorf("63 queued callers took %d transactions, want 1", got)
	}
	seen := map[uint64]int{}
	for i := range n {
		_, getErr := s.Get(ctx, "t", fmt.Sprintf("g%02d", i))
		switch {
		case i%4 == 0:
			if !errors.Is(errs[i], ErrExists) || !errors.Is(getErr, ErrNotFound) {
				t.Errorf("caller %d: %v (record: %v), want ErrExists and nothing written", i, errs[i], getErr)
			}
			continue
		case errs[i] != nil:
			if i%4 < 2 || !errors.Is(errs[i], ErrExists) || !errors.Is(getErr, ErrNotFound) {
				t.Errorf("caller %d: %v (record: %v)", i, errs[i], getErr)
			}
			continue
		}
		if getErr != nil {
			t.Errorf("caller %d acknowledged at %d but: %v", i, revs[i], getErr)
		}
		if j, dup := seen[revs[i]]; dup {
			t.Errorf("callers %d and %d share revision %d", j, i, revs[i])
		}
		seen[revs[i]] = i
	}
	// In each group exactly one of callers 2 and 3 (whichever came first in
	// the batch) wins the pair name, and its value is stored.
	for g := range n / 4 {
		a, c := 4*g+2, 4*g+3
		if (errs[a] == nil) == (errs[c] == nil) {
			t.Errorf("pair %d: callers %d and %d: %v, %v; want exactly one winner", g, a, c, errs[a], errs[c])
			continue
		}
		winner := a
		if errs[a] != nil {
			winner = c
		}
		r, err := s.Get(ctx, "pair", fmt.Sprint(g))
		if err != nil || string(r.Value) != fmt.Sprint(winner) || r.ModRevision != revs[winner] {
			t.Errorf("pair %d = %q@%d, %v; want the value of caller %d at %d", g, r.Value, r.ModRevision, err, winner, revs[winner])
		}
	}
	if len(seen) == 0 {
		t.Fatal("no caller succeeded")
	}
}

// TestCloseDuringCommits: Commits racing with Close either succeed (and
// survive a reopen) or fail with ErrClosed (and were not applied).
func TestCloseDuringCommits(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var mu sync.Mutex
	results := map[string]error{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("g%d-%d", g, i)
				_, err := s.Commit(ctx, put("t", name, name))
				mu.Lock()
				results[name] = err
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	waitFor(t, "some commits", func() bool { return s.Revision() > 50 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s2 := openAt(t, path, Options{})
	ok := 0
	for name, err := range results {
		_, getErr := s2.Get(ctx, "t", name)
		switch {
		case err == nil && getErr == nil:
			ok++
		case errors.Is(err, ErrClosed) && errors.Is(getErr, ErrNotFound):
		default:
			t.Errorf("%s: commit %v, after reopen %v", name, err, getErr)
		}
	}
	if ok != int(s2.Revision()) {
		t.Errorf("%d commits acknowledged, store revision %d", ok, s2.Revision())
	}
}
