package netns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KernelConfig configures the real Host.
type KernelConfig struct {
	NetnsDir  string // default /run/netns
	HostNetns string // "" for the calling process's namespace
	// Helper and IP: see Config.NamespaceHelper.
	Helper []string
	IP     string
}

// Kernel is the real Host: netlink (vishvananda/netlink handles) and named namespaces as bind mounts in NetnsDir,
// exactly as `ip netns` keeps them, without running any command.
type Kernel struct {
	dir      string
	hostPath string
	helper   []string // run `ip netns add|delete` through this; nil: mount in this process
	ip       string

	mu     sync.Mutex
	shared bool // NetnsDir made a shared mount point

	routes hostRoutes // the host's routes and addresses, followed once read
	links  hostLinks  // the host's links and their groups, followed once read
}

// Close stops following the host's routes, addresses and links.
func (k *Kernel) Close() {
	k.routes.close()
	k.links.close()
}

// NewKernel returns the real Host.
func NewKernel(cfg KernelConfig) *Kernel {
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = "/run/netns"
	}
	if cfg.IP == "" {
		cfg.IP = "ip"
	}
	return &Kernel{dir: cfg.NetnsDir, hostPath: cfg.HostNetns, helper: cfg.Helper, ip: cfg.IP}
}

// handles holds the netlink handles one call uses; namespaces are opened lazily and closed at the end.
type handles struct {
	k      *Kernel
	host   *netlink.Handle
	hostNs vns.NsHandle
	ns     map[string]*netlink.Handle
	nsFd   map[string]vns.NsHandle
	raw    *nl.NetlinkSocket // for requests vishvananda/netlink cannot build
	// links caches lookups by ns/name for one call; only the ifindex is used, and any deletion empties it.
	links map[string]netlink.Link
}

func (h *handles) lookup(nh *netlink.Handle, ns, name string) (netlink.Link, error) {
	if l, ok := h.links[ns+"/"+name]; ok {
		return l, nil
	}
	l, err := nh.LinkByName(name)
	if err == nil {
		h.links[ns+"/"+name] = l
	}
	return l, err
}

func (k *Kernel) open() (*handles, error) {
	h := &handles{k: k, hostNs: vns.None(), ns: map[string]*netlink.Handle{}, nsFd: map[string]vns.NsHandle{},
		links: map[string]netlink.Link{}}
	var err error
	if k.hostPath != "" {
		if h.hostNs, err = vns.GetFromPath(k.hostPath); err != nil {
			return nil, &OpError{Op: "open host namespace " + k.hostPath, Err: err}
		}
		h.host, err = netlink.NewHandleAt(h.hostNs, unix.NETLINK_ROUTE)
	} else {
		h.host, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		h.close()
		return nil, &OpError{Op: "open netlink", Err: err}
	}
	return h, nil
}

func (h *handles) close() {
	if h.host != nil {
		h.host.Close()
	}
	if h.hostNs.IsOpen() {
		h.hostNs.Close()
	}
	if h.raw != nil {
		h.raw.Close()
	}
	for name := range h.ns {
		h.closeNs(name)
	}
}

func (h *handles) closeNs(name string) {
	if nh := h.ns[name]; nh != nil {
		nh.Close()
	}
	if fd, ok := h.nsFd[name]; ok {
		fd.Close()
	}
	delete(h.ns, name)
	delete(h.nsFd, name)
}

// netns returns the handle of the named namespace, or (nil, nil) when it does not exist.
func (h *handles) netns(name string) (*netlink.Handle, vns.NsHandle, error) {
	if nh, ok := h.ns[name]; ok {
		return nh, h.nsFd[name], nil
	}
	path := filepath.Join(h.k.dir, name)
	if !isNsfs(path) {
		return nil, vns.None(), nil
	}
	fd, err := vns.GetFromPath(path)
	if err != nil {
		return nil, vns.None(), &OpError{Op: "open namespace", Namespace: name, Err: err}
	}
	nh, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		fd.Close()
		return nil, vns.None(), &OpError{Op: "open netlink", Namespace: name, Err: err}
	}
	h.ns[name], h.nsFd[name] = nh, fd
	return nh, fd, nil
}

func isNsfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Observe implements Host.
func (k *Kernel) Observe(ctx context.Context, q Query) (Observed, error) {
	var obs Observed
	h, err := k.open()
	if err != nil {
		return obs, err
	}
	defer h.close()
	byIndex := map[int]netlink.Link{}
	for _, name := range q.HostLinks {
		l, err := h.host.LinkByName(name)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return obs, &OpError{Op: "read link", Link: name, Err: err}
		}
		byIndex[l.Attrs().Index] = l
		st, err := linkState(h, h.host, l, "", false)
		if err != nil {
			return obs, err
		}
		obs.Links = append(obs.Links, st)
	}
	for i := range obs.Links {
		if m := obs.Links[i].masterIndex; m != 0 {
			if l, ok := byIndex[m]; ok {
				obs.Links[i].Master = l.Attrs().Name
			} else if l, err := h.host.LinkByIndex(m); err == nil {
				obs.Links[i].Master = l.Attrs().Name
			}
		}
	}
	if q.Filter != "" {
		if l, ok := findByName(byIndex, q.Filter); ok {
			if obs.Filter, err = readFilter(h.host, l); err != nil {
				return obs, err
			}
		}
	}
	if q.Namespace != "" && len(q.NSLinks) == 0 {
		obs.NamespaceExists = isNsfs(filepath.Join(k.dir, q.Namespace))
	} else if q.Namespace != "" {
		nh, _, err := h.netns(q.Namespace)
		if err != nil {
			return obs, err
		}
		if nh != nil {
			obs.NamespaceExists = true
			for _, name := range q.NSLinks {
				l, err := nh.LinkByName(name)
				if err != nil {
					if isNotFound(err) {
						continue
					}
					return obs, &OpError{Op: "read link", Link: name, Namespace: q.Namespace, Err: err}
				}
				st, err := linkState(h, nh, l, q.Namespace, true)
				if err != nil {
					return obs, err
				}
				obs.Links = append(obs.Links, st)
			}
		}
	}
	if q.Group != 0 {
		if obs.GroupMembers, err = k.links.groupMembers(h, q.Group); err != nil {
			return obs, err
		}
	}
	if len(q.Conflicts) > 0 || q.Uplink {
		if err := k.readHost(h, &obs, q.Conflicts); err != nil {
			return obs, err
		}
	}
	for i := range obs.Links {
		obs.Links[i].masterIndex = 0
	}
	return obs, ctx.Err()
}

func findByName(m map[int]netlink.Link, name string) (netlink.Link, bool) {
	for _, l := range m {
		if l.Attrs().Name == name {
			return l, true
		}
	}
	return nil, false
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// linkState reads what Observe reports of l. A host link's addresses are read with a dump the kernel filters by
// the link's index (hostAddrs); a tenant namespace holds two links, whose addresses netlink.AddrList reads from a
// dump of the namespace.
func linkState(hs *handles, h *netlink.Handle, l netlink.Link, ns string, gateway bool) (LinkState, error) {
	a := l.Attrs()
	st := LinkState{
		Namespace: ns, Name: a.Name, Index: a.Index, Kind: l.Type(), Alias: a.Alias,
		Up: a.Flags&net.FlagUp != 0, OperState: a.OperState.String(), masterIndex: a.MasterIndex, Group: a.Group,
	}
	if st.Kind == "device" && a.Flags&net.FlagLoopback != 0 {
		st.Kind = "loopback"
	}
	parent := 0
	switch v := l.(type) {
	case *netlink.Vxlan:
		st.VNI, parent = v.VxlanId, v.VtepDevIndex
	case *netlink.Vlan:
		st.VNI, parent = v.VlanId, a.ParentIndex
	}
	if parent != 0 {
		if p, err := h.LinkByIndex(parent); err == nil {
			st.Parent = p.Attrs().Name
		}
	}
	if ns == "" {
		addrs, _, err := hs.hostAddrs(a.Index)
		if err != nil {
			return st, &OpError{Op: "read addresses", Link: a.Name, Err: err}
		}
		st.Addrs = addrs
	} else {
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return st, &OpError{Op: "read addresses", Link: a.Name, Namespace: ns, Err: err}
		}
		for _, ad := range addrs {
			if p, ok := prefixOf(ad.IPNet); ok {
				st.Addrs = append(st.Addrs, p)
			}
		}
	}
	if gateway {
		routes, err := h.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return st, &OpError{Op: "read routes", Link: a.Name, Namespace: ns, Err: err}
		}
		for _, r := range routes {
			if isDefault(r) && r.Gw != nil {
				st.Gateway, _ = netip.AddrFromSlice(r.Gw.To4())
			}
		}
	}
	return st, nil
}

