package tenant

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// Concurrent peer changes, interleaved with status writes such as the reconciler's, all
// survive: each is applied to the record as it is at its commit.
func TestModifyPeersConcurrent(t *testing.T) {
	s := newService(t)
	ctx := t.Context()
	if _, err := s.Create(ctx, Spec{Name: "w"}); err != nil {
		t.Fatal(err)
	}
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := s.ModifyPeers(ctx, "w", PutPeer(Peer{PublicKey: fmt.Sprintf("key-%02d", i), AllowedIPs: []string{"10.0.0.0/24"}}))
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := s.SetStatus(ctx, "w", PhaseProvisioning, []Condition{{Type: "NetworkReady", Status: fmt.Sprint(i%2 == 0)}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	got, err := s.Get(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Peers) != n {
		t.Fatalf("%d concurrent adds left %d peers", n, len(got.Peers))
	}
}

func TestModifyPeers(t *testing.T) {
	s := newService(t)
	ctx := t.Context()
	if _, err := s.Create(ctx, Spec{Name: "w"}); err != nil {
		t.Fatal(err)
	}
	a := Peer{PublicKey: "a", AllowedIPs: []string{"10.0.0.0/24"}}
	tn, err := s.ModifyPeers(ctx, "w", PutPeer(a))
	if err != nil || len(tn.Peers) != 1 {
		t.Fatalf("PutPeer: %v %v", tn, err)
	}
	a.Endpoint = "192.0.2.1:51820"
	if tn, err = s.ModifyPeers(ctx, "w", PutPeer(a)); err != nil || len(tn.Peers) != 1 || tn.Peers[0].Endpoint != a.Endpoint {
		t.Fatalf("PutPeer of a known key does not replace it: %+v %v", tn.Peers, err)
	}
	rev := tn.Revision

	_, err = s.ModifyPeers(ctx, "w", DropPeer("w", "nope"))
	var pe *PeerError
	if !errors.As(err, &pe) || !errors.Is(err, ErrNoSuchPeer) || pe.PublicKey != "nope" {
		t.Errorf("DropPeer of an unknown key = %v", err)
	}
	_, err = s.ModifyPeers(ctx, "w", func(ps []Peer) ([]Peer, error) { return append(ps, ps[0]), nil })
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "peers[1].publicKey" {
		t.Errorf("two peers with one key = %v", err)
	}
	if cur, _ := s.Get(ctx, "w"); cur.Revision != rev {
		t.Errorf("refused changes moved the revision from %d to %d", rev, cur.Revision)
	}
	if tn, err = s.ModifyPeers(ctx, "w", DropPeer("w", "a")); err != nil || len(tn.Peers) != 0 {
		t.Fatalf("DropPeer: %+v %v", tn, err)
	}

	if _, err := s.ModifyPeers(ctx, "nope", PutPeer(a)); !errors.Is(err, ErrNotFound) {
		t.Errorf("ModifyPeers of a missing tenant = %v", err)
	}
	if _, err := s.Delete(ctx, "w", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ModifyPeers(ctx, "w", PutPeer(a)); !errors.Is(err, ErrInvalid) {
		t.Errorf("ModifyPeers of a tenant being deleted = %v", err)
	}
}
