package netconf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/netns"
)

// TestNetworkdReal runs the example template through a real systemd-networkd 257 (a booted test host): the
// tenant's namespace, bridge and veth come from netns (bridge address left to networkd), the rendered files from
// Apply with a real D-Bus Reload; networkd configures the bridge and its DHCP server hands a lease to a DHCP client
// in the tenant's namespace; networkd's journal has no "Failed to parse" for any rendered file (WireGuard and VLAN
// included, which this kernel cannot create).
func TestNetworkdReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to boot the systemd test host")
	}
	for _, tool := range []string{"busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s on the test machine (Debian package busybox-static) for the DHCP client", tool)
		}
	}
	// Two directories bound into the host at the same path, so the paths in the rendered files are right in both:
	// the network directory (the guest's /etc/systemd/network) and the tenants' key directories.
	netDir, keysDir := t.TempDir(), t.TempDir()
	for _, d := range []string{netDir, keysDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := testhost.Start(t, testhost.Options{Name: "netconf", Binds: []testhost.Bind{
		{Host: netDir, Guest: "/etc/systemd/network"},
		{Host: keysDir, Guest: keysDir},
	}})
	ctx := t.Context()
	leader := h.Leader()

	// 1. The tenant's namespace, bridge and veth, in the test host's network namespace.
	tag := make([]byte, 3)
	rand.Read(tag)
	nsPrefix := "bbt-" + hex.EncodeToString(tag) + "-"
	nm, err := netns.New(netns.Config{
		NamespacePrefix: nsPrefix, HostNetns: fmt.Sprintf("/proc/%d/ns/net", leader),
		AddressMode: netns.AddressByNetworkd, Host: netns.NewKernel(netns.KernelConfig{HostNetns: fmt.Sprintf("/proc/%d/ns/net", leader)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	spec := netns.Spec{Tenant: "acme", Index: 3, DHCP: true}
	t.Cleanup(func() {
		if err := nm.Teardown(context.Background(), spec); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if _, err := nm.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}

	// 2. Render, write and reload, for real.
	owner := guestUser(t, h, "systemd-network")
	bus := NetworkdBus{Address: fmt.Sprintf("unix:path=/proc/%d/root/run/dbus/system_bus_socket", leader)}
	m, err := New(Config{Dir: netDir, TenantsDir: keysDir, KeyOwner: owner, Reloader: bus})
	if err != nil {
		t.Fatal(err)
	}
	// The bus is reached from outside the host's PID namespace, which the host's dbus-daemon sometimes refuses
	// right after boot; a failed reload is retried by the next Apply (the reconciler does the same).
	var res Result
	changed := false
	waitFor(t, 20*time.Second, func() (bool, string) {
		res, err = m.Apply(ctx, loadExample(t), exampleInput())
		changed = changed || res.Changed
		if err != nil && !errors.Is(err, ErrNoSystemBus) {
			t.Fatalf("Apply: %v", err)
		}
		return err == nil, fmt.Sprint(err)
	})
	res.Changed = changed
	if !res.Changed || res.PublicKey == "" {
		t.Fatalf("Apply: %+v", res)
	}

	// 3. networkd configures the bridge: the address of the template.
	waitFor(t, 20*time.Second, func() (bool, string) {
		out, _, err := h.Run(ctx, "ip", "-4", "-br", "addr", "show", "dev", "br-tenant-3")
		return err == nil && bytes.Contains(out, []byte("10.3.0.1/24")), string(out)
	})

	// 4. A DHCP client in the tenant's namespace gets a lease from networkd's DHCP server, from the pool
	// (offset 100, size 100), and networkd reports it.
	nsPath := filepath.Join("/run/netns", nm.Names(spec).Namespace)
	var lease string
	waitFor(t, 30*time.Second, func() (bool, string) {
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "2", "-s", "/bin/true")
		out, _ := cmd.CombinedOutput()
		if m := regexp.MustCompile(`lease of (10\.3\.0\.\d+) obtained`).FindSubmatch(out); m != nil {
			lease = string(m[1])
			return true, string(out)
		}
		return false, string(out)
	})
	last, _ := strconv.Atoi(lease[strings.LastIndexByte(lease, '.')+1:])
	if last < 100 || last >= 200 {
		t.Errorf("lease %s outside the template's pool 10.3.0.100-199", lease)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		out, _, _ := h.Run(ctx, "networkctl", "status", "--no-pager", "br-tenant-3")
		return bytes.Contains(out, []byte(lease)), string(out)
	})
	// The same over D-Bus, as the API's Get reports it.
	waitFor(t, 10*time.Second, func() (bool, string) {
		leases, err := bus.Leases(ctx, "br-tenant-3")
		for _, l := range leases {
			if l.Address.String() == lease && l.HardwareAddr != "" && l.ExpirationUSec > 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v %v", leases, err)
	})

	// 5. networkd parsed every rendered file: no line of its journal mentions one of them except to say it
	// configures a link with it ("Failed to parse ..." and "Unknown key ..." name the file and line).
	journal := h.JournalTail(ctx, 1000, "-u", "systemd-networkd")
	for _, line := range strings.Split(journal, "\n") {
		if strings.Contains(line, "Failed to parse") ||
			strings.Contains(line, "50-bitbuilder-") && !strings.Contains(line, ": Configuring with ") {
			t.Errorf("networkd: %s", line)
		}
	}
	// The key is readable by networkd (the netdev itself then fails: no wireguard in this kernel), and the bridge
	// port is configured by the template, not by networkd's stock file for nspawn's ve-* veths.
	for _, bad := range []string{"Failed to read private key", "80-container-ve.network"} {
		if strings.Contains(journal, bad) {
			t.Errorf("networkd's journal has %q", bad)
		}
	}
	if !strings.Contains(journal, "vh-tenant-3: Configuring with /etc/systemd/network/50-bitbuilder-3-15-port.network") {
		t.Errorf("networkd did not configure the bridge port with the template's 15-port.network")
	}
	if testing.Verbose() {
		t.Logf("networkd journal:\n%s", journal)
	}

	// The check above can fail: a file with a bad value is reported as such.
	bad := filepath.Join(netDir, "50-bitbuilder-99-bad.netdev")
	if err := os.WriteFile(bad, []byte("[NetDev]\nName=bad0\nKind=vxlan\n[VXLAN]\nVNI=not-a-number\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Run(ctx, "networkctl", "reload"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		j := h.JournalTail(ctx, 50, "-u", "systemd-networkd")
		return strings.Contains(j, "50-bitbuilder-99-bad.netdev") && strings.Contains(j, "Failed to parse"), j
	})
}

// guestUser reads a user's uid and gid from the test host's /etc/passwd.
func guestUser(t *testing.T, h *testhost.Host, name string) *Owner {
	t.Helper()
	passwd, err := h.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == name {
			uid, _ := strconv.Atoi(f[2])
			gid, _ := strconv.Atoi(f[3])
			return &Owner{UID: uid, GID: gid}
		}
	}
	t.Fatalf("no user %s in the test host", name)
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, out := cond()
		if ok {
			return
		}
		last = out
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %v; last output:\n%s", timeout, last)
}
