package testhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// vmSpawnArgs is the systemd-vmspawn command line that boots the VariantVM guest here: software emulation
// (--kvm=no), no TPM, SeaBIOS with direct kernel boot, the guest's root shared over virtiofs, a tap for the network.
// --notify-ready=no: without vsock (no /dev/vhost-vsock on these machines) the guest cannot report READY=1, so
// vmspawn would stay "activating" until the unit's start timeout; with it, vmspawn reports READY=1 once QEMU runs.
func vmSpawnArgs(machine string) []string {
	disk := VMGuestDir + "/disk-image"
	return []string{
		"systemd-vmspawn",
		"--machine=" + machine,
		"--directory=" + disk + "/rootfs",
		"--linux=" + disk + "/boot/vmlinuz",
		"--initrd=" + disk + "/boot/initrd.img",
		"--network-tap",
		"--kvm=no",
		"--tpm=no",
		"--firmware=bios",
		"--secure-boot=no",
		"--pass-ssh-key=no",
		"--notify-ready=no",
		"--console=read-only",
	}
}

// networkLink is the part of `networkctl --json=short status LINK` the tests read.
type networkLink struct {
	AdministrativeState string
	OperationalState    string
	NetworkFile         string
	DHCPServer          *struct {
		Leases []struct {
			Address  []int
			Hostname string
		}
	}
}

func linkStatus(ctx context.Context, h *Host, link string) (networkLink, error) {
	var l networkLink
	out, _, err := h.Run(ctx, "networkctl", "--json=short", "status", link)
	if err != nil {
		return l, err
	}
	err = json.Unmarshal(out, &l)
	return l, err
}

