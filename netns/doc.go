// Package netns keeps each tenant's host networking converged: its network namespace, its bridge, the veth pair
// between them, an optional VXLAN on the bridge, the WireGuard and VLAN links it asks for, and the filter that
// isolates it from the other tenants. Everything goes through netlink (vishvananda/netlink and vishvananda/netns
// handles); no command is run.
//
// # Calling it
//
//	m, err := netns.New(netns.Config{Logger: log, AddressMode: netns.AddressByNetworkd})
//	st, err := m.Ensure(ctx, netns.Spec{Tenant: "acme", Index: 3, VXLAN: true})
//	st, err = m.Inspect(ctx, spec) // read-only; Status.Problems lists every difference
//	err = m.Teardown(ctx, spec)    // idempotent; succeeds when things were removed by hand
//
// Ensure diffs desired against observed and changes only the difference, collecting every error. It refuses the
// whole tenant, changing nothing, on invalid input (SpecError, IndexError), on a link that has one of the tenant's
// names but not its mark (ForeignLinkError), and on a host route or address that overlaps the tenant's networks and
// is not on one of its links (ConflictError). A link kind the kernel cannot create (WireGuard and VLAN on kernels
// without them) is an UnsupportedLinkError, also listed in Status.Problems for that link, while the rest of the
// tenant's network still comes up; errors.Is(err, ErrLinkUnsupported) lets a reconciler turn it into a condition
// rather than retrying it forever.
//
// # Names
//
// Link names must fit the kernel's 15-character IFNAMSIZ limit for any tenant name (a hostname label of up to 63
// characters), so they are derived from the tenant's unique index N, never from its name:
//
//	br-tenant-N   the bridge, 10.N.0.1/24 (by netlink, or by networkd with AddressByNetworkd)
//	vh-tenant-N   host end of the veth pair, enslaved to the bridge
//	eth0          the other end, inside the namespace: 10.N.0.2/24, default route via 10.N.0.1 (or left to DHCP)
//	vx-tenant-N   VXLAN, VNI N, group 239.0.0.1, port 4789, over the uplink, enslaved to the bridge
//	wg-tenant-N   WireGuard, 10.N.100.1/24 (keys and peers come from networkd's .netdev)
//	vlan-tenant-N VLAN id N on the uplink
//
// With the default index range 1..254 the longest is 15 characters (vlan-tenant-254). The seed's "vxlan-tenant-%i"
// is 16 characters from N=100 on, which the kernel refuses, hence vx-. The veth is vh- because systemd-networkd's
// stock 80-container-ve.network claims every ve-* veth (nspawn's) and would configure it (addresses, DHCP server);
// vb-, vz-, vt-, ns- and host0 are taken the same way. The prefixes are configurable, and New checks that every
// prefix plus the widest index of the configured range fits. The namespace is named tenant-<name>: namespace names
// are files under /run/netns and not limited to 15 characters.
//
// A named namespace is a bind mount of the namespace on its file in /run/netns, made as `ip netns add` makes it.
// A process with a mount namespace of its own (bitbuilderd.service) cannot make it: its mounts never reach the host
// (systemd makes a service's mounts slaves of the host's; MountFlags=shared or a shared /run/netns do not change
// that). With Config.NamespaceHelper (SystemdRun) the Kernel has PID 1 run `ip netns add|delete` instead, in the
// host's mount namespace, and sees the result through mount propagation.
//
// Every link BitBuilder creates carries the IFLA alias "bitbuilder:<tenant>" (see Mark), set right after creation
// (the kernel ignores an alias in the create request; a link that cannot be marked is deleted again). A link with a
// tenant's name and another alias or none is foreign: Ensure refuses it and Teardown leaves it alone. A namespace
// with the tenant's name is adopted (the seed's netns-tenant@ unit may have created it).
//
// The tenant's host links are also in link group GroupBase+N (default 0xb1b0000+N). When that group holds exactly
// the tenant's marked links, Teardown deletes them with one request, as `ip link del group` does: the kernel then
// waits for one RCU grace period instead of one per link, which makes teardown about 40% cheaper. Anything else in
// the group makes Teardown delete the tenant's links one by one and leave the rest.
//
// # Addresses
//
// Tenant N owns the /16 at BasePrefix + N<<16 (10.N.0.0/16 for the default 10.0.0.0/8): its bridge network is
// 10.N.0.0/24 and its WireGuard network 10.N.100.0/24. The DHCP pool of the rendered network template (offset 100,
// size 100) does not contain the static 10.N.0.2.
//
// # Isolation
//
// From a tenant's namespace its gateway must answer but no other tenant's bridge address or namespace. Routes do
// not give that: Linux answers for any local address on any interface (the weak host model) and forwards between
// bridges when ip_forward is on. What this kernel offers was checked. VRF (l3mdev) is not built in ("Unknown
// device type"). nftables is in the kernel, but using it means the nft CLI (a package and a command to run) or
// nfnetlink code (a new Go dependency), and a host-wide ruleset to keep in step with the tenants and clean up.
// Moving the local-table rule behind per-bridge policy rules would rewrite the host's rule list. The gact (drop)
// action is not built in, so u32 or flower filters cannot drop. cls_bpf and the ingress qdisc are built in, and
// cls_bpf accepts a classic BPF program in direct-action mode (its return value is the verdict), sent over plain
// rtnetlink with no bpf() syscall.
//
// So each tenant bridge gets an ingress qdisc with a ten-instruction program that drops IPv4 packets entering the
// host from that bridge whose destination is inside BasePrefix but outside the tenant's own /16, and passes
// everything else (its own gateway, the outside world, DHCP broadcasts, non-IP such as ARP). Because it sits on the
// bridge device, it sees exactly the frames the bridge hands to the host stack, for local delivery and for
// forwarding alike, whichever port (veth, VXLAN, a machine's interface) they came in on, and none of the traffic
// between the tenant's own ports. It needs no package and no host-wide state: it lives and dies with the bridge.
// The filter's class id carries a hash of the program, so Observe recognises an installed, up-to-date filter and
// Ensure replaces a stale one. Replies are dropped the same way, so B cannot reach A's namespace either. Measured
// by TestIsolation (real ICMP from inside the namespaces, and the same pings answered once the filter is removed);
// the program itself is checked frame by frame in a BPF interpreter by TestFilterProgram.
//
// # Host
//
// The kernel side is behind Host (Observe, Apply). Kernel is the real one; tests use a fake that records the
// resulting state. Config.HostNetns lets the "host" be a namespace of its own, which is how the tests avoid
// touching the machine's links.
package netns
