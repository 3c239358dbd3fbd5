package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
)

// vmBootTimeout bounds the wait for a VM under QEMU's software emulation: its DHCP lease comes 40-45 s after
// the start on an idle machine, 100 s and more under load.
const vmBootTimeout = 5 * time.Minute

// vmDaemonArgs run VMs the way the vm test host can (see testhost's package documentation and TestVMSpawnBoots):
// sid's systemd-vmspawn, software emulation, no TPM, no vsock to report READY=1 over, and machined's Varlink
// socket hidden from the VM units so that vmspawn 262 registers with machined 257 over D-Bus.
var vmDaemonArgs = []string{
	"--no-host=false",
	"--vmspawn", "/usr/local/bin/systemd-vmspawn",
	"--vmspawn-arg=--kvm=no",
	"--vmspawn-arg=--tpm=no",
	"--vmspawn-arg=--secure-boot=no",
	"--vmspawn-arg=--pass-ssh-key=no",
	"--vmspawn-arg=--notify-ready=no",
	"--vm-unit-property=TemporaryFileSystem=/run/systemd/machine:ro",
}

// eventuallyEvery is eventually polling every interval: the waits for a VM take a minute or more, and commands
// run every 50 ms would take CPU time from QEMU's emulation.
func eventuallyEvery(t testing.TB, timeout, interval time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll(t, timeout, interval, cond, nil)
}

// linkStatus is the part of `networkctl --json=short status LINK` the test reads.
type linkStatus struct {
	OperationalState string
	NetworkFile      string
	DHCPServer       *struct {
		Leases []struct {
			Address  []int
			Hostname string
		}
	}
}

// networkLink returns networkd's status of link; ok is false when networkctl does not know it.
func networkLink(t *testing.T, h *testhost.Host, link string) (l linkStatus, ok bool) {
	t.Helper()
	r := run(t, h, "", "networkctl", "--json=short", "status", link)
	if r.exit != 0 {
		return l, false
	}
	decodeJSON(t, []byte(r.stdout), &l)
	return l, true
}

