package tenant

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
)

// TestQueueStatus checks the reconciler's status path on a real store: the status rides along
// with the next client commit (one transaction for both), is written only when it changed, is
// applied to a record that moved since the pass read it, and never overwrites a tenant marked
// for deletion.
func TestQueueStatus(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true, DeferDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	a, err := s.Create(ctx, Spec{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ready := []Condition{{Type: "NetworkReady", Status: "true", Reason: "Configured"}}
	if err := s.QueueStatus(ctx, a, PhaseReady, ready, nil, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "a"); got.Phase != PhasePending {
		t.Fatalf("a queued status is visible before it is committed: %s", got.Phase)
	}
	before := st.Stats()
	if _, err := s.Create(ctx, Spec{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if got := st.Stats().Transactions - before.Transactions; got != 1 {
		t.Errorf("create and queued status took %d transactions, want 1", got)
	}
	got, err := s.Get(ctx, "a")
	if err != nil || got.Phase != PhaseReady || len(got.Conditions) != 1 || got.ObservedGeneration != 1 || got.Revision == a.Revision {
		t.Fatalf("status after the next commit: %v %+v", err, got)
	}

	// The same status again changes nothing.
	if err := s.QueueStatus(ctx, got, PhaseReady, ready, nil, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, Spec{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Get(ctx, "a"); again.Revision != got.Revision {
		t.Errorf("an unchanged status was written: revision %d -> %d", got.Revision, again.Revision)
	}

	// A status of a pass that read an older record merges into the current one.
	old := got
	cur, err := s.Update(ctx, "a", 0, Changes{Parameters: &map[string]string{"K": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.QueueStatus(ctx, old, PhaseDegraded, []Condition{{Type: "NetworkReady", Status: "false"}}, nil, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, Spec{Name: "d"}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Get(ctx, "a")
	if got.Phase != PhaseDegraded || got.Parameters["K"] != "v" || got.Generation != cur.Generation {
		t.Errorf("status over a newer record: phase %s, parameters %v, generation %d (want %d)", got.Phase, got.Parameters, got.Generation, cur.Generation)
	}

	// A pass that started before Delete does not write over the deleting tenant.
	if _, err := s.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueStatus(ctx, got, PhaseReady, ready, nil, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, Spec{Name: "e"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "a"); got.Phase != PhaseDeleting {
		t.Errorf("a stale status overwrote a deleting tenant: %s", got.Phase)
	}
}