// poll calls f every interval until it returns true or an error, or until timeout.
func poll(ctx context.Context, timeout, interval time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, err := f()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// TestVMSpawnBoots boots the VariantVM guest with systemd-vmspawn in a test host, under QEMU's software
// emulation, with its tap on a networkd bridge that serves DHCP: machined must list the VM (class vm), the bridge
// must lease it an address, and stopping the unit must remove the machine and the tap. It takes about a minute
// (40 s to the lease on an idle 2-vCPU machine, 60-80 s under load).
func TestVMSpawnBoots(t *testing.T) {
	testpolicy.Short(t, "boots a VM under software emulation: about a minute")
	h := Start(t, Options{Name: "vmspawn", Variant: VariantVM})
	ctx := t.Context()
	const machine, unit, bridge = "t-vm", "vmtest", "br-test"
	tap := "vt-" + machine // vmspawn names the tap vt-MACHINE (shortened and hashed when longer than 15)

	files := []struct{ path, text string }{
		{"/run/systemd/network/10-br-test.netdev", "[NetDev]\nName=br-test\nKind=bridge\n"},
		{"/run/systemd/network/10-br-test.network",
			"[Match]\nName=br-test\n\n[Network]\nAddress=10.77.0.1/24\nDHCPServer=yes\nConfigureWithoutCarrier=yes\n"},
		// networkd's own 80-vm-vt.network claims every vt-* tap (an address of its own, a DHCP server, masquerading);
		// a file that sorts before it and matches this tap by name puts the tap on the bridge instead.
		{"/run/systemd/network/10-" + tap + ".network", "[Match]\nName=" + tap + "\n\n[Network]\nBridge=br-test\n"},
	}
	for _, f := range files {
		if err := h.WriteFile(f.path, []byte(f.text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := h.Run(ctx, "networkctl", "reload"); err != nil {
		t.Fatal(err)
	}
	err := poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		l, err := linkStatus(ctx, h, bridge)
		return err == nil && l.AdministrativeState == "configured", nil
	})
	if err != nil {
		t.Fatalf("%s not configured: %v", bridge, err)
	}
	if v, _, err := h.Run(ctx, "systemd-vmspawn", "--version"); err == nil {
		t.Logf("%s", strings.SplitN(string(v), "\n", 2)[0])
	}

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of %s (the VM's console):\n%s", unit, h.JournalTail(context.Background(), 80, "-u", unit))
		}
	})
	start := time.Now()
	// TemporaryFileSystem hides machined's Varlink socket: vmspawn (262) registers there first, and machined 257
	// refuses its call (org.varlink.service.InvalidParameter, parameter "controlAddress"), after which vmspawn runs
	// unregistered. Without the socket it falls back to D-Bus (RegisterMachineWithNetwork), which 257 accepts.
	run := append([]string{"systemd-run", "--quiet", "--unit=" + unit, "--property=Type=notify",
		"--property=TemporaryFileSystem=/run/systemd/machine:ro", "--"}, vmSpawnArgs(machine)...)
	if _, _, err := h.Run(ctx, run...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s started (READY=1) after %v: %s", unit, time.Since(start).Round(time.Millisecond), strings.Join(vmSpawnArgs(machine), " "))

	// machined lists the VM.
	err = poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		out, _, err := h.Run(ctx, "machinectl", "show", machine, "--property=Class", "--value")
		return err == nil && strings.TrimSpace(string(out)) == "vm", nil
	})
	if err != nil {
		out, _, _ := h.Run(ctx, "machinectl", "list", "--no-legend")
		t.Fatalf("machinectl does not list %s with class vm: %v\n%s", machine, err, out)
	}
	registered := time.Since(start)

	// The tap is on the bridge, configured by our file.
	err = poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		master, _, err := h.Run(ctx, "readlink", "/sys/class/net/"+tap+"/master")
		l, lerr := linkStatus(ctx, h, tap)
		return err == nil && path.Base(strings.TrimSpace(string(master))) == bridge && lerr == nil &&
			l.NetworkFile == "/run/systemd/network/10-"+tap+".network" && l.OperationalState == "enslaved", nil
	})
	if err != nil {
		l, lerr := linkStatus(ctx, h, tap)
		t.Fatalf("%s is not enslaved to %s by our .network file: %v (%+v, %v)", tap, bridge, err, l, lerr)
	}

	// The guest boots (kernel, initrd, systemd over virtiofs, udev, networkd) and asks the bridge for an address.
	var lease netip.Addr
	var hostname string
	err = poll(ctx, 5*time.Minute, time.Second, func() (bool, error) {
		if _, _, err := h.Run(ctx, "systemctl", "is-active", "--quiet", unit); err != nil {
			return false, fmt.Errorf("%s is no longer active", unit)
		}
		l, err := linkStatus(ctx, h, bridge)
		if err != nil || l.DHCPServer == nil || len(l.DHCPServer.Leases) == 0 {
			return false, nil
		}
		a := l.DHCPServer.Leases[0].Address
		if len(a) != 4 {
			return false, fmt.Errorf("lease address %v", a)
		}
		lease = netip.AddrFrom4([4]byte{byte(a[0]), byte(a[1]), byte(a[2]), byte(a[3])})
		hostname = l.DHCPServer.Leases[0].Hostname
		return true, nil
	})
	if err != nil {
		t.Fatalf("no DHCP lease on %s: %v", bridge, err)
	}
	if !netip.MustParsePrefix("10.77.0.0/24").Contains(lease) || hostname != "bbguest" {
		t.Errorf("lease %s to %q, want an address in 10.77.0.0/24 for bbguest", lease, hostname)
	}
	t.Logf("%s: registered with machined after %v, leased %s (%s) after %v", machine,
		registered.Round(time.Millisecond), lease, hostname, time.Since(start).Round(time.Millisecond))

	// Stopping the unit ends QEMU (SIGTERM to the whole cgroup); machined forgets the VM and the tap goes away.
	stop := time.Now()
	if _, _, err := h.Run(ctx, "systemctl", "stop", unit); err != nil {
		t.Fatal(err)
	}
	err = poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		_, _, merr := h.Run(ctx, "machinectl", "show", machine)
		_, _, lerr := h.Run(ctx, "test", "-e", "/sys/class/net/"+tap)
		return merr != nil && lerr != nil, nil
	})
	if err != nil {
		out, _, _ := h.Run(ctx, "machinectl", "list", "--no-legend")
		t.Fatalf("after stopping %s, the machine or %s is still there: %v\n%s", unit, tap, err, out)
	}
	t.Logf("%s stopped, machine and tap gone after %v", unit, time.Since(stop).Round(time.Millisecond))
}
