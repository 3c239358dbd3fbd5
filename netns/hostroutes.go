package netns

import (
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostRoutes follows the host namespace's IPv4 routes (main table) and addresses through
// netlink notifications, so that the conflict check of a tenant whose links are to be created
// reads them from memory. Dumping them for every such tenant cost O(tenants) each (every tenant
// adds a route and an address), which made setting up N tenants O(N²).
//
// It subscribes first and then dumps, merging the dump under the notifications that arrived
// meanwhile (an entry deleted during the dump is not put back). A notification the socket had to
// drop (ENOBUFS) or any other error of the subscription makes it stale: the next reader starts it
// over, and until it is synced readers dump as before. What it holds lags the kernel by the
// notifications not yet read, as a dump lags changes made right after it.
type hostRoutes struct {
	mu     sync.Mutex
	state  int              // followIdle, followLoading, followReady
	routes map[routeKey]int // -> link index
	addrs  map[addrKey]bool
	// The same keys by the /16 their prefix falls in (see prefixIndex).
	routeIdx prefixIndex[routeKey]
	addrIdx  prefixIndex[addrKey]
	deleted  map[any]bool // deletions seen while loading
	done     chan struct{}
}

const (
	followIdle = iota
	followLoading
	followReady
)

type routeKey struct {
	dst  netip.Prefix // the zero Prefix for a default route
	link int
	prio int
	gw   netip.Addr
}

type addrKey struct {
	p    netip.Prefix
	link int
}

func routeKeyOf(r netlink.Route) (routeKey, bool) {
	if r.Table != unix.RT_TABLE_MAIN || r.Family != 0 && r.Family != unix.AF_INET {
		return routeKey{}, false
	}
	k := routeKey{link: r.LinkIndex, prio: r.Priority}
	if r.Gw != nil {
		k.gw, _ = netip.AddrFromSlice(r.Gw.To4())
	}
	if !isDefault(r) {
		p, ok := prefixOf(r.Dst)
		if !ok || !p.Addr().Is4() {
			return routeKey{}, false
		}
		k.dst = p
	}
	return k, true
}

// close stops following.
func (f *hostRoutes) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopLocked()
}

func (f *hostRoutes) stopLocked() {
	if f.done != nil {
		close(f.done)
		f.done = nil
	}
	f.state, f.routes, f.addrs, f.deleted = followIdle, nil, nil, nil
	f.routeIdx, f.addrIdx = prefixIndex[routeKey]{}, prefixIndex[addrKey]{}
}

// stale drops what is held after an error of the subscription; the next reader starts over.
func (f *hostRoutes) stale(done chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == done {
		f.stopLocked()
	}
}

// setRoute adds a route (link >= 0) or removes it (link < 0), in the map and the index.
func (f *hostRoutes) setRoute(k routeKey, link int) {
	if link < 0 {
		delete(f.routes, k)
		f.routeIdx.del(k.dst, k)
		return
	}
	f.routes[k] = link
	f.routeIdx.add(k.dst, k)
}

// setAddr adds or removes an address, in the map and the index.
func (f *hostRoutes) setAddr(k addrKey, add bool) {
	if !add {
		delete(f.addrs, k)
		f.addrIdx.del(k.p, k)
		return
	}
	f.addrs[k] = true
	f.addrIdx.add(k.p, k)
}

// prefixIndex holds keys by the /16 their prefix falls in, and those of shorter prefixes (default routes
// included) apart, so that the entries overlapping a tenant's /24s are found among the few in the same /16 and
// the wide ones, not among every other tenant's: a scan of everything held made each conflict check O(tenants).
type prefixIndex[K comparable] struct {
	block map[netip.Prefix]map[K]bool
	wide  map[K]bool
}

const indexBits = 16

// set returns the set p's keys belong in, made if need be.
func (x *prefixIndex[K]) set(p netip.Prefix) map[K]bool {
	if !p.IsValid() || p.Bits() < indexBits {
		if x.wide == nil {
			x.wide = map[K]bool{}
		}
		return x.wide
	}
	b := netip.PrefixFrom(p.Addr(), indexBits).Masked()
	if x.block == nil {
		x.block = map[netip.Prefix]map[K]bool{}
	}
	m := x.block[b]
	if m == nil {
		m = map[K]bool{}
		x.block[b] = m
	}
	return m
}

func (x *prefixIndex[K]) add(p netip.Prefix, k K) { x.set(p)[k] = true }

