package netns

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// IFNAMSIZ-1: the longest link name the kernel accepts.
const maxLinkName = 15

// AddressMode says who puts the gateway addresses on the bridge (and on the WireGuard link).
type AddressMode int

const (
	// AddressByNetlink: the Manager adds 10.N.0.1/24 to the bridge itself.
	AddressByNetlink AddressMode = iota
	// AddressByNetworkd: the Manager leaves the bridge's addresses to systemd-networkd (the rendered .network file)
	// and neither adds nor removes any; Status still reports what is there.
	AddressByNetworkd
)

// Config configures a Manager. The zero value of every field means its documented default.
type Config struct {
	// Name prefixes; each is followed by the decimal index N. Tests use test-only prefixes. Every prefix plus the
	// widest index must fit the kernel's 15-character limit (checked by New).
	BridgePrefix    string // default "br-tenant-"
	VethPrefix      string // host side of the tenant's veth pair; default "vh-tenant-"
	VXLANPrefix     string // default "vx-tenant-"
	WireGuardPrefix string // default "wg-tenant-"
	VLANPrefix      string // default "vlan-tenant-"
	// NamespacePrefix is followed by the tenant's name; default "tenant-".
	NamespacePrefix string
	// PeerName is the name of the veth end inside the tenant's namespace; default "eth0".
	PeerName string
	// NetnsDir holds the named namespaces (bind mounts), as `ip netns` does; default /run/netns.
	NetnsDir string
	// HostNetns is the path of the namespace that holds the bridges ("the host"); "" means the daemon's own.
	// Tests point it at a namespace of their own so host links are never touched.
	HostNetns string
	// NamespaceHelper, when set, is a command prefix that runs its arguments in the host's mount namespace (the
	// daemon uses SystemdRun). Named namespaces are then made and deleted with `ip netns add|delete NAME` run
	// through it, for a process confined to a mount namespace of its own, as bitbuilderd.service is: a bind
	// mount it made itself would stay in its own namespace, invisible to `ip netns`, networkd and nspawn. What
	// the helper mounts must propagate into the caller's namespace (it does from PID 1's shared mounts into a
	// service's). Empty: this process makes them (unshare, bind mount), as `ip netns` would.
	NamespaceHelper []string
	// IP is the ip(8) the helper runs; default "ip" (the helper finds it in its PATH).
	IP string

	// BasePrefix is where tenant networks are cut from; default 10.0.0.0/8. Tenant N owns the /16 at
	// base + N<<16: its bridge network is the .0.0/24 of it and its WireGuard network the .100.0/24.
	BasePrefix netip.Prefix
	// MinIndex and MaxIndex bound Spec.Index; default 1 and 254.
	MinIndex, MaxIndex int

	// AddressMode says who sets the gateway addresses; default AddressByNetlink.
	AddressMode AddressMode
	// Uplink is the host link that carries VXLAN (multicast underlay) and is the parent of VLAN links;
	// "" means the link of the host's default route.
	Uplink string
	// VXLANGroup and VXLANPort: the multicast group and UDP port of tenant VXLANs; default 239.0.0.1 and 4789.
	VXLANGroup netip.Addr
	VXLANPort  int

	// GroupBase: tenant N's host links are put in link group GroupBase+N, so Teardown deletes them with one
	// request and the kernel pays one RCU grace period for all of them instead of one per link. Default 0xb1b0000.
	GroupBase uint32

	// Logger receives one line per change; default discards.
	Logger *slog.Logger
	// Host performs the kernel operations; default the real kernel via netlink (NewKernel).
	Host Host
}