// hostAddrs reads the IPv4 addresses of the host link with the given index. The request names the index and the
// socket asks for strict checking (NETLINK_GET_STRICT_CHK), so the kernel dumps that link's addresses alone:
// netlink.AddrList dumps every address of the namespace and filters them here, which grew with the number of
// tenants (each has an address on its bridge) and made every Observe of a host link O(tenants). It also returns
// how many messages the kernel sent (tests check that the kernel filtered). A link gone meanwhile has none.
func (h *handles) hostAddrs(index int) ([]netip.Prefix, int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	msg := nl.NewIfAddrmsg(unix.AF_INET)
	msg.Index = uint32(index)
	req.AddData(msg)
	var out []netip.Prefix
	var perr error
	sent := 0
	err := h.execute(req, func(m syscall.NetlinkMessage) {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			return
		}
		sent++
		am := nl.DeserializeIfAddrmsg(m.Data)
		if int(am.Index) != index || am.Family != unix.AF_INET {
			return
		}
		attrs, err := nl.ParseRouteAttr(m.Data[am.Len():])
		if err != nil {
			perr = err
			return
		}
		var local, address []byte
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFA_LOCAL:
				local = a.Value
			case unix.IFA_ADDRESS:
				address = a.Value
			}
		}
		// As netlink.AddrList: IFA_LOCAL is the address; IFA_ADDRESS differs from it only on a
		// point-to-point link, where it is the peer's and the local address is a /32.
		bits := int(am.Prefixlen)
		ip := address
		if local != nil {
			if address == nil || !net.IP(local).Equal(net.IP(address)) {
				bits = 32
			}
			ip = local
		}
		if a, ok := netip.AddrFromSlice(ip); ok && a.Is4() {
			out = append(out, netip.PrefixFrom(a, bits))
		}
	})
	if errors.Is(err, unix.ENODEV) {
		return nil, sent, nil
	}
	if err == nil {
		err = perr
	}
	return out, sent, err
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok || n.IP.To4() == nil {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// readHost reads the host's routes and addresses that overlap overlaps, and its default route's
// link, from what hostRoutes follows, or with a dump until that is synced.
func (k *Kernel) readHost(hs *handles, obs *Observed, overlaps []netip.Prefix) error {
	h := hs.host
	relevant := func(p netip.Prefix) bool {
		for _, o := range overlaps {
			if p.Bits() > 0 && p.Masked().Overlaps(o) {
				return true
			}
		}
		return false
	}
	// Links are resolved by index only for the entries that need a name, not with a dump of every link: with
	// hundreds of tenants a full link dump would dominate Ensure.
	names := map[int][2]string{}
	on := func(index int) (string, string) {
		if index == 0 {
			return "", ""
		}
		if v, ok := names[index]; ok {
			return v[0], v[1]
		}
		var v [2]string
		if l, err := h.LinkByIndex(index); err == nil {
			v = [2]string{l.Attrs().Name, l.Attrs().Alias}
		}
		names[index] = v
		return v[0], v[1]
	}
	type entry struct {
		p    netip.Prefix
		link int
	}
	var routeHits, addrHits []entry
	defaultLink, defaultPrio := 0, -1
	if k.routes.snapshot(hs, func(f *hostRoutes) {
		f.routeIdx.candidates(overlaps, func(rk routeKey) {
			link := f.routes[rk]
			switch {
			case !rk.dst.IsValid():
				if defaultPrio < 0 || rk.prio < defaultPrio || rk.prio == defaultPrio && link < defaultLink {
					defaultLink, defaultPrio = link, rk.prio
				}
			case relevant(rk.dst):
				routeHits = append(routeHits, entry{rk.dst, link})
			}
		})
		f.addrIdx.candidates(overlaps, func(ak addrKey) {
			if relevant(ak.p) {
				addrHits = append(addrHits, entry(ak))
			}
		})
	}) {
		// Names are resolved outside the lock, and only of the entries that matter; the order
		// is the dump's (by prefix), not the map's.
		byPrefix := func(a, b entry) int {
			if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
				return c
			}
			return cmp.Or(a.p.Bits()-b.p.Bits(), a.link-b.link)
		}
		slices.SortFunc(routeHits, byPrefix)
		slices.SortFunc(addrHits, byPrefix)
		// An entry whose link is gone is a notification not read yet (a route or address
		// cannot outlive its link): it is left out.
		obs.DefaultLink, _ = on(defaultLink)
		for _, e := range routeHits {
			if name, alias := on(e.link); name != "" || e.link == 0 {
				obs.Routes = append(obs.Routes, HostRoute{Prefix: e.p, Link: name, Alias: alias})
			}
		}
		for _, e := range addrHits {
			if name, alias := on(e.link); name != "" || e.link == 0 {
				obs.Addrs = append(obs.Addrs, HostRoute{Prefix: e.p, Link: name, Alias: alias})
			}
		}
		return nil
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return &OpError{Op: "list routes", Err: err}
	}
	for _, r := range routes {
		if isDefault(r) {
			if obs.DefaultLink == "" {
				obs.DefaultLink, _ = on(r.LinkIndex)
			}
			continue
		}
		if p, ok := prefixOf(r.Dst); ok && relevant(p) {
			name, alias := on(r.LinkIndex)
			obs.Routes = append(obs.Routes, HostRoute{Prefix: p, Link: name, Alias: alias})
		}
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return &OpError{Op: "list addresses", Err: err}
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok && relevant(p) {
			name, alias := on(ad.LinkIndex)
			obs.Addrs = append(obs.Addrs, HostRoute{Prefix: p, Link: name, Alias: alias})
		}
	}
	return nil
}

