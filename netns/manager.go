package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"syscall"

	"github.com/bitbuilder/bitbuilder/internal/names"
)

// Manager keeps tenants' host networks converged. It is safe for concurrent use on different tenants; calls for
// the same tenant must not overlap (the reconciler handles one tenant at a time).
type Manager struct {
	cfg  Config
	host Host
	log  *slog.Logger
}

// New checks cfg and returns a Manager. Without cfg.Host it uses the real kernel (NewKernel).
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	host := cfg.Host
	if host == nil {
		host = NewKernel(KernelConfig{NetnsDir: cfg.NetnsDir, HostNetns: cfg.HostNetns, Helper: cfg.NamespaceHelper, IP: cfg.IP})
	}
	return &Manager{cfg: cfg, host: host, log: cfg.Logger}, nil
}

// Names returns the deterministic names of s's objects.
func (m *Manager) Names(s Spec) Names { return m.cfg.names(s) }

// Prefixes returns the networks of the tenant with the given index.
func (m *Manager) Prefixes(index int) Prefixes { return m.cfg.prefixes(index) }

// Names returns the names a Manager with this configuration gives s's objects (zero fields take
// their defaults), for readers that describe a tenant's network without a Manager.
func (c Config) Names(s Spec) Names { return c.withDefaults().names(s) }

// Prefixes returns the networks a Manager with this configuration gives the tenant with the given
// index (zero fields take their defaults).
func (c Config) Prefixes(index int) Prefixes { return c.withDefaults().prefixes(index) }

// want is one desired link.
type want struct {
	ns      string // "" host
	name    string
	kind    string
	create  *NewLink // nil: not created by us (loopback)
	master  string
	addrs   []netip.Prefix
	manage  bool // remove IPv4 addresses not in addrs
	gateway netip.Addr
	filter  *Filter
	err     error // cannot be created (no uplink)
}

func (m *Manager) validate(s Spec) error {
	if err := checkTenant(s.Tenant); err != nil {
		return err
	}
	if s.Index < m.cfg.MinIndex || s.Index > m.cfg.MaxIndex {
		return &IndexError{Index: s.Index, Min: m.cfg.MinIndex, Max: m.cfg.MaxIndex}
	}
	return nil
}

func checkTenant(name string) error {
	var le *names.LabelError
	if errors.As(names.CheckLabel(name), &le) {
		return &SpecError{Field: "Tenant", Value: name, Rule: "not a hostname label: " + le.Reason()}
	}
	return nil
}

func (m *Manager) wants(s Spec, obs Observed) []want {
	n := m.cfg.names(s)
	p := m.cfg.prefixes(s.Index)
	byNetlink := m.cfg.AddressMode == AddressByNetlink
	w := []want{{
		name: n.Bridge, kind: "bridge", create: &NewLink{Kind: "bridge"},
		filter: &Filter{Base: m.cfg.BasePrefix, Own: p.Block}, manage: byNetlink,
	}, {
		name: n.Veth, kind: "veth", master: n.Bridge,
		create: &NewLink{Kind: "veth", PeerName: n.Peer, PeerNamespace: n.Namespace},
	}, {
		ns: n.Namespace, name: "lo", kind: "loopback",
	}, {
		ns: n.Namespace, name: n.Peer, kind: "veth", manage: !s.DHCP,
	}}
	if byNetlink {
		w[0].addrs = []netip.Prefix{p.Gateway}
	}
	if !s.DHCP {
		w[3].addrs = []netip.Prefix{p.Peer}
		w[3].gateway = p.Gateway.Addr()
	}
	uplink := m.cfg.Uplink
	if uplink == "" {
		uplink = obs.DefaultLink
	}
	var noUplink error
	if uplink == "" {
		noUplink = fmt.Errorf("%w: Config.Uplink is empty and the host has no default route", ErrNoUplink)
	}
	if s.VXLAN {
		w = append(w, want{name: n.VXLAN, kind: "vxlan", master: n.Bridge, err: noUplink, create: &NewLink{
			Kind: "vxlan", VNI: s.Index, Group: m.cfg.VXLANGroup, Port: m.cfg.VXLANPort, Parent: uplink}})
	}
	if s.WireGuard {
		wg := want{name: n.WireGuard, kind: "wireguard", create: &NewLink{Kind: "wireguard"}, manage: byNetlink}
		if byNetlink {
			wg.addrs = []netip.Prefix{p.WireGuard}
		}
		w = append(w, wg)
	}
	if s.VLAN {
		w = append(w, want{name: n.VLAN, kind: "vlan", err: noUplink,
			create: &NewLink{Kind: "vlan", VNI: s.Index, Parent: uplink}})
	}
	for i := range w {
		if w[i].ns == "" && w[i].create != nil {
			w[i].create.LinkGroup = m.cfg.group(s.Index)
		}
	}
	return w
}