func (x *prefixIndex[K]) del(p netip.Prefix, k K) {
	m := x.set(p)
	delete(m, k)
	if len(m) == 0 && p.IsValid() && p.Bits() >= indexBits {
		delete(x.block, netip.PrefixFrom(p.Addr(), indexBits).Masked())
	}
}

// candidates calls fn with every key whose prefix may overlap one of overlaps (a superset: the caller checks),
// each once: the wide ones (default routes among them) and those in the /16s the overlaps touch.
func (x *prefixIndex[K]) candidates(overlaps []netip.Prefix, fn func(K)) {
	for k := range x.wide {
		fn(k)
	}
	seen := map[netip.Prefix]bool{}
	for _, o := range overlaps {
		if o.Bits() < indexBits {
			for b, m := range x.block {
				if !seen[b] && b.Overlaps(o) {
					seen[b] = true
					for k := range m {
						fn(k)
					}
				}
			}
			continue
		}
		b := netip.PrefixFrom(o.Addr(), indexBits).Masked()
		if !seen[b] {
			seen[b] = true
			for k := range x.block[b] {
				fn(k)
			}
		}
	}
}

// snapshot calls fn with what is held and returns true, or returns false when nothing is synced
// yet (the caller dumps). The first call starts following, with h (open on the host namespace)
// for the initial dump.
func (f *hostRoutes) snapshot(h *handles, fn func(f *hostRoutes)) bool {
	f.mu.Lock()
	switch f.state {
	case followReady:
		defer f.mu.Unlock()
		fn(f)
		return true
	case followLoading:
		f.mu.Unlock()
		return false
	}
	done := make(chan struct{})
	f.state, f.done = followLoading, done
	f.routes, f.addrs, f.deleted = map[routeKey]int{}, map[addrKey]bool{}, map[any]bool{}
	f.routeIdx, f.addrIdx = prefixIndex[routeKey]{}, prefixIndex[addrKey]{}
	f.mu.Unlock()
	if !f.start(h, done) {
		f.stale(done)
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != followReady {
		return false
	}
	fn(f)
	return true
}

// start subscribes, then dumps and merges; it reports whether following started.
func (f *hostRoutes) start(h *handles, done chan struct{}) bool {
	ns := h.hostNs
	if !ns.IsOpen() {
		ns = vns.None()
	}
	rch := make(chan netlink.RouteUpdate, 256)
	ach := make(chan netlink.AddrUpdate, 256)
	onErr := func(error) { f.stale(done) }
	if netlink.RouteSubscribeWithOptions(rch, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}) != nil {
		return false
	}
	if netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}) != nil {
		return false
	}
	go f.follow(done, rch, ach)
	routes, err := h.host.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	addrs, err := h.host.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done != done {
		return true // went stale meanwhile; the next reader starts over
	}
	for _, r := range routes {
		if k, ok := routeKeyOf(r); ok && !f.deleted[k] {
			f.setRoute(k, r.LinkIndex)
		}
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p.Addr().Is4() {
			if k := (addrKey{p, a.LinkIndex}); !f.deleted[k] {
				f.setAddr(k, true)
			}
		}
	}
	f.state, f.deleted = followReady, nil
	return true
}

// follow applies notifications until done is closed or the subscription fails.
func (f *hostRoutes) follow(done chan struct{}, rch chan netlink.RouteUpdate, ach chan netlink.AddrUpdate) {
	apply := func(k any, add bool, set func()) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.done != done {
			return
		}
		if f.deleted != nil {
			if add {
				delete(f.deleted, k)
			} else {
				f.deleted[k] = true
			}
		}
		set()
	}
	for rch != nil || ach != nil {
		select {
		case u, ok := <-rch:
			if !ok {
				rch = nil
				f.stale(done)
				continue
			}
			k, ok := routeKeyOf(u.Route)
			if !ok {
				continue
			}
			add := u.Type == unix.RTM_NEWROUTE
			apply(k, add, func() {
				if add {
					f.setRoute(k, u.LinkIndex)
				} else {
					f.setRoute(k, -1)
				}
			})
		case u, ok := <-ach:
			if !ok {
				ach = nil
				f.stale(done)
				continue
			}
			p, ok := prefixOf(&u.LinkAddress)
			if !ok || !p.Addr().Is4() {
				continue
			}
			k := addrKey{p, u.LinkIndex}
			apply(k, u.NewAddr, func() {
				if u.NewAddr {
					f.setAddr(k, true)
				} else {
					f.setAddr(k, false)
				}
			})
		}
	}
}

// synced reports whether the copy is in use (tests).
func (f *hostRoutes) synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state == followReady
}