// ingressParent is the ingress qdisc ffff: (netlink.MakeHandle(0xffff, 0)).
const ingressParent = 0xffff0000

// RTEXT_FILTER_SKIP_STATS (linux/rtnetlink.h), which x/sys/unix does not define.
const rtextFilterSkipStats = 1 << 3

func readFilter(h *netlink.Handle, l netlink.Link) (string, error) {
	filters, err := h.FilterList(l, ingressParent)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return "", nil // no ingress qdisc
		}
		return "", &OpError{Op: "list filters", Link: l.Attrs().Name, Err: err}
	}
	for _, f := range filters {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Handle == filterHandle && b.Priority == filterPriority && b.DirectAction {
			return fmt.Sprintf("%08x", b.ClassId), nil
		}
	}
	return "", nil
}

// Apply implements Host.
func (k *Kernel) Apply(ctx context.Context, ops []Op) []error {
	errs := make([]error, len(ops))
	if len(ops) == 0 {
		return errs
	}
	h, err := k.open()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer h.close()
	for i, op := range ops {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if err := k.apply(ctx, h, op); err != nil {
			var oe *OpError
			if !errors.As(err, &oe) {
				err = &OpError{Op: describe(op), Err: err}
			}
			errs[i] = err
		}
	}
	return errs
}

