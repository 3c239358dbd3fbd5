package netns

import (
	"context"
	"net/netip"
)

// Spec is the desired network of one tenant.
type Spec struct {
	// Tenant is the tenant's name, a hostname label (1-63 of [a-z0-9-], not starting or ending with '-').
	Tenant string
	// Index is the tenant's unique network index N (Config.MinIndex..Config.MaxIndex).
	Index int
	// DHCP leaves the namespace side of the veth without an address or route, for a DHCP client (networkd's
	// DHCPServer on the bridge answers it). Otherwise it gets 10.N.0.2/24 and a default route via 10.N.0.1.
	DHCP bool
	// VXLAN adds vx-tenant-N (VNI N, Config.VXLANGroup, Config.VXLANPort, over Config.Uplink) to the bridge.
	VXLAN bool
	// WireGuard adds wg-tenant-N (keys and peers are networkd's, from the rendered .netdev).
	WireGuard bool
	// VLAN adds vlan-tenant-N, VLAN id N on Config.Uplink.
	VLAN bool
}

// Link states in Status.
const (
	StateUp     = "up"     // administratively up
	StateDown   = "down"   // exists, administratively down
	StateAbsent = "absent" // does not exist
)

// Status is the observed network of one tenant, for the API and for conditions.
type Status struct {
	Tenant    string
	Index     int
	Namespace string
	// NamespacePresent says whether the tenant's named namespace exists.
	NamespacePresent bool
	Bridge           string
	Prefixes         Prefixes
	// Isolated says whether the bridge's isolation filter is installed as desired.
	Isolated bool
	// Links are the tenant's links, desired ones first in a fixed order, each with what the kernel reports.
	Links []LinkStatus
	// Problems lists every difference between desired and observed, and every failure, one per object.
	Problems []Problem
}

// LinkStatus is one link as the kernel reports it.
type LinkStatus struct {
	Name      string
	Namespace string // "" for the host namespace
	Kind      string // "bridge", "veth", "vxlan", "wireguard", "vlan", "loopback"
	Index     int    // ifindex, 0 when absent
	State     string // StateUp, StateDown, StateAbsent
	OperState string // the kernel's operstate ("up", "down", "lowerlayerdown", "unknown", ...)
	Master    string // the bridge it is enslaved to
	Addresses []netip.Prefix
	Owned     bool // carries the tenant's mark
}

// Problem is one thing that is not as desired.
type Problem struct {
	Link    string // "" when not about a link (namespace, isolation)
	Message string
	Err     error // typed error when there is one (UnsupportedLinkError, ForeignLinkError, OpError)
}

// Host is the kernel side, behind a small interface so the diff logic can be tested with a fake that records the
// resulting state. NewKernel returns the real one.
type Host interface {
	// Observe reads the objects named in q. Objects that do not exist are simply missing from the result.
	Observe(ctx context.Context, q Query) (Observed, error)
	// Apply performs ops in order and returns one error per op (nil for success).
	Apply(ctx context.Context, ops []Op) []error
}

// Query names what Observe reads.
type Query struct {
	Namespace string   // tenant namespace; "" for none
	HostLinks []string // link names in the host namespace
	NSLinks   []string // link names in the tenant namespace
	Filter    string   // bridge whose isolation filter to read; "" for none
	// Conflicts: also read the host's main-table routes and addresses that overlap these prefixes.
	Conflicts []netip.Prefix
	Uplink    bool // also find the link of the host's default route
	// Group: also list the host links in this link group (0: don't).
	Group uint32
}

// Observed is what Observe found.
type Observed struct {
	NamespaceExists bool
	Links           []LinkState
	// Filter is the fingerprint of the isolation filter on Query.Filter's ingress ("" when none).
	Filter string
	// Routes and Addrs are the host namespace's main-table routes and addresses that overlap Query.Conflicts.
	Routes []HostRoute
	Addrs  []HostRoute
	// DefaultLink is the link of the host's default route (Query.Uplink).
	DefaultLink string
	// GroupMembers are the names of the host links in Query.Group.
	GroupMembers []string
}

// LinkState is one observed link.
type LinkState struct {
	Namespace string // "" host
	Name      string
	Index     int
	Kind      string
	Alias     string
	Master    string
	Up        bool
	OperState string
	Addrs     []netip.Prefix // IPv4 addresses
	Gateway   netip.Addr     // IPv4 default route via this link (namespace links only)
	// VNI (the VLAN id for VLAN links) and Parent (the underlay) describe VXLAN and VLAN links.
	VNI    int
	Parent string
	Group  uint32 // link group (host links)

	masterIndex int
}

// HostRoute is a host route destination or address with the link it is on and that link's alias.
type HostRoute struct {
	Prefix netip.Prefix
	Link   string
	Alias  string
}

// OpKind is what an Op does.
type OpKind int

// Op kinds.
const (
	OpAddNamespace OpKind = iota + 1
	OpDelNamespace
	OpAddLink    // create Link (Op.Link), marked with Op.Alias
	OpDelLink    // delete Op.Name
	OpSetMaster  // enslave Op.Name to Op.Master
	OpSetUp      // set Op.Name up
	OpAddAddr    // add Op.Addr to Op.Name
	OpDelAddr    // remove Op.Addr from Op.Name
	OpSetGateway // default route via Op.Gateway on Op.Name
	OpSetFilter  // install the isolation filter on bridge Op.Name (Op.Filter)
	OpSetGroup   // put Op.Name into link group Op.Group
	OpDelGroup   // delete every host link in link group Op.Group, in one request
)

// Op is one change. Namespace is "" for the host namespace, else the tenant namespace's name.
type Op struct {
	Kind      OpKind
	Namespace string
	Name      string
	Alias     string
	Link      NewLink
	Master    string
	Addr      netip.Prefix
	Gateway   netip.Addr
	Filter    Filter
	Group     uint32
}

// NewLink describes a link to create.
type NewLink struct {
	Kind string // "bridge", "veth", "vxlan", "wireguard", "vlan"
	// LinkGroup is the link group (of the host end); 0 for none.
	LinkGroup uint32
	// veth: the peer's name and namespace.
	PeerName, PeerNamespace string
	// vxlan: VNI, group, port; vxlan and vlan: the parent (underlay) link; vlan: VNI is the VLAN id.
	VNI    int
	Group  netip.Addr
	Port   int
	Parent string
}

// Filter is the isolation filter of a tenant's bridge: IPv4 packets entering the host from the bridge are dropped
// when their destination is in Base but not in Own.
type Filter struct {
	Base netip.Prefix
	Own  netip.Prefix
}
