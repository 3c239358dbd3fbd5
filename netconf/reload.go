package netconf

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/godbus/dbus/v5"
)

// Reloader asks systemd-networkd to re-read its .netdev/.network files.
type Reloader interface {
	Reload(ctx context.Context) error
}

// NetworkdBus talks to systemd-networkd over D-Bus: Reload (it is the default Reloader) and the DHCP server's
// leases of a link.
type NetworkdBus struct {
	// Address is a D-Bus address ("unix:path=/run/dbus/system_bus_socket"); "" means the system bus
	// (DBUS_SYSTEM_BUS_ADDRESS or its default).
	Address string
}

const (
	networkdName = "org.freedesktop.network1"
	networkdPath = "/org/freedesktop/network1"
)

func (b NetworkdBus) connect(ctx context.Context) (*dbus.Conn, error) {
	var conn *dbus.Conn
	var err error
	if b.Address == "" {
		conn, err = dbus.SystemBusPrivate(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Dial(b.Address, dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot reach systemd-networkd: %v", ErrNoSystemBus, err)
	}
	if err := conn.Auth(nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: authenticating to the bus: %v", ErrNoSystemBus, err)
	}
	if err := conn.Hello(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: hello: %v", ErrNoSystemBus, err)
	}
	return conn, nil
}

// Reload calls org.freedesktop.network1.Manager.Reload. Without a bus it returns an error wrapping ErrNoSystemBus.
func (b NetworkdBus) Reload(ctx context.Context) error {
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	call := conn.Object(networkdName, networkdPath).CallWithContext(ctx, networkdName+".Manager.Reload", 0)
	if call.Err != nil {
		return fmt.Errorf("%w: org.freedesktop.network1.Manager.Reload: %w", ErrReload, call.Err)
	}
	return nil
}

// Lease is one lease handed out by networkd's DHCP server, as networkd reports it.
type Lease struct {
	Address      netip.Addr
	HardwareAddr string // "aa:bb:cc:dd:ee:ff"
	ClientID     []byte
	// ExpirationUSec is networkd's expiration time: microseconds on CLOCK_BOOTTIME.
	ExpirationUSec uint64
}

// Leases returns the leases of the DHCP server on link (org.freedesktop.network1.DHCPServer.Leases of the link's
// object). A link without a DHCP server has none.
func (b NetworkdBus) Leases(ctx context.Context, link string) ([]Lease, error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var index int32
	var path dbus.ObjectPath
	if err := conn.Object(networkdName, networkdPath).CallWithContext(ctx, networkdName+".Manager.GetLinkByName", 0, link).Store(&index, &path); err != nil {
		return nil, fmt.Errorf("networkd: link %s: %w", link, err)
	}
	v, err := conn.Object(networkdName, path).GetProperty(networkdName + ".DHCPServer.Leases")
	if err != nil {
		return nil, fmt.Errorf("networkd: leases of %s: %w", link, err)
	}
	var raw []struct {
		Family     uint32
		ClientID   []byte
		Address    []byte
		Gateway    []byte
		HwAddr     []byte
		Expiration uint64
	}
	if err := dbus.Store([]any{v.Value()}, &raw); err != nil {
		return nil, fmt.Errorf("networkd: leases of %s: unexpected signature %s: %w", link, v.Signature(), err)
	}
	var out []Lease
	for _, r := range raw {
		a, _ := netip.AddrFromSlice(r.Address)
		l := Lease{Address: a.Unmap(), ClientID: r.ClientID, ExpirationUSec: r.Expiration}
		if len(r.HwAddr) > 0 {
			l.HardwareAddr = net.HardwareAddr(trimChaddr(r.HwAddr)).String()
		}
		out = append(out, l)
	}
	return out, nil
}

// trimChaddr cuts DHCP's 16-byte chaddr field down to an Ethernet address when the rest is padding (networkd
// reports the field as it is on the wire).
func trimChaddr(b []byte) []byte {
	if len(b) > 6 && bytes.Count(b[6:], []byte{0}) == len(b)-6 {
		return b[:6]
	}
	return b
}