func (k *Kernel) apply(ctx context.Context, h *handles, op Op) error {
	switch op.Kind {
	case OpDelNamespace, OpDelLink, OpDelGroup:
		defer clear(h.links) // after the op, whose own lookup is cached too
	}
	switch op.Kind {
	case OpAddNamespace:
		if k.helper != nil {
			return k.addNamespaceByHelper(ctx, op.Name)
		}
		return k.addNamespace(op.Name)
	case OpDelNamespace:
		h.closeNs(op.Name)
		if k.helper != nil {
			return k.ipNetns(ctx, "delete", op.Name)
		}
		return k.delNamespace(op.Name)
	case OpAddLink:
		return h.addLink(op)
	case OpDelGroup:
		return h.delGroup(op.Group)
	}
	nh := h.host
	if op.Namespace != "" {
		var err error
		if nh, _, err = h.netns(op.Namespace); err != nil {
			return err
		}
		if nh == nil {
			return fmt.Errorf("namespace %s: %w", op.Namespace, unix.ENOENT)
		}
	}
	l, err := h.lookup(nh, op.Namespace, op.Name)
	// A link can vanish between the plan and the delete: the kernel removes a veth's host end
	// asynchronously after its peer's namespace is deleted. Gone is what the delete wanted.
	var notFound netlink.LinkNotFoundError
	if op.Kind == OpDelLink && errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return err
	}
	switch op.Kind {
	case OpDelLink:
		if err := nh.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return err
		}
		return nil
	case OpSetMaster:
		m, err := h.lookup(nh, op.Namespace, op.Master)
		if err != nil {
			return err
		}
		return nh.LinkSetMasterByIndex(l, m.Attrs().Index)
	case OpSetUp:
		return nh.LinkSetUp(l)
	case OpAddAddr:
		return nh.AddrAdd(l, &netlink.Addr{IPNet: ipNet(op.Addr)})
	case OpDelAddr:
		return nh.AddrDel(l, &netlink.Addr{IPNet: ipNet(op.Addr)})
	case OpSetGateway:
		return nh.RouteReplace(&netlink.Route{
			LinkIndex: l.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.IP(op.Gateway.AsSlice()),
		})
	case OpSetFilter:
		return h.setFilter(l, op.Filter)
	case OpSetGroup:
		return nh.LinkSetGroup(l, int(op.Group))
	}
	return fmt.Errorf("unknown op %d", op.Kind)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (h *handles) addLink(op Op) error {
	nh := h.host
	attrs := netlink.NewLinkAttrs()
	attrs.Name = op.Name
	attrs.Group = op.Link.LinkGroup
	var link netlink.Link
	switch op.Link.Kind {
	case "bridge":
		link = &netlink.Bridge{LinkAttrs: attrs}
	case "veth":
		_, fd, err := h.netns(op.Link.PeerNamespace)
		if err != nil {
			return err
		}
		if !fd.IsOpen() {
			return &OpError{Op: "create veth", Link: op.Name, Err: fmt.Errorf("namespace %s: %w", op.Link.PeerNamespace, unix.ENOENT)}
		}
		link = &netlink.Veth{LinkAttrs: attrs, PeerName: op.Link.PeerName, PeerNamespace: netlink.NsFd(int(fd))}
	case "vxlan", "vlan":
		parent, err := nh.LinkByName(op.Link.Parent)
		if err != nil {
			return &OpError{Op: "create " + op.Link.Kind, Link: op.Name, Err: fmt.Errorf("uplink %s: %w", op.Link.Parent, err)}
		}
		if op.Link.Kind == "vlan" {
			attrs.ParentIndex = parent.Attrs().Index
			link = &netlink.Vlan{LinkAttrs: attrs, VlanId: op.Link.VNI}
		} else {
			link = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: op.Link.VNI, Group: net.IP(op.Link.Group.AsSlice()),
				Port: op.Link.Port, VtepDevIndex: parent.Attrs().Index, Learning: true}
		}
	case "wireguard":
		link = &netlink.Wireguard{LinkAttrs: attrs}
	default:
		return fmt.Errorf("unknown link kind %q", op.Link.Kind)
	}
	if err := nh.LinkAdd(link); err != nil {
		return &OpError{Op: "create " + op.Link.Kind, Link: op.Name, Err: err}
	}
	// The kernel ignores an alias in RTM_NEWLINK, so the mark is a second step; a link we cannot mark is removed
	// again, or the next run would refuse it as foreign.
	mark := func(nh *netlink.Handle, name, ns string) error {
		l, err := h.lookup(nh, ns, name)
		if err == nil {
			err = nh.LinkSetAlias(l, op.Alias)
		}
		if err != nil {
			return &OpError{Op: "mark", Link: name, Namespace: ns, Err: err}
		}
		return nil
	}
	err := mark(nh, op.Name, "")
	if err == nil && op.Link.Kind == "veth" {
		pnh, _, perr := h.netns(op.Link.PeerNamespace)
		if err = perr; err == nil {
			err = mark(pnh, op.Link.PeerName, op.Link.PeerNamespace)
		}
	}
	if err != nil {
		if l, lerr := nh.LinkByName(op.Name); lerr == nil {
			_ = nh.LinkDel(l)
		}
		clear(h.links)
		return err
	}
	return nil
}

