package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// model is a plain in-memory statement of the Commit semantics.
type model struct {
	rev  uint64
	recs map[[2]string]Record
	log  []Event
}

// commit applies ops to a copy of the state and returns the expected
// revision, or the index and sentinel of the failing op.
func (m *model) commit(ops []Op) (uint64, int, error) {
	next := make(map[[2]string]Record, len(m.recs))
	for k, v := range m.recs {
		next[k] = v
	}
	rev := m.rev + 1
	var evs []Event
	for i, op := range ops {
		k := [2]string{op.Kind, op.Name}
		cur, ok := next[k]
		switch {
		case op.Type == OpCreate && ok:
			return 0, i, ErrExists
		case (op.Type == OpUpdate || op.Type == OpDelete) && !ok:
			return 0, i, ErrNotFound
		case op.ExpectRevision != 0 && op.ExpectRevision != cur.ModRevision: // ModRevision 0 when absent
			return 0, i, ErrRevisionMismatch
		}
		if op.Type == OpDelete {
			delete(next, k)
			evs = append(evs, Event{Type: EventDelete, Kind: op.Kind, Name: op.Name, Value: cur.Value, Revision: rev, CreateRevision: cur.CreateRevision})
			continue
		}
		r := Record{Kind: op.Kind, Name: op.Name, Value: op.Value, CreateRevision: rev, ModRevision: rev}
		if ok {
			r.CreateRevision = cur.CreateRevision
		}
		next[k] = r
		evs = append(evs, Event{Type: EventPut, Kind: op.Kind, Name: op.Name, Value: op.Value, Revision: rev, CreateRevision: r.CreateRevision})
	}
	m.recs, m.rev, m.log = next, rev, append(m.log, evs...)
	return rev, -1, nil
}

func (m *model) list(kind string) []string {
	var out []string
	for _, r := range m.recs {
		if r.Kind == kind {
			out = append(out, fmt.Sprintf("%s/%s=%s@%d/%d", r.Kind, r.Name, r.Value, r.CreateRevision, r.ModRevision))
		}
	}
	slices.Sort(out) // names are single characters, so this is name order
	return out
}

// TestAgainstModel runs random commits (with deliberate conflicts) against
// the store and the model, and compares results, state, the replayed change
// log and the state after a reopen.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			path := dbPath(t)
			s := openAt(t, path, Options{NoSync: true})
			ctx := t.Context()
			m := &model{recs: map[[2]string]Record{}}
			kinds, names := []string{"a", "b"}, []string{"0", "1", "2", "3", "4"}
			for step := range 300 {
				ops := make([]Op, 1+rng.IntN(4))
				for i := range ops {
					op := Op{Type: OpType(1 + rng.IntN(4)), Kind: kinds[rng.IntN(2)], Name: names[rng.IntN(5)]}
					if op.Type != OpDelete {
						op.Value = []byte(fmt.Sprintf("v%d.%d", step, i))
					}
					if rng.IntN(3) == 0 { // expect the current revision, or a wrong one
						op.ExpectRevision = m.recs[[2]string{op.Kind, op.Name}].ModRevision
						if rng.IntN(2) == 0 {
							op.ExpectRevision++
						}
					}
					ops[i] = op
				}
				wantRev, wantIdx, wantErr := m.commit(ops)
				rev, err := s.Commit(ctx, ops...)
				if wantErr == nil {
					if err != nil || rev != wantRev {
						t.Fatalf("step %d %v: rev %d err %v, want rev %d", step, ops, rev, err, wantRev)
					}
					continue
				}
				var oe *OpError
				if !errors.As(err, &oe) || oe.Index != wantIdx || !errors.Is(err, wantErr) {
					t.Fatalf("step %d %v: %v, want op %d failing with %v", step, ops, err, wantIdx, wantErr)
				}
			}
			compare := func(s *Bolt) {
				t.Helper()
				if s.Revision() != m.rev {
					t.Fatalf("revision %d, model %d", s.Revision(), m.rev)
				}
				for _, k := range kinds {
					if got, want := snapshot(t, s, k), m.list(k); !slices.Equal(got, want) {
						t.Fatalf("kind %s:\n got %v\nwant %v", k, got, want)
					}
				}
				ch, err := s.Watch(ctx, "", 0)
				if err != nil {
					t.Fatal(err)
				}
				got := recv(t, ch, len(m.log))
				if a, b := evString(got), evString(m.log); !slices.Equal(a, b) {
					t.Fatalf("change log differs from the model")
				}
			}
			compare(s)
			s.Close()
			compare(openAt(t, path, Options{}))
			t.Logf("%d of 300 commits succeeded, %d events", m.rev, len(m.log))
			if m.rev < 50 {
				t.Fatalf("only %d of 300 commits succeeded: the test explores too little", m.rev)
			}
		})
	}
}
