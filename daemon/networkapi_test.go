package daemon

import (
	"fmt"
	"strings"
	"testing"
)

const peerKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

func TestNetworkAPIWithoutHost(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"n1","networkIndex":4}`))

	r := c.call("io.bitbuilder.Network.Get", `{"tenant":"n1"}`)
	n, _ := r.Parameters["network"].(map[string]any)
	if r.Error != "" || n["bridge"] != "br-tenant-4" || n["subnet"] != "10.4.0.0/24" || n["namespace"] != "tenant-n1" {
		t.Fatalf("Network.Get = %v", r)
	}
	wantError(t, c.call("io.bitbuilder.Network.Get", `{"tenant":"nope"}`), "io.bitbuilder.Network.NoSuchTenant", nil)

	// Peers are checked before they are stored.
	for _, tc := range []struct{ peer, field string }{
		{`{"publicKey":"short","allowedIPs":[]}`, ""},
		{`{"publicKey":"` + peerKey + `","allowedIPs":["10.0.0.0/33"]}`, "peer.allowedIPs[0]"},
		{`{"publicKey":"` + peerKey + `","endpoint":"no-port","allowedIPs":[]}`, ""},
		{`{"publicKey":"` + peerKey + `","allowedIPs":[],"persistentKeepalive":70000}`, ""},
	} {
		r := c.call("io.bitbuilder.Network.AddPeer", `{"tenant":"n1","peer":`+tc.peer+`}`)
		wantError(t, r, "io.bitbuilder.Network.InvalidField", nil)
		if tc.field != "" && r.Parameters["field"] != tc.field {
			t.Errorf("AddPeer(%s): field %v, want %s", tc.peer, r.Parameters["field"], tc.field)
		}
	}
	r = c.call("io.bitbuilder.Network.AddPeer", `{"tenant":"n1","peer":{"publicKey":"`+peerKey+`","endpoint":"127.0.0.1:51820","allowedIPs":["10.4.100.0/24"],"persistentKeepalive":25}}`)
	if r.Error != "" || !strings.Contains(stringOf(r.Parameters), peerKey) {
		t.Fatalf("AddPeer: %v", r)
	}
	// The peer is in the tenant's record, and turns WireGuard on.
	tn := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"n1"}`))
	if tn["revision"].(float64) < 2 {
		t.Errorf("AddPeer did not change the tenant: %v", tn)
	}
	wantError(t, c.call("io.bitbuilder.Network.RemovePeer", `{"tenant":"n1","publicKey":"other"}`), "io.bitbuilder.Network.NoSuchPeer", nil)
	r = c.call("io.bitbuilder.Network.RemovePeer", `{"tenant":"n1","publicKey":"`+peerKey+`"}`)
	if r.Error != "" || strings.Contains(stringOf(r.Parameters), peerKey) {
		t.Fatalf("RemovePeer: %v", r)
	}
	wantError(t, c.call("io.bitbuilder.Network.Describe", `{"tenant":"n1"}`), "io.bitbuilder.Network.NetworkdUnavailable", nil)
	if l := c.callMore("io.bitbuilder.Network.List", `{}`); len(l) != 1 || l[0].Error != "" {
		t.Errorf("Network.List = %v", l)
	}
}

func stringOf(v any) string { return fmt.Sprintf("%v", v) }