// setFilter installs the isolation filter on l's ingress, replacing an older one of ours.
func (h *handles) setFilter(l netlink.Link, f Filter) error {
	name := l.Attrs().Name
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := h.host.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return &OpError{Op: "add ingress qdisc", Link: name, Err: err}
	}
	// vishvananda/netlink only knows eBPF filters (by fd); a classic program is sent as a raw request.
	// NLM_F_REPLACE swaps an older program of ours (same handle and priority) in place.
	req := nl.NewNetlinkRequest(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{
		Family: nl.FAMILY_ALL, Ifindex: int32(l.Attrs().Index), Handle: filterHandle, Parent: ingressParent,
		Info: netlink.MakeHandle(filterPriority, nl.Swap16(unix.ETH_P_ALL)),
	})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("bpf")))
	opts := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
	prog := f.bytes()
	opts.AddRtAttr(nl.TCA_BPF_OPS_LEN, nl.Uint16Attr(uint16(len(prog)/8)))
	opts.AddRtAttr(nl.TCA_BPF_OPS, prog)
	opts.AddRtAttr(nl.TCA_BPF_CLASSID, nl.Uint32Attr(f.classID()))
	opts.AddRtAttr(nl.TCA_BPF_FLAGS, nl.Uint32Attr(nl.TCA_BPF_FLAG_ACT_DIRECT))
	req.AddData(opts)
	if err := h.execute(req, nil); err != nil {
		return &OpError{Op: "install isolation filter", Link: name, Err: err}
	}
	return nil
}

// execute sends req on a NETLINK_ROUTE socket in the host namespace and reads the answer until the kernel's ack
// (or, for a dump, NLMSG_DONE), handing every other message of the request to each.
func (h *handles) execute(req *nl.NetlinkRequest, each func(syscall.NetlinkMessage)) error {
	if h.raw == nil {
		s, err := nl.GetNetlinkSocketAt(h.hostNs, vns.None(), unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		// Strict checking makes the kernel apply the filters a dump request names (hostAddrs).
		if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
			s.Close()
			return err
		}
		h.raw = s
	}
	s := h.raw
	if err := s.Send(req); err != nil {
		return err
	}
	for {
		msgs, _, err := s.Receive()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if errno := -int32(nl.NativeEndian().Uint32(m.Data[0:4])); errno != 0 {
					return syscall.Errno(errno)
				}
				return nil
			default:
				if each != nil {
					each(m)
				}
			}
		}
	}
}

