package machines

import (
	"context"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachTap puts the tap on bridge (both in the host's network namespace) and sets it up, then has
// systemd-networkd configure it again (org.freedesktop.network1.Manager.ReconfigureLink), whose file for the tap
// says KeepMaster=yes: networkd cannot enslave a tap to a bridge the daemon made with netlink (networkd marks such
// a bridge's netdev failed, "File exists"), so the daemon does it, and networkd only keeps it that way. It
// reports whether it changed anything. A bus-less host skips the reconfigure.
func AttachTap(ctx context.Context, tap, bridge string) (bool, error) {
	t, err := netlink.LinkByName(tap)
	if err != nil {
		return false, fmt.Errorf("tap %s: %w", tap, err)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return false, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if t.Attrs().MasterIndex == br.Attrs().Index && t.Attrs().Flags&1 != 0 {
		return false, nil
	}
	if err := netlink.LinkSetMaster(t, br); err != nil {
		return false, fmt.Errorf("put %s on %s: %w", tap, bridge, err)
	}
	if err := netlink.LinkSetUp(t); err != nil {
		return false, fmt.Errorf("set %s up: %w", tap, err)
	}
	bus, err := dbus.ConnectSystemBus()
	if err != nil {
		return true, nil
	}
	defer bus.Close()
	call := bus.Object("org.freedesktop.network1", "/org/freedesktop/network1").CallWithContext(ctx,
		"org.freedesktop.network1.Manager.ReconfigureLink", 0, int32(t.Attrs().Index))
	var de dbus.Error
	if call.Err != nil && !(errors.As(call.Err, &de) && de.Name == "org.freedesktop.DBus.Error.ServiceUnknown") {
		return true, fmt.Errorf("networkd reconfigure %s: %w", tap, call.Err)
	}
	return true, nil
}

// TapPeerMACs returns the MAC addresses the bridge learned on the port tap (its forwarding database): the
// guest's, for a VM's tap. Permanent entries (the tap's own address) are left out.
func TapPeerMACs(tap string) ([]string, error) {
	t, err := netlink.LinkByName(tap)
	if err != nil {
		return nil, err
	}
	neighs, err := netlink.NeighList(t.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 || n.HardwareAddr == nil || n.HardwareAddr.String() == t.Attrs().HardwareAddr.String() {
			continue
		}
		out = append(out, n.HardwareAddr.String())
	}
	return out, nil
}
