package netconf

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// Reloader asks systemd-networkd to re-read its .netdev/.network files.
type Reloader interface {
	Reload(ctx context.Context) error
}

// DBusReloader calls org.freedesktop.network1.Manager.Reload on the system bus (or on Address).
type DBusReloader struct {
	// Address is a D-Bus address ("unix:path=/run/dbus/system_bus_socket"); "" means the system bus
	// (DBUS_SYSTEM_BUS_ADDRESS or its default).
	Address string
}

// Reload implements Reloader. Without a bus it returns an error wrapping ErrNoSystemBus.
func (r DBusReloader) Reload(ctx context.Context) error {
	var conn *dbus.Conn
	var err error
	if r.Address == "" {
		conn, err = dbus.SystemBusPrivate(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Dial(r.Address, dbus.WithContext(ctx))
	}
	if err != nil {
		return fmt.Errorf("%w: cannot ask systemd-networkd to reload: %v", ErrNoSystemBus, err)
	}
	defer conn.Close()
	if err := conn.Auth(nil); err != nil {
		return fmt.Errorf("%w: authenticating to the bus: %v", ErrNoSystemBus, err)
	}
	if err := conn.Hello(); err != nil {
		return fmt.Errorf("%w: hello: %v", ErrNoSystemBus, err)
	}
	call := conn.Object("org.freedesktop.network1", "/org/freedesktop/network1").
		CallWithContext(ctx, "org.freedesktop.network1.Manager.Reload", 0)
	if call.Err != nil {
		return fmt.Errorf("%w: org.freedesktop.network1.Manager.Reload: %w", ErrReload, call.Err)
	}
	return nil
}
