package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// testPeerKey is a WireGuard public key (base64 of 32 bytes) for tests.
const testPeerKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

// condition is one of a tenant's conditions as varlinkctl prints it.
type condition struct {
	Type, Status, Reason, Message string
}

func conditions(t testing.TB, tn tenant) map[string]condition {
	t.Helper()
	out := map[string]condition{}
	for _, raw := range tn.Conditions {
		var c condition
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("condition %s: %v", raw, err)
		}
		out[c.Type] = c
	}
	return out
}

// TestHostConvergence runs bitbuilderd with its host steps inside the systemd 257 test host
// and checks the real end state: the tenant's namespace, bridge (addressed by networkd from
// the rendered files), veth, networkd files, units loaded by systemd, the boot registry,
// isolation between tenants, a WireGuard link the kernel cannot create shown as a condition,
// and that Delete leaves nothing behind.
func TestHostConvergence(t *testing.T) {
	d := startDaemon(t, "host", "--no-host=false")
	h := d.h
	const registry = "/etc/bitbuilder/boot-registry.json"

	// The example network template's WireGuard netdev takes its first peer from parameters.
	a := d.create(t, `{"name":"net-a","networkFeatures":["wireguard"],"parameters":{"PEER_PUBLIC_KEY":"`+testPeerKey+`","PEER_ENDPOINT":"127.0.0.1:51820"}}`)
	b := d.create(t, `{"name":"net-b"}`)
	ia, ib := a.NetworkIndex, b.NetworkIndex

	var got tenant
	eventually(t, 60*time.Second, func() (bool, string) {
		got = d.tenantCall(t, asRoot, "Get", `{"name":"net-a"}`)
		cs := conditions(t, got)
		ok := cs["NetworkReady"].Status == "true" && cs["NetworkdConfigured"].Status == "true" &&
			cs["UnitsInstalled"].Status == "true" && cs["WireGuardReady"].Reason == "UnsupportedByKernel"
		return ok, fmt.Sprintf("phase %s, conditions %v", got.Phase, cs)
	})
	if got.Phase != "degraded" {
		t.Errorf("phase %q with an unsupported WireGuard link, want degraded", got.Phase)
	}
	if msg := conditions(t, got)["WireGuardReady"].Message; !strings.Contains(msg, "wg-tenant-") {
		t.Errorf("WireGuardReady message %q does not name the link", msg)
	}

	// The namespace, the veth end inside it, and the bridge with the address networkd gave it.
	if out := mustRun(t, h, "ip", "netns", "list"); !strings.Contains(out, "tenant-net-a") || !strings.Contains(out, "tenant-net-b") {
		t.Fatalf("namespaces: %s", out)
	}
	if out := mustRun(t, h, "ip", "-n", "tenant-net-a", "-4", "addr", "show", "eth0"); !strings.Contains(out, fmt.Sprintf("10.%d.0.2/24", ia)) {
		t.Errorf("eth0 in tenant-net-a: %s", out)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		out := run(t, h, "", "ip", "-4", "addr", "show", fmt.Sprintf("br-tenant-%d", ia))
		return strings.Contains(out.stdout, fmt.Sprintf("10.%d.0.1/24", ia)), out.String()
	})
	files := mustRun(t, h, "sh", "-c", fmt.Sprintf("ls /run/systemd/network/ | grep '^50-bitbuilder-%d-'", ia))
	if !strings.Contains(files, "bridge.netdev") || !strings.Contains(files, "wireguard.netdev") {
		t.Errorf("rendered files of tenant net-a: %s", files)
	}
	if j := h.JournalTail(t.Context(), 200, "-u", "systemd-networkd"); strings.Contains(j, "Failed to parse") {
		t.Errorf("networkd could not parse a rendered file:\n%s", j)
	}
	// The units are systemd's: it loaded what the reconciler wrote.
	if out := mustRun(t, h, "systemctl", "show", "-p", "LoadState", `tenant@net\x2da.service`); !strings.Contains(out, "LoadState=loaded") {
		t.Errorf("tenant unit not loaded: %s", out)
	}
	if reg := mustRun(t, h, "cat", registry); !strings.Contains(reg, `"net-a"`) || !strings.Contains(reg, `"net-b"`) {
		t.Errorf("boot registry: %s", reg)
	}

	// Isolation: A reaches its own gateway, not B's bridge address nor B's namespace.
	eventually(t, 30*time.Second, func() (bool, string) {
		r := run(t, h, "", "ip", "netns", "exec", "tenant-net-a", "busybox", "ping", "-c1", "-W1", fmt.Sprintf("10.%d.0.1", ia))
		return r.exit == 0, r.String()
	})
	for _, target := range []string{fmt.Sprintf("10.%d.0.1", ib), fmt.Sprintf("10.%d.0.2", ib)} {
		if r := run(t, h, "", "ip", "netns", "exec", "tenant-net-a", "busybox", "ping", "-c1", "-W1", target); r.exit == 0 {
			t.Errorf("tenant net-a reached %s of tenant net-b", target)
		}
	}

	// Network.Get reports the links and the WireGuard public key, never the private key.
	r := d.call(t, asRoot, "io.bitbuilder.Network.Get", `{"tenant":"net-a"}`)
	if !strings.Contains(r.stdout, fmt.Sprintf("br-tenant-%d", ia)) || !strings.Contains(r.stdout, "wireGuardPublicKey") {
		t.Errorf("Network.Get: %s", r.stdout)
	}
	if strings.Contains(r.stdout, "PrivateKey") {
		t.Errorf("Network.Get leaks key material: %s", r.stdout)
	}

	// A peer added through the API reaches networkd's files through the reconciler.
	const key2 = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	d.call(t, asRoot, "io.bitbuilder.Network.AddPeer", `{"tenant":"net-a","peer":{"publicKey":"`+key2+`","endpoint":"127.0.0.1:51821","allowedIPs":["10.`+fmt.Sprint(ia)+`.100.2/32"]}}`)
	eventually(t, 30*time.Second, func() (bool, string) {
		r := run(t, h, "", "sh", "-c", fmt.Sprintf("cat /run/systemd/network/50-bitbuilder-%d-*wireguard.netdev", ia))
		return strings.Contains(r.stdout, key2), r.String()
	})
	if r := d.call(t, asRoot, "io.bitbuilder.Network.Apply", `{"tenant":"net-a"}`); !strings.Contains(r.stdout, "bridge.network") {
		t.Errorf("Network.Apply: %s", r)
	}
	if r := d.call(t, asRoot, "io.bitbuilder.Network.Describe", `{"tenant":"net-a"}`); !strings.Contains(r.stdout, key2) {
		t.Errorf("Network.Describe: %s", r)
	}

	// Delete: everything of net-a goes, net-b stays.
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"net-a"}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"net-a"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-net-a") || !strings.Contains(out, "tenant-net-b") {
		t.Errorf("namespaces after delete: %s", out)
	}
	if r := run(t, h, "", "ip", "link", "show", fmt.Sprintf("br-tenant-%d", ia)); r.exit == 0 {
		t.Errorf("bridge of net-a left behind: %s", r.stdout)
	}
	if out := run(t, h, "", "sh", "-c", fmt.Sprintf("ls /run/systemd/network/ | grep '^50-bitbuilder-%d-'", ia)); strings.TrimSpace(out.stdout) != "" {
		t.Errorf("network files left behind: %s", out.stdout)
	}
	if r := run(t, h, "", "test", "-e", `/run/systemd/system/tenant@net\x2da.service`); r.exit == 0 {
		t.Error("unit file of net-a left behind")
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		reg := mustRun(t, h, "cat", registry)
		return !strings.Contains(reg, `"net-a"`) && strings.Contains(reg, `"net-b"`), reg
	})

	// Deleting the other tenant after its links were removed by hand still succeeds.
	mustRun(t, h, "ip", "link", "del", fmt.Sprintf("br-tenant-%d", ib))
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"net-b"}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"net-b"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-net-b") {
		t.Errorf("namespace of net-b left behind: %s", out)
	}
}