func (m *Manager) query(s Spec, conflicts bool) Query {
	n := m.cfg.names(s)
	q := Query{
		Namespace: n.Namespace,
		HostLinks: []string{n.Bridge, n.Veth, n.VXLAN, n.WireGuard, n.VLAN},
		NSLinks:   []string{"lo", n.Peer},
		Filter:    n.Bridge,
		Uplink:    (s.VXLAN || s.VLAN) && m.cfg.Uplink == "",
	}
	if conflicts {
		q.Conflicts = m.tenantPrefixes(s)
	}
	return q
}

func (m *Manager) tenantPrefixes(s Spec) []netip.Prefix {
	p := m.cfg.prefixes(s.Index)
	if s.WireGuard {
		return []netip.Prefix{p.Bridge, p.WireGuard.Masked()}
	}
	return []netip.Prefix{p.Bridge}
}

func find(obs Observed, ns, name string) *LinkState {
	for i := range obs.Links {
		if obs.Links[i].Namespace == ns && obs.Links[i].Name == name {
			return &obs.Links[i]
		}
	}
	return nil
}

// foreign returns an error for every desired link that exists without the tenant's mark.
func (m *Manager) foreign(s Spec, ws []want, obs Observed) []error {
	var errs []error
	for _, w := range ws {
		l := find(obs, w.ns, w.name)
		if l == nil || w.name == "lo" || l.Alias == Mark(s.Tenant) {
			continue
		}
		errs = append(errs, &ForeignLinkError{Tenant: s.Tenant, Link: w.name, Namespace: w.ns, Alias: l.Alias})
	}
	return errs
}

// conflicts returns an error for every host route or address that overlaps the tenant's prefixes and is not on a
// link of this tenant.
func (m *Manager) conflicts(s Spec, obs Observed) []error {
	mine := m.tenantPrefixes(s)
	var errs []error
	check := func(what string, rs []HostRoute) {
		for _, r := range rs {
			if r.Prefix.Bits() == 0 || r.Alias == Mark(s.Tenant) {
				continue
			}
			for _, t := range mine {
				if r.Prefix.Masked().Overlaps(t) {
					errs = append(errs, &ConflictError{Tenant: s.Tenant, Prefix: t, What: what, Other: r.Prefix, Link: r.Link})
				}
			}
		}
	}
	check("address", obs.Addrs)
	check("route", obs.Routes)
	return errs
}

// refusals are the reasons to change nothing for s: foreign links and conflicts.
func (m *Manager) refusals(s Spec, ws []want, obs Observed) []error {
	return append(m.foreign(s, ws, obs), m.conflicts(s, obs)...)
}

// creations returns the ops that create missing links and delete stale ones (owned links not desired, and a veth
// whose other end is gone).
func (m *Manager) creations(s Spec, ws []want, obs Observed) []Op {
	n := m.cfg.names(s)
	var ops []Op
	if !obs.NamespaceExists {
		ops = append(ops, Op{Kind: OpAddNamespace, Name: n.Namespace})
	}
	peer := find(obs, n.Namespace, n.Peer)
	veth := find(obs, "", n.Veth)
	if veth != nil && peer == nil {
		ops = append(ops, Op{Kind: OpDelLink, Name: n.Veth})
		veth = nil
	}
	if peer != nil && veth == nil {
		ops = append(ops, Op{Kind: OpDelLink, Namespace: n.Namespace, Name: n.Peer})
	}
	desired := map[string]bool{}
	for _, w := range ws {
		desired[w.name] = w.ns == ""
		if w.create == nil || w.err != nil {
			continue
		}
		l := find(obs, w.ns, w.name)
		if l != nil && stale(*w.create, *l) {
			// A VXLAN or VLAN with another id or underlay cannot be changed in place.
			ops = append(ops, Op{Kind: OpDelLink, Name: w.name})
			l = nil
		}
		if l != nil && !(w.name == n.Veth && veth == nil) {
			continue
		}
		ops = append(ops, Op{Kind: OpAddLink, Namespace: w.ns, Name: w.name, Alias: Mark(s.Tenant), Link: *w.create})
	}
	for _, name := range []string{n.VXLAN, n.WireGuard, n.VLAN} {
		if l := find(obs, "", name); l != nil && !desired[name] && l.Alias == Mark(s.Tenant) {
			ops = append(ops, Op{Kind: OpDelLink, Name: name})
		}
	}
	return ops
}

