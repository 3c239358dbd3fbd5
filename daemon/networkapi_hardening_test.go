package daemon

import (
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// testPeerKey returns a distinct valid WireGuard public key for each i.
func testPeerKey(i int) string {
	var b [32]byte
	b[0], b[1], b[31] = byte(i), byte(i>>8), 0x5a
	return base64.StdEncoding.EncodeToString(b[:])
}

func peerKeys(t *testing.T, r reply) []string {
	t.Helper()
	if r.Error != "" {
		t.Fatalf("unexpected error %s %v", r.Error, r.Parameters)
	}
	n, _ := r.Parameters["network"].(map[string]any)
	ps, _ := n["peers"].([]any)
	var keys []string
	for _, p := range ps {
		keys = append(keys, p.(map[string]any)["publicKey"].(string))
	}
	sort.Strings(keys)
	return keys
}

// Concurrent AddPeer calls, each on its own connection to the real daemon, all survive: each
// change is one read-modify-write in one conditional commit, retried when another won.
// Concurrent RemovePeer calls of peers added before remove only their own.
func TestConcurrentPeerChangesAllSurvive(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"peers","networkIndex":7}`))

	const adds, removes = 32, 8
	for i := range removes { // peers that the concurrent removes take away
		r := c.call("io.bitbuilder.Network.AddPeer", fmt.Sprintf(`{"tenant":"peers","peer":{"publicKey":%q,"allowedIPs":["10.99.%d.0/24"]}}`, testPeerKey(1000+i), i))
		if r.Error != "" {
			t.Fatalf("AddPeer: %s %v", r.Error, r.Parameters)
		}
	}
	conns := make([]*client, adds+removes)
	for i := range conns {
		conns[i] = dial(t, d.socket)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, len(conns))
	for i, cc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var r reply
			if i < adds {
				cc.send(fmt.Sprintf(`{"method":"io.bitbuilder.Network.AddPeer","parameters":{"tenant":"peers","peer":{"publicKey":%q,"allowedIPs":["10.7.%d.0/24"]}}}`, testPeerKey(i), i))
			} else {
				cc.send(fmt.Sprintf(`{"method":"io.bitbuilder.Network.RemovePeer","parameters":{"tenant":"peers","publicKey":%q}}`, testPeerKey(1000+i-adds)))
			}
			r, err := cc.read()
			if err != nil || r.Error != "" {
				errs <- fmt.Sprintf("call %d: %v %s %v", i, err, r.Error, r.Parameters)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	got := peerKeys(t, c.call("io.bitbuilder.Network.Get", `{"tenant":"peers"}`))
	var want []string
	for i := range adds {
		want = append(want, testPeerKey(i))
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		var lost, kept []string
		for _, k := range want {
			if !slices.Contains(got, k) {
				lost = append(lost, k)
			}
		}
		for _, k := range got {
			if !slices.Contains(want, k) {
				kept = append(kept, k)
			}
		}
		t.Fatalf("after %d concurrent adds and %d removes the tenant has %d peers, want %d: %d added peers lost, %d removed peers back: %v %v",
			adds, removes, len(got), len(want), len(lost), len(kept), lost, kept)
	}
}

// Every error of io.bitbuilder.Network goes through its one table: a store that fails is
// StorageFailure, never an invalid field of the caller's.
func TestNetworkStoreFailureIsStorageFailure(t *testing.T) {
	svc, st := newFailingTenants(t)
	if _, err := svc.Create(t.Context(), tenant.Spec{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	api := &networkAPI{tenants: svc, log: discardLogger()}
	c := dial(t, serveAPIs(t, rpc.Interface{Dispatcher: iobitbuildernetwork.VarlinkNew(api)}))

	// With the store working, errors are the caller's.
	wantError(t, c.call("io.bitbuilder.Network.Get", `{"tenant":"nope"}`), "io.bitbuilder.Network.NoSuchTenant", map[string]any{"name": "nope"})
	wantError(t, c.call("io.bitbuilder.Network.Get", `{"tenant":"a/b"}`), "io.bitbuilder.Network.InvalidField", map[string]any{"field": "tenant"})
	wantError(t, c.call("io.bitbuilder.Network.RemovePeer", `{"tenant":"n1","publicKey":"x"}`), "io.bitbuilder.Network.NoSuchPeer", map[string]any{"publicKey": "x"})
	wantError(t, c.call("io.bitbuilder.Network.Describe", `{"tenant":"n1"}`), "io.bitbuilder.Network.NetworkdUnavailable", nil)

	st.fail.Store(true)
	peer := fmt.Sprintf(`{"publicKey":%q,"allowedIPs":["10.1.0.0/24"]}`, testPeerKey(1))
	for _, call := range []struct{ method, params string }{
		{"Get", `{"tenant":"n1"}`},
		{"List", `{}`},
		{"AddPeer", `{"tenant":"n1","peer":` + peer + `}`},
		{"RemovePeer", `{"tenant":"n1","publicKey":"x"}`},
		{"Describe", `{"tenant":"n1"}`},
		{"Apply", `{"tenant":"n1"}`},
	} {
		r := c.call("io.bitbuilder.Network."+call.method, call.params)
		if r.Error != "io.bitbuilder.Network.StorageFailure" || fmt.Sprint(r.Parameters["message"]) != errInjected.Error() {
			t.Errorf("%s with a failing store: %s %v, want io.bitbuilder.Network.StorageFailure(%q)", call.method, r.Error, r.Parameters, errInjected)
		}
	}
}
