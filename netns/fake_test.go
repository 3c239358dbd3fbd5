package netns

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
)

// fakeHost is a Host that keeps the resulting state in memory, behaving like the kernel where the Manager
// depends on it: a veth pair dies as a whole, links inside a namespace die with it, creating what exists fails
// with EEXIST, unsupported kinds fail with EOPNOTSUPP, an address brings its connected route.
type fakeHost struct {
	namespaces   map[string]bool
	links        map[string]*LinkState // ns + "/" + name
	peers        map[string]string     // veth end key -> other end key
	filters      map[string]string     // bridge -> fingerprint
	routes       []HostRoute           // static host routes (besides connected ones)
	defaultLink  string
	unsupported  []string // link kinds the "kernel" lacks
	nextIndex    int
	applied      int // ops applied successfully
	groupDeletes int
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		namespaces: map[string]bool{}, links: map[string]*LinkState{}, peers: map[string]string{},
		filters: map[string]string{}, nextIndex: 100,
	}
}

func key(ns, name string) string { return ns + "/" + name }

// addLink puts a link into the state directly (something made by hand or by someone else).
func (f *fakeHost) addLink(l LinkState) *LinkState {
	f.nextIndex++
	l.Index = f.nextIndex
	f.links[key(l.Namespace, l.Name)] = &l
	return &l
}

func (f *fakeHost) link(ns, name string) *LinkState { return f.links[key(ns, name)] }

func (f *fakeHost) Observe(ctx context.Context, q Query) (Observed, error) {
	var obs Observed
	for _, n := range q.HostLinks {
		if l := f.link("", n); l != nil {
			obs.Links = append(obs.Links, clone(*l))
		}
	}
	if q.Namespace != "" && f.namespaces[q.Namespace] {
		obs.NamespaceExists = true
		for _, n := range q.NSLinks {
			if l := f.link(q.Namespace, n); l != nil {
				obs.Links = append(obs.Links, clone(*l))
			}
		}
	}
	if q.Filter != "" && f.link("", q.Filter) != nil {
		obs.Filter = f.filters[q.Filter]
	}
	if q.Uplink {
		obs.DefaultLink = f.defaultLink
	}
	if q.Group != 0 {
		for _, l := range f.links {
			if l.Namespace == "" && l.Group == q.Group {
				obs.GroupMembers = append(obs.GroupMembers, l.Name)
			}
		}
	}
	overlaps := func(p netip.Prefix) bool {
		return slices.ContainsFunc(q.Conflicts, func(c netip.Prefix) bool { return p.Masked().Overlaps(c) })
	}
	for _, r := range f.routes {
		if overlaps(r.Prefix) {
			obs.Routes = append(obs.Routes, r)
		}
	}
	for _, l := range f.links {
		if l.Namespace != "" {
			continue
		}
		for _, a := range l.Addrs {
			if overlaps(a) {
				obs.Addrs = append(obs.Addrs, HostRoute{Prefix: a, Link: l.Name, Alias: l.Alias})
				obs.Routes = append(obs.Routes, HostRoute{Prefix: a.Masked(), Link: l.Name, Alias: l.Alias})
			}
		}
	}
	return obs, nil
}

func clone(l LinkState) LinkState {
	l.Addrs = slices.Clone(l.Addrs)
	return l
}

func (f *fakeHost) Apply(ctx context.Context, ops []Op) []error {
	errs := make([]error, len(ops))
	for i, op := range ops {
		if err := f.apply(op); err != nil {
			errs[i] = &OpError{Op: describe(op), Err: err}
		} else {
			f.applied++
		}
	}
	return errs
}

func (f *fakeHost) apply(op Op) error {
	switch op.Kind {
	case OpAddNamespace:
		if f.namespaces[op.Name] {
			return syscall.EEXIST
		}
		f.namespaces[op.Name] = true
		f.addLink(LinkState{Namespace: op.Name, Name: "lo", Kind: "loopback"}) // down, as in a new namespace
		return nil
	case OpDelNamespace:
		if !f.namespaces[op.Name] {
			return syscall.ENOENT
		}
		delete(f.namespaces, op.Name)
		for k, l := range f.links {
			if l.Namespace == op.Name {
				f.delLink(k)
			}
		}
		return nil
	case OpAddLink:
		return f.create(op)
	case OpDelGroup:
		f.groupDeletes++
		for k, l := range f.links {
			if l.Namespace == "" && l.Group == op.Group {
				f.delLink(k)
			}
		}
		return nil
	}
	if op.Namespace != "" && !f.namespaces[op.Namespace] {
		return syscall.ENOENT
	}
	l := f.link(op.Namespace, op.Name)
	if l == nil {
		return syscall.ENODEV
	}
	switch op.Kind {
	case OpDelLink:
		f.delLink(key(op.Namespace, op.Name))
	case OpSetMaster:
		if f.link(op.Namespace, op.Master) == nil {
			return syscall.ENODEV
		}
		l.Master = op.Master
	case OpSetUp:
		l.Up = true
	case OpAddAddr:
		if slices.Contains(l.Addrs, op.Addr) {
			return syscall.EEXIST
		}
		l.Addrs = append(l.Addrs, op.Addr)
	case OpDelAddr:
		i := slices.Index(l.Addrs, op.Addr)
		if i < 0 {
			return syscall.EADDRNOTAVAIL
		}
		l.Addrs = slices.Delete(l.Addrs, i, i+1)
	case OpSetGateway:
		l.Gateway = op.Gateway
	case OpSetFilter:
		f.filters[op.Name] = op.Filter.Fingerprint()
	case OpSetGroup:
		l.Group = op.Group
	default:
		return fmt.Errorf("fake: op %d", op.Kind)
	}
	return nil
}

func (f *fakeHost) create(op Op) error {
	if f.link(op.Namespace, op.Name) != nil {
		return syscall.EEXIST
	}
	if slices.Contains(f.unsupported, op.Link.Kind) {
		return syscall.EOPNOTSUPP
	}
	switch op.Link.Kind {
	case "veth":
		if !f.namespaces[op.Link.PeerNamespace] {
			return syscall.ENOENT
		}
		if f.link(op.Link.PeerNamespace, op.Link.PeerName) != nil {
			return syscall.EEXIST
		}
		a := f.addLink(LinkState{Name: op.Name, Kind: "veth", Alias: op.Alias, Group: op.Link.LinkGroup})
		b := f.addLink(LinkState{Namespace: op.Link.PeerNamespace, Name: op.Link.PeerName, Kind: "veth", Alias: op.Alias})
		f.peers[key(a.Namespace, a.Name)] = key(b.Namespace, b.Name)
		f.peers[key(b.Namespace, b.Name)] = key(a.Namespace, a.Name)
		return nil
	case "vxlan", "vlan":
		if f.link("", op.Link.Parent) == nil {
			return syscall.ENODEV
		}
	}
	f.addLink(LinkState{Name: op.Name, Kind: op.Link.Kind, Alias: op.Alias, VNI: op.Link.VNI, Parent: op.Link.Parent,
		Group: op.Link.LinkGroup})
	return nil
}

func (f *fakeHost) delLink(k string) {
	l := f.links[k]
	delete(f.links, k)
	if p, ok := f.peers[k]; ok {
		delete(f.links, p)
		delete(f.peers, p)
		delete(f.peers, k)
	}
	if l != nil {
		delete(f.filters, l.Name)
		for _, o := range f.links {
			if o.Master == l.Name && o.Namespace == l.Namespace {
				o.Master = ""
			}
		}
	}
}