func stale(want NewLink, got LinkState) bool {
	switch want.Kind {
	case "vxlan", "vlan":
		return got.VNI != want.VNI || got.Parent != want.Parent
	}
	return false
}

// settings returns the ops that configure existing links as desired. created lists links made in this run (they
// are fresh: down, no master, no addresses).
func (m *Manager) settings(ws []want, obs Observed, created map[string]bool) []Op {
	var ops []Op
	for _, w := range ws {
		l := find(obs, w.ns, w.name)
		if created[w.ns+"/"+w.name] {
			l = &LinkState{Namespace: w.ns, Name: w.name}
			if w.create != nil {
				l.Group = w.create.LinkGroup
			}
		}
		if l == nil {
			continue
		}
		if w.create != nil && w.create.LinkGroup != 0 && l.Group != w.create.LinkGroup {
			ops = append(ops, Op{Kind: OpSetGroup, Namespace: w.ns, Name: w.name, Group: w.create.LinkGroup})
		}
		if w.master != "" && l.Master != w.master {
			ops = append(ops, Op{Kind: OpSetMaster, Namespace: w.ns, Name: w.name, Master: w.master})
		}
		for _, a := range w.addrs {
			if !slices.Contains(l.Addrs, a) {
				ops = append(ops, Op{Kind: OpAddAddr, Namespace: w.ns, Name: w.name, Addr: a})
			}
		}
		if w.manage {
			for _, a := range l.Addrs {
				if !slices.Contains(w.addrs, a) {
					ops = append(ops, Op{Kind: OpDelAddr, Namespace: w.ns, Name: w.name, Addr: a})
				}
			}
		}
		if !l.Up {
			ops = append(ops, Op{Kind: OpSetUp, Namespace: w.ns, Name: w.name})
		}
		if w.gateway.IsValid() && l.Gateway != w.gateway {
			ops = append(ops, Op{Kind: OpSetGateway, Namespace: w.ns, Name: w.name, Gateway: w.gateway})
		}
		if w.filter != nil && (created[w.ns+"/"+w.name] || obs.Filter != w.filter.Fingerprint()) {
			ops = append(ops, Op{Kind: OpSetFilter, Namespace: w.ns, Name: w.name, Filter: *w.filter})
		}
	}
	return ops
}

// Ensure makes the host match s: it creates what is missing, fixes what differs and removes the tenant's links that
// s no longer asks for, changing nothing that is already right. Invalid input, a foreign link with one of the
// tenant's names, or a conflicting host route or address is refused before any change. Otherwise every operation is
// attempted and every failure collected: a link kind the kernel lacks (UnsupportedLinkError) does not keep the rest
// of the tenant's network from coming up. The returned Status is observed after the changes.
func (m *Manager) Ensure(ctx context.Context, s Spec) (Status, error) {
	if err := m.validate(s); err != nil {
		return Status{}, err
	}
	log := m.log.With("tenant", s.Tenant, "index", s.Index)
	// A settled tenant (every link there) is compared without reading the host's routes and
	// addresses: the conflict check guards the creation of the tenant's links, and the dump it
	// needs grows with the host, which would make every pass cost O(tenants).
	obs, err := m.host.Observe(ctx, m.query(s, false))
	if err != nil {
		return Status{}, err
	}
	ws := m.wants(s, obs)
	if len(m.creations(s, ws, obs)) > 0 {
		if obs, err = m.host.Observe(ctx, m.query(s, true)); err != nil {
			return Status{}, err
		}
		ws = m.wants(s, obs)
	}
	if errs := m.refusals(s, ws, obs); len(errs) > 0 {
		st := m.status(s, ws, obs, nil)
		st.Problems = append(st.Problems, problemsOf(errs)...)
		return st, errors.Join(errs...)
	}
	failed := map[string]error{} // ns/name -> why it could not be created
	var errs []error
	ops := m.creations(s, ws, obs)
	created := map[string]bool{}
	for i, e := range m.host.Apply(ctx, ops) {
		op := ops[i]
		key := op.Namespace + "/" + op.Name
		if op.Kind == OpDelLink && errors.Is(e, syscall.ENODEV) {
			e = nil // gone meanwhile: a veth dies with its namespace, which the kernel dismantles asynchronously
		}
		if e == nil {
			if op.Kind == OpAddLink {
				created[key] = true
				if op.Link.Kind == "veth" {
					created[op.Link.PeerNamespace+"/"+op.Link.PeerName] = true
				}
			}
			log.Info("changed host network", "op", describe(op))
			continue
		}
		if op.Kind == OpAddLink {
			e = creationError(op, e)
			failed[key] = e
		}
		if op.Kind == OpAddNamespace {
			// nothing can be done inside a namespace that is not there
			errs = append(errs, e)
			st := m.status(s, ws, obs, failed)
			st.Problems = append(st.Problems, problemsOf([]error{e})...)
			return st, errors.Join(errs...)
		}
		errs = append(errs, e)
	}
	for _, w := range ws {
		if w.err != nil {
			e := fmt.Errorf("%s link %s: %w", w.kind, w.name, w.err)
			failed["/"+w.name] = e
			errs = append(errs, e)
		}
	}
	if !obs.NamespaceExists {
		created[m.cfg.names(s).Namespace+"/lo"] = true // a new namespace has lo down
	}
	changed := len(ops) > 0
	ops = m.settings(ws, obs, created)
	for i, e := range m.host.Apply(ctx, ops) {
		if e != nil {
			errs = append(errs, e)
		} else {
			log.Info("changed host network", "op", describe(ops[i]))
		}
	}
	changed = changed || len(ops) > 0
	if changed {
		if obs, err = m.host.Observe(ctx, m.query(s, false)); err != nil {
			errs = append(errs, err)
		}
	}
	return m.status(s, m.wants(s, obs), obs, failed), errors.Join(errs...)
}

