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
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
)

// networkdEnv is a booted systemd 257 test host with the network directory and the tenants' key directories bound
// in at paths that are right on both sides, and a Manager that reloads the host's networkd over its D-Bus.
type networkdEnv struct {
	h        *testhost.Host
	m        *Manager
	bus      NetworkdBus
	netDir   string
	hostNs   string // the test host's network namespace
	nsPrefix string // test-only prefix of the tenant namespaces made on this machine
}

func newNetworkdEnv(t *testing.T) *networkdEnv {
	t.Helper()
	testpolicy.RequireRoot(t, "to boot the systemd test host")
	testpolicy.RequireTool(t, "busybox") // Debian package busybox-static, for the DHCP client
	// The guest's /etc/systemd/network is a directory of this machine, and so is the tenants' directory, bound at
	// the same path so that PrivateKeyFile= is right inside.
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
	tag := make([]byte, 3)
	rand.Read(tag)
	e := &networkdEnv{
		h: h, netDir: netDir, hostNs: fmt.Sprintf("/proc/%d/ns/net", h.Leader()),
		bus:      NetworkdBus{Address: fmt.Sprintf("unix:path=/proc/%d/root/run/dbus/system_bus_socket", h.Leader())},
		nsPrefix: "bbt-" + hex.EncodeToString(tag) + "-",
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir("/run/netns")
		for _, en := range entries {
			if strings.HasPrefix(en.Name(), e.nsPrefix) {
				exec.Command("ip", "netns", "del", en.Name()).Run()
			}
		}
	})
	m, err := New(Config{Dir: netDir, TenantsDir: keysDir, KeyOwner: guestUser(t, h, "systemd-network"), Reloader: e.bus,
		Addresses: addresses(netns.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

// apply renders and applies the example template for index. The bus is reached from outside the host's PID
// namespace, which its dbus-daemon sometimes refuses right after boot; a failed reload is retried by the next
// Apply (the reconciler does the same).
func (e *networkdEnv) apply(t *testing.T, index int) Result {
	t.Helper()
	in := exampleInput()
	in.Index = index
	var res Result
	changed := false
	waitFor(t, 20*time.Second, func() (bool, string) {
		var err error
		res, err = e.m.Apply(t.Context(), loadExample(t), in)
		changed = changed || res.Changed
		if err != nil && !errors.Is(err, ErrNoSystemBus) {
			t.Fatalf("Apply: %v", err)
		}
		return err == nil, fmt.Sprint(err)
	})
	if !changed || res.PublicKey == "" {
		t.Fatalf("Apply: %+v", res)
	}
	return res
}

// dhcp runs a DHCP client on eth0 in the namespace at nsPath until it gets a lease from 10.N.0.0/24, checks it is
// in the template's pool (offset 100, size 100), and that networkd reports it (networkctl and D-Bus).
func (e *networkdEnv) dhcp(t *testing.T, nsPath string, index int) string {
	t.Helper()
	ctx := t.Context()
	re := regexp.MustCompile(`lease of (10\.` + strconv.Itoa(index) + `\.0\.\d+) obtained`)
	var lease string
	waitFor(t, 30*time.Second, func() (bool, string) {
		out, _ := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "busybox", "udhcpc", "-i", "eth0",
			"-n", "-q", "-f", "-t", "3", "-T", "2", "-s", "/bin/true").CombinedOutput()
		if m := re.FindSubmatch(out); m != nil {
			lease = string(m[1])
			return true, ""
		}
		return false, string(out)
	})
	last, _ := strconv.Atoi(lease[strings.LastIndexByte(lease, '.')+1:])
	if last < 100 || last >= 200 {
		t.Errorf("lease %s outside the template's pool .100-.199", lease)
	}
	bridge := fmt.Sprintf("br-tenant-%d", index)
	waitFor(t, 10*time.Second, func() (bool, string) {
		out, _, _ := e.h.Run(ctx, "networkctl", "status", "--no-pager", bridge)
		return bytes.Contains(out, []byte(lease)), string(out)
	})
	waitFor(t, 10*time.Second, func() (bool, string) {
		leases, err := e.bus.Leases(ctx, bridge)
		for _, l := range leases {
			if l.Address.String() == lease && l.HardwareAddr != "" && l.ExpirationUSec > 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v %v", leases, err)
	})
	return lease
}

// checkJournal: networkd parsed every rendered file. No line of its journal mentions one of them except to say
// it configures a link with it ("Failed to parse ..." and "Unknown key ..." name the file and line).
func (e *networkdEnv) checkJournal(t *testing.T) string {
	t.Helper()
	journal := e.h.JournalTail(t.Context(), 2000, "-u", "systemd-networkd")
	for _, line := range strings.Split(journal, "\n") {
		if strings.Contains(line, "Failed to parse") ||
			strings.Contains(line, "50-bitbuilder-") && !strings.Contains(line, ": Configuring with ") {
			t.Errorf("networkd: %s", line)
		}
	}
	// The key is readable by networkd (the netdev itself then fails: no wireguard in this kernel), and bridge
	// ports are configured by the template, not by networkd's stock file for nspawn's ve-* veths.
	for _, bad := range []string{"Failed to read private key", "80-container-ve.network"} {
		if strings.Contains(journal, bad) {
			t.Errorf("networkd's journal has %q", bad)
		}
	}
	return journal
}

// TestNetworkdReal runs the example template through a real systemd-networkd 257 in a booted test host, with a
// real D-Bus Reload, twice: once networkd creates the bridge itself from the rendered .netdev and enslaves a plain
// veth to it, once the tenant's namespace, bridge and veth come from the netns package (bridge address left to
// networkd) and networkd configures them without undoing any of it. Each time networkd's DHCP server hands a lease
// to a DHCP client in the tenant's namespace. Its journal has no "Failed to parse" for any rendered file, WireGuard
// and VLAN included (which this kernel cannot create); a file with a bad value shows that the check can fail.
func TestNetworkdReal(t *testing.T) {
	e := newNetworkdEnv(t)
	ctx := t.Context()

	t.Run("networkd creates the bridge", func(t *testing.T) {
		res := e.apply(t, 4)
		waitFor(t, 20*time.Second, func() (bool, string) {
			out, _, err := e.h.Run(ctx, "ip", "-d", "-4", "addr", "show", "dev", "br-tenant-4")
			return err == nil && bytes.Contains(out, []byte("bridge ")) && bytes.Contains(out, []byte("10.4.0.1/24")), string(out)
		})
		// A tenant namespace with a plain veth on networkd's bridge; networkd keeps it there (15-port.network).
		ns := e.nsPrefix + "plain"
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		addVeth(t, e.hostNs, "vh-tenant-4", "br-tenant-4", filepath.Join("/run/netns", ns))
		waitFor(t, 20*time.Second, func() (bool, string) {
			out, _, _ := e.h.Run(ctx, "networkctl", "list", "--no-pager", "vh-tenant-4")
			return regexp.MustCompile(`vh-tenant-4 +ether +enslaved +configured`).Match(out), string(out)
		})
		e.dhcp(t, filepath.Join("/run/netns", ns), 4)
		if len(res.Files) != 9 {
			t.Errorf("files: %v", res.Files)
		}
	})

	t.Run("netns creates the bridge", func(t *testing.T) {
		// An uplink for the VXLAN: a veth pair in the test host (it has no other link).
		addVeth(t, e.hostNs, "bbt-up0", "", "")
		nm, err := netns.New(netns.Config{
			NamespacePrefix: e.nsPrefix, AddressMode: netns.AddressByNetworkd, Uplink: "bbt-up0",
			Host: netns.NewKernel(netns.KernelConfig{HostNetns: e.hostNs}),
		})
		if err != nil {
			t.Fatal(err)
		}
		spec := netns.Spec{Tenant: "acme", Index: 3, DHCP: true, VXLAN: true}
		t.Cleanup(func() {
			if err := nm.Teardown(context.Background(), spec); err != nil {
				t.Errorf("teardown: %v", err)
			}
		})
		if _, err := nm.Ensure(ctx, spec); err != nil {
			t.Fatal(err)
		}
		e.apply(t, 3)
		waitFor(t, 20*time.Second, func() (bool, string) {
			out, _, err := e.h.Run(ctx, "ip", "-4", "-br", "addr", "show", "dev", "br-tenant-3")
			return err == nil && bytes.Contains(out, []byte("10.3.0.1/24")), string(out)
		})
		e.dhcp(t, filepath.Join("/run/netns", nm.Names(spec).Namespace), 3)
		// networkd configured the links and undid nothing of ours: marks, master, isolation filter.
		st, err := nm.Inspect(ctx, spec)
		if err != nil || len(st.Problems) != 0 || !st.Isolated {
			t.Errorf("Inspect after networkd: %v %+v", err, st.Problems)
		}
		// networkd logs "Failed to create netdev: File exists" for the bridge it found, and configures it anyway.
		waitFor(t, 20*time.Second, func() (bool, string) {
			out, _, _ := e.h.Run(ctx, "networkctl", "list", "--no-pager", "br-tenant-3", "vh-tenant-3", "vx-tenant-3")
			return regexp.MustCompile(`br-tenant-3 +bridge +routable +configured`).Match(out) &&
				regexp.MustCompile(`vh-tenant-3 +ether +enslaved +configured`).Match(out) &&
				regexp.MustCompile(`vx-tenant-3 +vxlan +\S+ +configured`).Match(out), string(out)
		})
		journal := e.h.JournalTail(ctx, 2000, "-u", "systemd-networkd")
		if !strings.Contains(journal, "vh-tenant-3: Configuring with /etc/systemd/network/50-bitbuilder-3-15-port.network") {
			t.Errorf("networkd did not configure the bridge port with the template's 15-port.network")
		}
	})

	journal := e.checkJournal(t)
	if testing.Verbose() {
		t.Logf("networkd journal:\n%s", journal)
	}

	t.Run("the journal check can fail", func(t *testing.T) {
		bad := filepath.Join(e.netDir, "50-bitbuilder-99-bad.netdev")
		if err := os.WriteFile(bad, []byte("[NetDev]\nName=bad0\nKind=vxlan\n[VXLAN]\nVNI=not-a-number\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.h.Run(ctx, "networkctl", "reload"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() (bool, string) {
			j := e.h.JournalTail(ctx, 50, "-u", "systemd-networkd")
			return strings.Contains(j, "50-bitbuilder-99-bad.netdev") && strings.Contains(j, "Failed to parse"), j
		})
	})
}

// addVeth creates a veth pair with host end name, enslaved to master (unless ""), in the namespace at hostNs and
// the other end, eth0, in the namespace at peerNs (or, for "", <name>p next to it), all up.
func addVeth(t *testing.T, hostNs, name, master, peerNs string) {
	t.Helper()
	handle := func(path string) *netlink.Handle {
		ns, err := vns.GetFromPath(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		return h
	}
	up := func(h *netlink.Handle, names ...string) {
		for _, n := range names {
			l, err := h.LinkByName(n)
			if err == nil {
				err = h.LinkSetUp(l)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	h := handle(hostNs)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: name + "p"}
	if peerNs != "" {
		ns, err := vns.GetFromPath(peerNs)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		veth.PeerName, veth.PeerNamespace = "eth0", netlink.NsFd(int(ns))
	}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if master != "" {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := h.LinkByName(master)
		if err == nil {
			err = h.LinkSetMaster(l, m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	up(h, name)
	if peerNs == "" {
		up(h, name+"p")
	} else {
		up(handle(peerNs), "lo", "eth0")
	}
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