// linkGroups lists the host's links (index -> name and group) with a dump that skips statistics and parses only
// the name and group: much lighter than netlink.LinkList with hundreds of links. hostLinks reads it once, when it
// starts following.
func (h *handles) linkGroups() (map[int]linkEntry, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	links := map[int]linkEntry{}
	var perr error
	err := h.execute(req, func(m syscall.NetlinkMessage) {
		index, l, ok, err := parseLinkEntry(m)
		if err != nil {
			perr = err
		} else if ok {
			links[index] = l
		}
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return nil, &OpError{Op: "list links", Err: err}
	}
	return links, nil
}

// delGroup deletes every host link in group with one RTM_DELLINK (ifindex 0, IFLA_GROUP), as `ip link del group`.
func (h *handles) delGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	if err := h.execute(req, nil); err != nil {
		return &OpError{Op: fmt.Sprintf("delete link group %#x", group), Err: err}
	}
	return nil
}

// addNamespace creates a named network namespace as `ip netns add` does: NetnsDir is made a shared mount point
// (so the namespace is visible from other mount namespaces), and a new namespace is bind-mounted on a file in it.
func (k *Kernel) addNamespace(name string) error {
	if err := k.sharedDir(); err != nil {
		return err
	}
	path := filepath.Join(k.dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return &OpError{Op: "create namespace file", Namespace: name, Err: err}
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread never returns to the pool: it ends with this goroutine, namespace and all.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return &OpError{Op: "create namespace", Namespace: name, Err: err}
	}
	return nil
}

// addNamespaceByHelper makes the namespace with `ip netns add` run through the helper, in the host's mount
// namespace, and checks that the bind mount reached this process's view (it does when the helper's mounts
// propagate here, as they do from PID 1's shared mounts into a service's namespace). A file left by a helper that
// died half-way (not a namespace) is deleted first, as `ip netns delete` does; one that is a namespace already
// (the boot unit netns-tenant@ made it meanwhile) is adopted.
func (k *Kernel) addNamespaceByHelper(ctx context.Context, name string) error {
	path := filepath.Join(k.dir, name)
	if _, err := os.Lstat(path); err == nil && !isNsfs(path) {
		if err := k.ipNetns(ctx, "delete", name); err != nil {
			return err
		}
	}
	err := k.ipNetns(ctx, "add", name)
	if isNsfs(path) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("%s is no namespace after `ip netns add`: the helper's mounts do not propagate into this mount namespace", path)
	}
	return &OpError{Op: "create namespace", Namespace: name, Err: err}
}

// ipNetns runs `ip netns VERB NAME` through the helper; its error carries what the command wrote.
func (k *Kernel) ipNetns(ctx context.Context, verb, name string) error {
	args := append(slices.Clone(k.helper[1:]), k.ip, "netns", verb, name)
	cmd := exec.CommandContext(ctx, k.helper[0], args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return &OpError{Op: verb + " namespace (" + strings.Join(cmd.Args, " ") + ")", Namespace: name, Err: err}
	}
	return nil
}

func (k *Kernel) sharedDir() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.shared {
		return nil
	}
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return &OpError{Op: "create " + k.dir, Err: err}
	}
	err := unix.Mount("", k.dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(k.dir, k.dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", k.dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return &OpError{Op: "make " + k.dir + " a shared mount", Err: err}
	}
	k.shared = true
	return nil
}

func (k *Kernel) delNamespace(name string) error {
	path := filepath.Join(k.dir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return &OpError{Op: "unmount namespace", Namespace: name, Err: err}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &OpError{Op: "remove namespace file", Namespace: name, Err: err}
	}
	return nil
}