func creationError(op Op, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.EOPNOTSUPP {
		return &UnsupportedLinkError{Kind: op.Link.Kind, Link: op.Name, Err: errno}
	}
	return err
}

// Inspect reports the tenant's network as it is, with a Problem for every difference from s. It changes nothing.
func (m *Manager) Inspect(ctx context.Context, s Spec) (Status, error) {
	if err := m.validate(s); err != nil {
		return Status{}, err
	}
	obs, err := m.host.Observe(ctx, m.query(s, true))
	if err != nil {
		return Status{}, err
	}
	ws := m.wants(s, obs)
	st := m.status(s, ws, obs, nil)
	st.Problems = append(st.Problems, problemsOf(m.refusals(s, ws, obs))...)
	return st, nil
}

// Teardown removes everything the tenant has: its links (those carrying its mark; a foreign link with one of its
// names is left alone) and its namespace. What is already gone is not an error.
func (m *Manager) Teardown(ctx context.Context, s Spec) error {
	if err := m.validate(s); err != nil {
		return err
	}
	q := m.query(s, false)
	q.NSLinks, q.Filter, q.Uplink, q.Group = nil, "", false, m.cfg.group(s.Index)
	obs, err := m.host.Observe(ctx, q)
	if err != nil {
		return err
	}
	n := m.cfg.names(s)
	group := m.cfg.group(s.Index)
	var ops []Op
	var owned []string
	inGroup := true
	// The veth first: deleting it removes its peer at once, while a namespace is dismantled asynchronously.
	for _, name := range []string{n.Veth, n.VXLAN, n.WireGuard, n.VLAN, n.Bridge} {
		l := find(obs, "", name)
		if l == nil {
			continue
		}
		if l.Alias != Mark(s.Tenant) {
			m.log.Warn("leaving a link that is not the tenant's", "tenant", s.Tenant, "link", name, "alias", l.Alias)
			continue
		}
		owned = append(owned, name)
		inGroup = inGroup && l.Group == group
		ops = append(ops, Op{Kind: OpDelLink, Name: name})
	}
	// One request for all of them when the group holds exactly the tenant's links: the kernel then waits for one
	// RCU grace period instead of one per link. Anything else in the group (not ours) means one request per link.
	slices.Sort(owned)
	members := slices.Sorted(slices.Values(obs.GroupMembers))
	if len(owned) > 1 && inGroup && slices.Equal(owned, members) {
		ops = []Op{{Kind: OpDelGroup, Group: group}}
	}
	if obs.NamespaceExists {
		ops = append(ops, Op{Kind: OpDelNamespace, Name: n.Namespace})
	}
	var errs []error
	for i, e := range m.host.Apply(ctx, ops) {
		switch {
		case e == nil:
			m.log.Info("changed host network", "tenant", s.Tenant, "op", describe(ops[i]))
		case errors.Is(e, syscall.ENODEV), errors.Is(e, syscall.ENOENT):
			// removed by someone else meanwhile
		default:
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) status(s Spec, ws []want, obs Observed, failed map[string]error) Status {
	n := m.cfg.names(s)
	st := Status{
		Tenant: s.Tenant, Index: s.Index, Namespace: n.Namespace, NamespacePresent: obs.NamespaceExists,
		Bridge: n.Bridge, Prefixes: m.cfg.prefixes(s.Index),
	}
	if !obs.NamespaceExists {
		st.Problems = append(st.Problems, Problem{Message: "namespace " + n.Namespace + " is missing"})
	}
	for _, w := range ws {
		ls := LinkStatus{Name: w.name, Namespace: w.ns, Kind: w.kind, State: StateAbsent}
		l := find(obs, w.ns, w.name)
		if l != nil {
			ls.Index, ls.OperState, ls.Master, ls.Addresses = l.Index, l.OperState, l.Master, l.Addrs
			ls.Owned = l.Alias == Mark(s.Tenant)
			ls.State = StateDown
			if l.Up {
				ls.State = StateUp
			}
			if l.Kind != "" {
				ls.Kind = l.Kind
			}
		}
		st.Links = append(st.Links, ls)
		if e := failed[w.ns+"/"+w.name]; e != nil {
			st.Problems = append(st.Problems, Problem{Link: w.name, Message: e.Error(), Err: e})
			continue
		}
		if l == nil {
			if w.ns == "" || obs.NamespaceExists {
				st.Problems = append(st.Problems, Problem{Link: w.name, Message: fmt.Sprintf("%s link %s is missing", w.kind, w.name)})
			}
			continue
		}
		if w.kind != "loopback" && !ls.Owned {
			continue // reported by foreign()
		}
		for _, op := range m.settings([]want{w}, obs, nil) {
			if op.Kind == OpSetFilter {
				continue
			}
			st.Problems = append(st.Problems, Problem{Link: w.name, Message: describeProblem(op)})
		}
	}
	if f := (Filter{Base: m.cfg.BasePrefix, Own: st.Prefixes.Block}); obs.Filter == f.Fingerprint() {
		st.Isolated = true
	} else if find(obs, "", n.Bridge) != nil {
		st.Problems = append(st.Problems, Problem{Link: n.Bridge, Message: "isolation filter on " + n.Bridge + " is missing or stale"})
	}
	return st
}

func problemsOf(errs []error) []Problem {
	var out []Problem
	for _, e := range errs {
		p := Problem{Message: e.Error(), Err: e}
		var fl *ForeignLinkError
		var ce *ConflictError
		switch {
		case errors.As(e, &fl):
			p.Link = fl.Link
		case errors.As(e, &ce):
			p.Link = ce.Link
		}
		out = append(out, p)
	}
	return out
}

func describe(op Op) string {
	where := ""
	if op.Namespace != "" {
		where = " in " + op.Namespace
	}
	switch op.Kind {
	case OpAddNamespace:
		return "create namespace " + op.Name
	case OpDelNamespace:
		return "delete namespace " + op.Name
	case OpAddLink:
		return "create " + op.Link.Kind + " " + op.Name + where
	case OpDelLink:
		return "delete link " + op.Name + where
	case OpSetMaster:
		return "enslave " + op.Name + " to " + op.Master
	case OpSetUp:
		return "set " + op.Name + " up" + where
	case OpAddAddr:
		return "add " + op.Addr.String() + " to " + op.Name + where
	case OpDelAddr:
		return "remove " + op.Addr.String() + " from " + op.Name + where
	case OpSetGateway:
		return "route default via " + op.Gateway.String() + " on " + op.Name + where
	case OpSetFilter:
		return "install isolation filter on " + op.Name
	case OpSetGroup:
		return fmt.Sprintf("put %s into link group %#x", op.Name, op.Group)
	case OpDelGroup:
		return fmt.Sprintf("delete the links of link group %#x", op.Group)
	}
	return fmt.Sprintf("op %d on %s", op.Kind, op.Name)
}

func describeProblem(op Op) string {
	switch op.Kind {
	case OpSetMaster:
		return op.Name + " is not enslaved to " + op.Master
	case OpSetUp:
		return op.Name + " is down"
	case OpAddAddr:
		return op.Name + " lacks address " + op.Addr.String()
	case OpDelAddr:
		return op.Name + " has unexpected address " + op.Addr.String()
	case OpSetGateway:
		return op.Name + " has no default route via " + op.Gateway.String()
	case OpSetGroup:
		return fmt.Sprintf("%s is not in link group %#x", op.Name, op.Group)
	}
	return describe(op)
}
