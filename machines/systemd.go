package machines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// UnitState is a unit's state as the service manager reports it.
type UnitState struct {
	// Load is LoadState (loaded, not-found, ...), Active is ActiveState (active, activating,
	// deactivating, inactive, failed, reloading), Sub is SubState.
	Load, Active, Sub string
}

// Running reports whether the unit is active or on its way there.
func (s UnitState) Running() bool {
	return s.Active == "active" || s.Active == "activating" || s.Active == "reloading"
}

// Info is a machine as systemd-machined knows it.
type Info struct {
	Name  string
	Class string // container or vm
	State string // opening, running, closing
	Unit  string
	// Leader is the PID of the machine's leader process.
	Leader    int
	Addresses []string
}

// Host talks to the service manager and systemd-machined on the system bus. Its zero value is
// not usable; make one with New. It reconnects after the bus went away.
type Host struct {
	log *slog.Logger
	// dial opens a connection to the bus (the system bus by default).
	dial func() (*dbus.Conn, error)

	mu  sync.Mutex
	bus *dbus.Conn
	sd  *sdbus.Conn
}

// New returns a Host for the system bus. It does not connect until first used.
func New(log *slog.Logger) *Host {
	if log == nil {
		log = slog.Default()
	}
	return &Host{log: log, dial: func() (*dbus.Conn, error) { return dbus.ConnectSystemBus() }}
}

// Close closes the connections.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sd != nil {
		h.sd.Close()
		h.sd = nil
	}
	if h.bus != nil {
		h.bus.Close()
		h.bus = nil
	}
	return nil
}

// conns returns the live connections, dialling when there are none or they were closed.
func (h *Host) conns(ctx context.Context) (*dbus.Conn, *sdbus.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bus != nil && !h.bus.Connected() {
		h.bus.Close()
		h.sd.Close()
		h.bus, h.sd = nil, nil
	}
	if h.bus == nil {
		bus, err := h.dial()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrNoBus, err)
		}
		sd, err := sdbus.NewConnection(h.dial)
		if err != nil {
			bus.Close()
			return nil, nil, fmt.Errorf("%w: %w", ErrNoBus, err)
		}
		h.bus, h.sd = bus, sd
	}
	return h.bus, h.sd, nil
}

// drop forgets the connections after an error that may mean they broke.
func (h *Host) drop(err error) {
	if err == nil || !errors.Is(err, dbus.ErrClosed) {
		return
	}
	h.Close()
}

// UnitState returns the state of unit. A unit systemd does not know is Load "not-found",
// Active "inactive".
func (h *Host) UnitState(ctx context.Context, unit string) (UnitState, error) {
	_, sd, err := h.conns(ctx)
	if err != nil {
		return UnitState{}, err
	}
	st, err := sd.ListUnitsByNamesContext(ctx, []string{unit})
	if err != nil {
		h.drop(err)
		return UnitState{}, fmt.Errorf("state of %s: %w", unit, err)
	}
	if len(st) == 0 {
		return UnitState{Load: "not-found", Active: "inactive", Sub: "dead"}, nil
	}
	return UnitState{Load: st[0].LoadState, Active: st[0].ActiveState, Sub: st[0].SubState}, nil
}

// Start starts unit ("replace" mode) and returns once the job is queued; the unit's state
// follows in UnitState and Watch. A failed unit is reset first, so that its start rate limit
// does not keep it down.
func (h *Host) Start(ctx context.Context, unit string) error {
	_, sd, err := h.conns(ctx)
	if err != nil {
		return err
	}
	if st, err := h.UnitState(ctx, unit); err == nil && st.Active == "failed" {
		_ = sd.ResetFailedUnitContext(ctx, unit)
	}
	if _, err := sd.StartUnitContext(ctx, unit, "replace", nil); err != nil {
		h.drop(err)
		return fmt.Errorf("start %s: %w", unit, err)
	}
	return nil
}

// Stop stops unit. With wait it returns when the stop job finished (or ctx ended).
func (h *Host) Stop(ctx context.Context, unit string, wait bool) error {
	_, sd, err := h.conns(ctx)
	if err != nil {
		return err
	}
	var ch chan string
	if wait {
		ch = make(chan string, 1)
	}
	if _, err := sd.StopUnitContext(ctx, unit, "replace", ch); err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
			return nil
		}
		h.drop(err)
		return fmt.Errorf("stop %s: %w", unit, err)
	}
	if !wait {
		return nil
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("stop %s: job %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", unit, ctx.Err())
	}
}

// Reload asks the service manager to reload its unit files.
func (h *Host) Reload(ctx context.Context) error {
	_, sd, err := h.conns(ctx)
	if err != nil {
		return err
	}
	if err := sd.ReloadContext(ctx); err != nil {
		h.drop(err)
		return err
	}
	return nil
}