// TestMachinesVM runs a tenant with one VM through bitbuilderd in a test host of the vm variant: the machine
// template built from the host's guest is added to the registry, and the VM (systemd-vmspawn under QEMU's
// software emulation, direct kernel boot, the root over virtiofs) must run in its unit, be registered with
// machined as <tenant>-<machine> of class vm, have its tap vt-<tenant>-<machine> enslaved to the tenant's bridge
// by the daemon (networkd saying so), get a lease from the bridge's DHCP server, and show as running in the tenant's
// status. Deleting the tenant must leave no unit, machine, tap, networkd file or directory behind. It takes one
// to three minutes, most of it the guest's boot under TCG.
func TestMachinesVM(t *testing.T) {
	h := vmHost(t, "machinesvm")
	d := startDaemonIn(t, h, "mvm", vmDaemonArgs...)
	commit, took := addMachineTemplate(t, d, "debvm")
	t.Logf("Template.Add: %v (commit %.12s)", took.Round(time.Millisecond), commit)
	before := hostCounts(t, d)

	const tn, mn = "vmt", "vm1"
	full := tn + "-" + mn // machined's name of the VM
	tap := "vt-" + full   // vmspawn's tap (it fits the kernel's 15 bytes)
	var unit string
	t.Cleanup(func() {
		if t.Failed() && unit != "" {
			ctx := context.Background()
			t.Logf("journal of %s (vmspawn, QEMU and the VM's console):\n%s", unit, h.JournalTail(ctx, 120, "-u", unit))
			t.Logf("journal of systemd-networkd:\n%s", h.JournalTail(ctx, 40, "-u", "systemd-networkd"))
			out, _ := h.Shell(ctx, "networkctl list --no-pager; networkctl status --no-pager "+tap+" br-tenant-*; ip -br link")
			t.Logf("links:\n%s", out)
		}
	})

	start := time.Now()
	created := d.create(t, fmt.Sprintf(`{"name":%q,"resources":{"cpus":2,"memoryBytes":2147483648,"storageBytes":10737418240},`+
		`"templates":[{"role":"machine","name":"debvm","template":"debvm"}],"machines":[{"name":%q,"kind":"vm","template":"debvm"}]}`, tn, mn))
	bridge := fmt.Sprintf("br-tenant-%d", created.NetworkIndex)
	get := func() (tenant, machine) {
		got := d.tenantCall(t, asRoot, "Get", fmt.Sprintf(`{"name":%q}`, tn))
		return got, machineOf(t, got, mn)
	}

	// The daemon makes the VM's root and starts its unit; vmspawn is ready as soon as QEMU runs.
	eventuallyEvery(t, vmBootTimeout, 250*time.Millisecond, func() (bool, string) {
		got, m := get()
		if m.Status == nil || m.Status.Unit == "" {
			return false, fmt.Sprintf("phase %s, no machine status yet, conditions %v", got.Phase, conditions(t, got))
		}
		unit = m.Status.Unit
		r := run(t, h, "", "systemctl", "is-active", unit)
		return strings.TrimSpace(r.stdout) == "active", fmt.Sprintf("%s is %s; status %+v, conditions %v",
			unit, strings.TrimSpace(r.stdout), *m.Status, conditions(t, got))
	})
	active := time.Since(start)

	// machined lists it, as a VM.
	eventuallyEvery(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		r := run(t, h, "", "machinectl", "show", full, "--property=Class", "--value")
		return r.exit == 0 && strings.TrimSpace(r.stdout) == "vm", r.String()
	})
	if out := mustRun(t, h, "machinectl", "list", "--no-legend", "--no-pager"); !strings.Contains(out, full) {
		t.Errorf("machinectl list does not show %s:\n%s", full, out)
	}

	// The tenant's status says running, registered as a VM, by the unit we saw.
	eventuallyEvery(t, vmBootTimeout, 250*time.Millisecond, func() (bool, string) {
		got, m := get()
		return m.Status != nil && m.Status.State == "running" && m.Status.Class == "vm" && m.Status.Unit == unit,
			fmt.Sprintf("phase %s, status %+v, conditions %v", got.Phase, m.Status, conditions(t, got))
	})
	running := time.Since(start)

	// The tap is on the tenant's bridge, put there by the daemon (not by networkd's stock 80-vm-vt.network, which
	// would give it an address and a DHCP server of its own), and networkd says so. (networkd 257 calls a link
	// "enslaved" when its .network has Bridge=, or KeepMaster= and the link had its master before networkd
	// configured it or reconfigured it; a link given a master later stays "carrier".)
	var tapFile string
	eventuallyEvery(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		master := run(t, h, "", "readlink", "/sys/class/net/"+tap+"/master")
		l, ok := networkLink(t, h, tap)
		tapFile = l.NetworkFile
		return master.exit == 0 && path.Base(strings.TrimSpace(master.stdout)) == bridge && ok && l.OperationalState == "enslaved",
			fmt.Sprintf("%s: master %q, networkd %+v", tap, strings.TrimSpace(master.stdout), l)
	})
	if !strings.HasPrefix(tapFile, "/run/systemd/network/") || strings.HasSuffix(tapFile, "/80-vm-vt.network") {
		t.Errorf("%s is configured by %s, want the daemon's file in /run/systemd/network", tap, tapFile)
	}
	if out := mustRun(t, h, "networkctl", "status", tap); !strings.Contains(out, "enslaved") {
		t.Errorf("networkctl status %s does not say enslaved:\n%s", tap, out)
	}

	// The guest boots (kernel, busybox initrd, systemd over virtiofs, udev, networkd) and asks the tenant's
	// bridge for an address.
	var lease netip.Addr
	var leaseHost string
	eventuallyEvery(t, vmBootTimeout, time.Second, func() (bool, string) {
		if r := run(t, h, "", "systemctl", "is-active", unit); strings.TrimSpace(r.stdout) != "active" {
			t.Fatalf("%s is %s while the guest boots", unit, strings.TrimSpace(r.stdout))
		}
		l, ok := networkLink(t, h, bridge)
		if !ok || l.DHCPServer == nil || len(l.DHCPServer.Leases) == 0 {
			return false, fmt.Sprintf("no lease on %s yet", bridge)
		}
		a := l.DHCPServer.Leases[0].Address
		if len(a) != 4 {
			t.Fatalf("lease address %v", a)
		}
		lease = netip.AddrFrom4([4]byte{byte(a[0]), byte(a[1]), byte(a[2]), byte(a[3])})
		leaseHost = l.DHCPServer.Leases[0].Hostname
		return true, ""
	})
	leased := time.Since(start)
	if want := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(created.NetworkIndex), 0, 0}), 16); !want.Contains(lease) {
		t.Errorf("the guest leased %s, want an address in the tenant's %s", lease, want)
	}
	// With its one machine running, the tenant is ready.
	var got tenant
	eventuallyEvery(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		got, _ = get()
		return got.Phase == "ready", fmt.Sprintf("phase %s, conditions %v", got.Phase, conditions(t, got))
	})
	// The machine's status shows the address the bridge leased to it (matched by the MAC behind its tap).
	eventuallyEvery(t, time.Minute, 250*time.Millisecond, func() (bool, string) {
		_, m := get()
		return m.Status != nil && slices.Contains(m.Status.Addresses, lease.String()), fmt.Sprintf("status %+v, lease %s", m.Status, lease)
	})
	_, m := get()
	st, _ := json.Marshal(m.Status)
	t.Logf("%s: unit active after %v, running in the tenant's status after %v, leased %s (hostname %q) after %v; phase %s, status %s",
		full, active.Round(time.Millisecond), running.Round(time.Millisecond), lease, leaseHost, leased.Round(time.Millisecond), got.Phase, st)

	// Delete: the VM stops, and its unit, machine, tap, networkd file and directories go.
	deleted := time.Now()
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", fmt.Sprintf(`{"name":%q}`, tn))
	eventuallyEvery(t, machineBootTimeout, 250*time.Millisecond, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":%q}`, tn))
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	t.Logf("tenant deleted after %v", time.Since(deleted).Round(time.Millisecond))
	if props := showUnit(t, h, unit, "LoadState", "ActiveState"); props["ActiveState"] == "active" || props["LoadState"] == "loaded" {
		t.Errorf("%s after delete: %v", unit, props)
	}
	if r := run(t, h, "", "machinectl", "show", full); r.exit == 0 {
		t.Errorf("machined still has %s:\n%s", full, r.stdout)
	}
	if r := run(t, h, "", "test", "-e", "/sys/class/net/"+tap); r.exit == 0 {
		t.Errorf("%s is still there", tap)
	}
	if r := run(t, h, "", "test", "-e", tapFile); r.exit == 0 {
		t.Errorf("the networkd file of %s, %s, is still there", tap, tapFile)
	}
	if out := mustRun(t, h, "sh", "-c", "ls /run/systemd/network/ | grep -F -e "+tap+" -e "+full+" || true"); strings.TrimSpace(out) != "" {
		t.Errorf("networkd files left: %s", out)
	}
	if r := run(t, h, "", "test", "-e", d.stateDir+"/tenants/"+tn); r.exit == 0 {
		t.Errorf("%s/tenants/%s is still there", d.stateDir, tn)
	}
	after := hostCounts(t, d)
	for k, v := range after {
		if v != before[k] {
			t.Errorf("%s: %d before the tenant, %d after deleting it", k, before[k], v)
		}
	}
}
