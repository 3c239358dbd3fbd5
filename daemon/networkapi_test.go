package daemon

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
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

	// Peers are checked before they are stored. Each peer breaks only the field it names, so
	// that it cannot be refused for another one.
	for _, tc := range []struct{ peer, field string }{
		{`{"publicKey":"short","allowedIPs":["10.4.100.0/24"]}`, "peer.publicKey"},
		{`{"publicKey":"` + peerKey + `","allowedIPs":["10.0.0.0/33"]}`, "peer.allowedIPs[0]"},
		{`{"publicKey":"` + peerKey + `","allowedIPs":[]}`, "peer.allowedIPs"},
		{`{"publicKey":"` + peerKey + `","endpoint":"no-port","allowedIPs":["10.4.100.0/24"]}`, "peer.endpoint"},
		{`{"publicKey":"` + peerKey + `","allowedIPs":["10.4.100.0/24"],"persistentKeepalive":70000}`, "peer.persistentKeepalive"},
		{`{"publicKey":"` + peerKey + `","allowedIPs":["10.4.100.0/24"],"persistentKeepalive":-1}`, "peer.persistentKeepalive"},
	} {
		r := c.call("io.bitbuilder.Network.AddPeer", `{"tenant":"n1","peer":`+tc.peer+`}`)
		wantError(t, r, "io.bitbuilder.Network.InvalidField", nil)
		if r.Parameters["field"] != tc.field {
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

// TestNetworkAPIBasePrefix: the Network API reports the names and subnets that the network
// manager derives from the daemon's configuration (--base-prefix), not a fixed 10.N.0.0/24.
func TestNetworkAPIBasePrefix(t *testing.T) {
	for _, c := range []struct {
		name                    string
		host                    *HostConfig
		subnet, gateway, bridge string
	}{
		{"default", nil, "10.7.0.0/24", "10.7.0.1", "br-tenant-7"},
		{"base 172.16.0.0/12", &HostConfig{BasePrefix: netip.MustParsePrefix("172.16.0.0/12")}, "172.23.0.0/24", "172.23.0.1", "br-tenant-7"},
		{"base 100.64.0.0/10", &HostConfig{BasePrefix: netip.MustParsePrefix("100.64.0.0/10")}, "100.71.0.0/24", "100.71.0.1", "br-tenant-7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The API as Run builds it (networkConfig of the daemon's host configuration), without
			// host steps, which would change this machine.
			svc, _ := newFailingTenants(t)
			if _, err := svc.Create(t.Context(), tenant.Spec{Name: "n7", NetworkIndex: 7}); err != nil {
				t.Fatal(err)
			}
			api := &networkAPI{tenants: svc, log: discardLogger(), net: networkConfig(c.host)}
			c2 := dial(t, serveAPIs(t, rpc.Interface{Dispatcher: iobitbuildernetwork.VarlinkNew(api)}))
			r := c2.call("io.bitbuilder.Network.Get", `{"tenant":"n7"}`)
			n, _ := r.Parameters["network"].(map[string]any)
			if r.Error != "" || n["subnet"] != c.subnet || n["gateway"] != c.gateway || n["bridge"] != c.bridge || n["namespace"] != "tenant-n7" {
				t.Errorf("Network.Get = %v, want subnet %s, gateway %s, bridge %s, namespace tenant-n7", r, c.subnet, c.gateway, c.bridge)
			}
		})
	}
}

// The boot generator's units (package units, which may not import netns and its netlink) name a tenant's namespace
// and bridge as the network manager does with the configuration the daemon gives it: checked here, where both are
// imported, so the two cannot drift apart.
func TestUnitsNamesAreNetns(t *testing.T) {
	cfg := networkConfig(&HostConfig{})
	for _, s := range []netns.Spec{{Tenant: "a", Index: 1}, {Tenant: "acme-prod", Index: 7}, {Tenant: strings.Repeat("x", 63), Index: 254}} {
		n := cfg.Names(s)
		if got := units.NamespaceName(s.Tenant); got != n.Namespace {
			t.Errorf("units.NamespaceName(%q) = %q, netns names it %q", s.Tenant, got, n.Namespace)
		}
		if got := units.BridgeName(s.Index); got != n.Bridge {
			t.Errorf("units.BridgeName(%d) = %q, netns names it %q", s.Index, got, n.Bridge)
		}
	}
}