const (
	machined     = "org.freedesktop.machine1"
	machinedPath = dbus.ObjectPath("/org/freedesktop/machine1")
	managerIface = "org.freedesktop.machine1.Manager"
)

// Machine returns what systemd-machined knows of machine name; ok is false when it has no
// machine of that name.
func (h *Host) Machine(ctx context.Context, name string) (Info, bool, error) {
	bus, _, err := h.conns(ctx)
	if err != nil {
		return Info{}, false, err
	}
	var path dbus.ObjectPath
	err = bus.Object(machined, machinedPath).CallWithContext(ctx, managerIface+".GetMachine", 0, name).Store(&path)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.machine1.NoSuchMachine" {
		return Info{}, false, nil
	}
	if err != nil {
		h.drop(err)
		return Info{}, false, fmt.Errorf("machined GetMachine %s: %w", name, err)
	}
	var props map[string]dbus.Variant
	if err := bus.Object(machined, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, "org.freedesktop.machine1.Machine").Store(&props); err != nil {
		// It went away between the two calls.
		return Info{}, false, nil
	}
	info := Info{Name: name}
	str := func(k string) string { s, _ := props[k].Value().(string); return s }
	info.Class, info.State, info.Unit = str("Class"), str("State"), str("Unit")
	if l, ok := props["Leader"].Value().(uint32); ok {
		info.Leader = int(l)
	}
	var addrs []struct {
		Family int32
		Addr   []byte
	}
	if err := bus.Object(machined, machinedPath).CallWithContext(ctx, managerIface+".GetMachineAddresses", 0, name).Store(&addrs); err == nil {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.Addr); ok && !ip.IsLinkLocalUnicast() {
				info.Addresses = append(info.Addresses, ip.Unmap().String())
			}
		}
		slices.Sort(info.Addresses)
	}
	return info, true, nil
}

// Terminate asks systemd-machined to terminate machine name (all its processes). A machine
// it does not know is not an error.
func (h *Host) Terminate(ctx context.Context, name string) error {
	bus, _, err := h.conns(ctx)
	if err != nil {
		return err
	}
	err = bus.Object(machined, machinedPath).CallWithContext(ctx, managerIface+".TerminateMachine", 0, name).Err
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.machine1.NoSuchMachine" {
		return nil
	}
	return err
}

// Event is a change Watch saw: a unit whose properties changed, or a machine that machined
// registered or removed.
type Event struct {
	Unit    string // set for unit changes
	Machine string // set for machined's MachineNew and MachineRemoved
}

// Watch calls fn for every change of a unit whose name starts with unitPrefix and for every
// machine machined registers or removes, until ctx ends. It connects on its own connection and
// reconnects (every few seconds) while the bus is away.
func (h *Host) Watch(ctx context.Context, unitPrefix string, fn func(Event)) {
	for ctx.Err() == nil {
		err := h.watchOnce(ctx, unitPrefix, fn)
		if ctx.Err() != nil {
			return
		}
		h.log.Debug("watching systemd and machined failed, again in 5 s", "err", err)
		t := time.NewTimer(5 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (h *Host) watchOnce(ctx context.Context, unitPrefix string, fn func(Event)) error {
	bus, err := h.dial()
	if err != nil {
		return err
	}
	defer bus.Close()
	if err := bus.AddMatchSignalContext(ctx, dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace("/org/freedesktop/systemd1/unit")); err != nil {
		return err
	}
	for _, m := range []string{"MachineNew", "MachineRemoved"} {
		if err := bus.AddMatchSignalContext(ctx, dbus.WithMatchInterface(managerIface), dbus.WithMatchMember(m)); err != nil {
			return err
		}
	}
	// The manager only sends unit signals while someone subscribed.
	if err := bus.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").CallWithContext(ctx, "org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		return err
	}
	ch := make(chan *dbus.Signal, 256)
	bus.Signal(ch)
	defer bus.RemoveSignal(ch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-ch:
			if !ok {
				return errors.New("bus connection closed")
			}
			switch s.Name {
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				if u := UnitFromPath(s.Path); strings.HasPrefix(u, unitPrefix) {
					fn(Event{Unit: u})
				}
			case managerIface + ".MachineNew", managerIface + ".MachineRemoved":
				if len(s.Body) > 0 {
					if n, ok := s.Body[0].(string); ok {
						fn(Event{Machine: n})
					}
				}
			}
		}
	}
}

// UnitFromPath turns a unit's D-Bus object path (/org/freedesktop/systemd1/unit/foo_2eservice)
// back into its name.
func UnitFromPath(p dbus.ObjectPath) string {
	s, ok := strings.CutPrefix(string(p), "/org/freedesktop/systemd1/unit/")
	if !ok {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
