package tenant

import (
	"context"
	"fmt"
	"slices"
)

// ModifyPeers changes a tenant's WireGuard peers as one read-modify-write inside one
// conditional commit: it reads the tenant, calls fn with a copy of its peers, and stores fn's
// result only if the record did not change since it was read; if it did (a concurrent writer,
// the reconciler's status included), it reads again and calls fn again. fn may therefore run
// more than once and must depend on nothing but its argument. An error from fn is returned as
// it is and changes nothing. A tenant being deleted is refused; two peers with one public key
// are a *FieldError.
//
// Callers never read the peers, change them and Update them back: that loses the changes
// that other writers make in between.
func (s *Service) ModifyPeers(ctx context.Context, name string, fn func(peers []Peer) ([]Peer, error)) (*Tenant, error) {
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		next, err := fn(slices.Clone(t.Peers))
		if err != nil {
			return err
		}
		seen := make(map[string]bool, len(next))
		for i, p := range next {
			if seen[p.PublicKey] {
				return &FieldError{Field: fmt.Sprintf("peers[%d].publicKey", i), Reason: fmt.Sprintf("%q is already a peer", p.PublicKey)}
			}
			seen[p.PublicKey] = true
		}
		t.Peers = next
		return nil
	})
}

// PutPeer returns a ModifyPeers function that adds p, or replaces the peer with p's public key.
func PutPeer(p Peer) func([]Peer) ([]Peer, error) {
	return func(peers []Peer) ([]Peer, error) {
		if i := slices.IndexFunc(peers, func(q Peer) bool { return q.PublicKey == p.PublicKey }); i >= 0 {
			peers[i] = p
			return peers, nil
		}
		return append(peers, p), nil
	}
}

// DropPeer returns a ModifyPeers function that removes the peer with publicKey, or fails with
// a *PeerError naming the tenant when there is none.
func DropPeer(name, publicKey string) func([]Peer) ([]Peer, error) {
	return func(peers []Peer) ([]Peer, error) {
		i := slices.IndexFunc(peers, func(q Peer) bool { return q.PublicKey == publicKey })
		if i < 0 {
			return nil, &PeerError{Tenant: name, PublicKey: publicKey}
		}
		return slices.Delete(peers, i, i+1), nil
	}
}