func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.BridgePrefix, "br-tenant-")
	def(&c.VethPrefix, "vh-tenant-")
	def(&c.VXLANPrefix, "vx-tenant-")
	def(&c.WireGuardPrefix, "wg-tenant-")
	def(&c.VLANPrefix, "vlan-tenant-")
	def(&c.NamespacePrefix, "tenant-")
	def(&c.PeerName, "eth0")
	def(&c.NetnsDir, "/run/netns")
	if !c.BasePrefix.IsValid() {
		c.BasePrefix = netip.MustParsePrefix("10.0.0.0/8")
	}
	if c.MinIndex == 0 {
		c.MinIndex = 1
	}
	if c.MaxIndex == 0 {
		c.MaxIndex = 254
	}
	if !c.VXLANGroup.IsValid() {
		c.VXLANGroup = netip.MustParseAddr("239.0.0.1")
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = 4789
	}
	if c.GroupBase == 0 {
		c.GroupBase = 0xb1b0000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if !c.BasePrefix.Addr().Is4() || c.BasePrefix.Bits() > 16 || c.BasePrefix.Masked() != c.BasePrefix {
		return &ConfigError{"BasePrefix", fmt.Sprintf("%s must be a masked IPv4 prefix of length 16 or shorter", c.BasePrefix)}
	}
	if c.MinIndex < 1 || c.MaxIndex < c.MinIndex {
		return &ConfigError{"MinIndex/MaxIndex", fmt.Sprintf("%d..%d is not a range of positive indexes", c.MinIndex, c.MaxIndex)}
	}
	if limit := 1<<(16-c.BasePrefix.Bits()) - 1; c.MaxIndex > limit {
		return &ConfigError{"MaxIndex", fmt.Sprintf("%d does not fit in %s (at most %d /16 networks)", c.MaxIndex, c.BasePrefix, limit)}
	}
	width := len(strconv.Itoa(c.MaxIndex))
	for _, p := range []struct{ field, v string }{
		{"BridgePrefix", c.BridgePrefix}, {"VethPrefix", c.VethPrefix}, {"VXLANPrefix", c.VXLANPrefix},
		{"WireGuardPrefix", c.WireGuardPrefix}, {"VLANPrefix", c.VLANPrefix},
	} {
		if len(p.v)+width > maxLinkName {
			return &ConfigError{p.field, fmt.Sprintf("%q plus a %d-digit index exceeds the kernel's %d-character link name limit", p.v, width, maxLinkName)}
		}
		if err := checkLinkName(p.v + "0"); err != nil {
			return &ConfigError{p.field, err.Error()}
		}
	}
	if err := checkLinkName(c.PeerName); err != nil {
		return &ConfigError{"PeerName", err.Error()}
	}
	if !c.VXLANGroup.Is4() || !c.VXLANGroup.IsMulticast() {
		return &ConfigError{"VXLANGroup", fmt.Sprintf("%s is not an IPv4 multicast address", c.VXLANGroup)}
	}
	if uint64(c.GroupBase)+uint64(c.MaxIndex) > 1<<32-1 {
		return &ConfigError{"GroupBase", fmt.Sprintf("%#x plus MaxIndex %d overflows a link group", c.GroupBase, c.MaxIndex)}
	}
	if c.VXLANPort < 1 || c.VXLANPort > 65535 {
		return &ConfigError{"VXLANPort", fmt.Sprintf("%d is not a UDP port", c.VXLANPort)}
	}
	return nil
}

func checkLinkName(s string) error {
	if s == "" || len(s) > maxLinkName {
		return fmt.Errorf("link name %q must have 1 to %d characters", s, maxLinkName)
	}
	for _, r := range s {
		if r <= ' ' || r == '/' || r == ':' || r >= 0x7f {
			return fmt.Errorf("link name %q contains %q", s, r)
		}
	}
	return nil
}

// Mark is the IFLA alias put on every link BitBuilder creates for a tenant. A link with a tenant's name but without
// this alias is not the tenant's.
func Mark(tenant string) string { return "bitbuilder:" + tenant }

// Names are the deterministic names of one tenant's network objects.
type Names struct {
	Namespace string // tenant-<name>, a file in NetnsDir
	Bridge    string // br-tenant-N
	Veth      string // vh-tenant-N, the host side of the veth pair (enslaved to the bridge)
	Peer      string // eth0, the namespace side
	VXLAN     string // vx-tenant-N
	WireGuard string // wg-tenant-N
	VLAN      string // vlan-tenant-N
}

// Prefixes are one tenant's networks, cut from BasePrefix by index.
type Prefixes struct {
	Block     netip.Prefix // the tenant's /16: everything the isolation filter lets through to the host
	Bridge    netip.Prefix // 10.N.0.0/24
	Gateway   netip.Prefix // 10.N.0.1/24, the bridge's address
	Peer      netip.Prefix // 10.N.0.2/24, the namespace side of the veth (when not left to DHCP)
	WireGuard netip.Prefix // 10.N.100.1/24, the WireGuard link's address
}

func (c Config) names(s Spec) Names {
	n := strconv.Itoa(s.Index)
	return Names{
		Namespace: c.NamespacePrefix + s.Tenant,
		Bridge:    c.BridgePrefix + n,
		Veth:      c.VethPrefix + n,
		Peer:      c.PeerName,
		VXLAN:     c.VXLANPrefix + n,
		WireGuard: c.WireGuardPrefix + n,
		VLAN:      c.VLANPrefix + n,
	}
}

func (c Config) group(index int) uint32 { return c.GroupBase + uint32(index) }

func (c Config) prefixes(index int) Prefixes {
	b := c.BasePrefix.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(index) << 16
	at := func(third, fourth byte, bits int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), third, fourth}), bits)
	}
	return Prefixes{
		Block:     at(0, 0, 16),
		Bridge:    at(0, 0, 24),
		Gateway:   at(0, 1, 24),
		Peer:      at(0, 2, 24),
		WireGuard: at(100, 1, 24),
	}
}

// errnoName gives "EOPNOTSUPP" for an errno wrapped anywhere in err, else err's text.
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.EOPNOTSUPP {
			return "EOPNOTSUPP" // unix.ErrnoName says ENOTSUP, the same number on Linux
		}
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
	}
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

// SystemdRun returns a NamespaceHelper that runs the command as a transient service of the system's service
// manager, in PID 1's mount namespace, waits for it and passes its output back (systemd-run(1)).
func SystemdRun() []string {
	return []string{"systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=oneshot",
		"--description=BitBuilder network namespace", "--"}
}
