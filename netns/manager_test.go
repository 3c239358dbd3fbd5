package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/net/bpf"
)

func newFakeManager(t *testing.T, f *fakeHost, mod func(*Config)) *Manager {
	t.Helper()
	if f.link("", "eth9") == nil {
		f.addLink(LinkState{Name: "eth9", Kind: "device", Up: true})
	}
	cfg := Config{Host: f, Uplink: "eth9"}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wantConverged checks the fake's end state for spec s.
func wantConverged(t *testing.T, f *fakeHost, m *Manager, s Spec) {
	t.Helper()
	n, p := m.Names(s), m.Prefixes(s.Index)
	if !f.namespaces[n.Namespace] {
		t.Fatalf("namespace %s missing", n.Namespace)
	}
	mark := Mark(s.Tenant)
	br := f.link("", n.Bridge)
	if br == nil || br.Kind != "bridge" || !br.Up || br.Alias != mark {
		t.Fatalf("bridge: %+v", br)
	}
	if m.cfg.AddressMode == AddressByNetlink && !slices.Equal(br.Addrs, []netip.Prefix{p.Gateway}) {
		t.Errorf("bridge addresses %v, want %v", br.Addrs, p.Gateway)
	}
	if m.cfg.AddressMode == AddressByNetworkd && len(br.Addrs) != 0 {
		t.Errorf("bridge addresses %v, want none (networkd's)", br.Addrs)
	}
	if f.filters[n.Bridge] != (Filter{Base: m.cfg.BasePrefix, Own: p.Block}).Fingerprint() {
		t.Errorf("isolation filter missing or stale")
	}
	ve := f.link("", n.Veth)
	if ve == nil || ve.Master != n.Bridge || !ve.Up || ve.Alias != mark {
		t.Errorf("veth: %+v", ve)
	}
	for _, l := range []*LinkState{br, ve, f.link("", n.VXLAN)} {
		if l != nil && l.Group != m.cfg.GroupBase+uint32(s.Index) {
			t.Errorf("%s in link group %#x", l.Name, l.Group)
		}
	}
	peer := f.link(n.Namespace, n.Peer)
	if peer == nil || !peer.Up {
		t.Fatalf("peer: %+v", peer)
	}
	if s.DHCP {
		if len(peer.Addrs) != 0 || peer.Gateway.IsValid() {
			t.Errorf("DHCP peer configured statically: %+v", peer)
		}
	} else if !slices.Equal(peer.Addrs, []netip.Prefix{p.Peer}) || peer.Gateway != p.Gateway.Addr() {
		t.Errorf("peer: %+v", peer)
	}
	if lo := f.link(n.Namespace, "lo"); lo == nil || !lo.Up {
		t.Errorf("lo: %+v", lo)
	}
	vx := f.link("", n.VXLAN)
	if s.VXLAN && (vx == nil || vx.Master != n.Bridge || vx.VNI != s.Index || !vx.Up) {
		t.Errorf("vxlan: %+v", vx)
	}
	if !s.VXLAN && vx != nil && vx.Alias == mark {
		t.Errorf("vxlan left although not asked for")
	}
}

func TestEnsureFake(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		mod  func(*Config)
	}{
		{"static", Spec{Tenant: "acme", Index: 3}, nil},
		{"dhcp", Spec{Tenant: "acme", Index: 3, DHCP: true}, nil},
		{"vxlan", Spec{Tenant: "acme", Index: 3, VXLAN: true}, nil},
		{"networkd addresses", Spec{Tenant: "acme", Index: 3}, func(c *Config) { c.AddressMode = AddressByNetworkd }},
		{"other base", Spec{Tenant: "acme", Index: 15}, func(c *Config) {
			c.BasePrefix = netip.MustParsePrefix("172.16.0.0/12")
			c.MaxIndex = 15
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost()
			m := newFakeManager(t, f, c.mod)
			st, err := m.Ensure(t.Context(), c.spec)
			if err != nil {
				t.Fatal(err)
			}
			wantConverged(t, f, m, c.spec)
			if len(st.Problems) != 0 || !st.Isolated || !st.NamespacePresent {
				t.Errorf("status: %+v", st)
			}
			before := f.applied
			if _, err := m.Ensure(t.Context(), c.spec); err != nil {
				t.Fatal(err)
			}
			if f.applied != before {
				t.Errorf("second Ensure applied %d ops, want 0", f.applied-before)
			}
		})
	}
}

func TestPrefixes(t *testing.T) {
	m := newFakeManager(t, newFakeHost(), func(c *Config) {
		c.BasePrefix = netip.MustParsePrefix("172.16.0.0/12")
		c.MaxIndex = 15
	})
	p := m.Prefixes(15)
	if p.Block.String() != "172.31.0.0/16" || p.Gateway.String() != "172.31.0.1/24" || p.WireGuard.String() != "172.31.100.1/24" {
		t.Errorf("prefixes %+v", p)
	}
	p = newFakeManager(t, newFakeHost(), nil).Prefixes(254)
	if p.Bridge.String() != "10.254.0.0/24" || p.Peer.String() != "10.254.0.2/24" {
		t.Errorf("prefixes %+v", p)
	}
}

func TestEnsureRepairsDrift(t *testing.T) {
	f := newFakeHost()
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	n := m.Names(s)
	br, ve, peer := f.link("", n.Bridge), f.link("", n.Veth), f.link(n.Namespace, n.Peer)
	indexes := []int{br.Index, ve.Index, peer.Index}
	br.Up = false
	br.Addrs = append(br.Addrs, netip.MustParsePrefix("10.3.0.99/24"))
	ve.Master = ""
	peer.Addrs = nil
	peer.Gateway = netip.Addr{}
	f.filters[n.Bridge] = "stale"
	delete(f.links, key("", n.VXLAN))

	st, err := m.Inspect(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, p := range st.Problems {
		msgs = append(msgs, p.Message)
	}
	got := strings.Join(msgs, "\n")
	for _, want := range []string{
		n.Bridge + " is down", n.Bridge + " has unexpected address 10.3.0.99/24", n.Veth + " is not enslaved to " + n.Bridge,
		"eth0 lacks address 10.3.0.2/24", "eth0 has no default route via 10.3.0.1", "isolation filter on " + n.Bridge,
		"vxlan link " + n.VXLAN + " is missing",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Inspect problems lack %q:\n%s", want, got)
		}
	}
	if st.Isolated {
		t.Errorf("Inspect says isolated with a stale filter")
	}
	st, err = m.Ensure(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	wantConverged(t, f, m, s)
	if len(st.Problems) != 0 {
		t.Errorf("problems after repair: %+v", st.Problems)
	}
	if now := []int{f.link("", n.Bridge).Index, f.link("", n.Veth).Index, f.link(n.Namespace, n.Peer).Index}; !slices.Equal(now, indexes) {
		t.Errorf("repair recreated links: ifindexes %v -> %v", indexes, now)
	}
}

func TestEnsureRecreatesVethWhosePeerIsGone(t *testing.T) {
	f := newFakeHost()
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	n := m.Names(s)
	// The namespace was deleted and recreated by hand, while a stale host end survived.
	delete(f.namespaces, n.Namespace)
	delete(f.links, key(n.Namespace, n.Peer))
	delete(f.links, key(n.Namespace, "lo"))
	delete(f.peers, key("", n.Veth))
	if err := f.apply(Op{Kind: OpAddNamespace, Name: n.Namespace}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	wantConverged(t, f, m, s)
}

func TestEnsureRemovesLinksNoLongerAsked(t *testing.T) {
	f := newFakeHost()
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	s.VXLAN = false
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	wantConverged(t, f, m, s)
	if f.link("", m.Names(s).VXLAN) != nil {
		t.Errorf("vxlan not removed")
	}
	// A foreign link with that name is not ours to remove.
	f.addLink(LinkState{Name: m.Names(s).VXLAN, Kind: "vxlan", Alias: "somebody else"})
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if f.link("", m.Names(s).VXLAN) == nil {
		t.Errorf("foreign vxlan removed")
	}
}

// snapshot renders the fake's state, to show that a refused Ensure changed nothing.
func snapshot(f *fakeHost) string {
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range f.links {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%s %+v\n", k, *f.links[k])
	}
	fmt.Fprintf(&b, "%v %v", f.namespaces, f.filters)
	return b.String()
}

func TestEnsureRefuses(t *testing.T) {
	s := Spec{Tenant: "acme", Index: 3}
	cases := []struct {
		name  string
		setup func(f *fakeHost)
		spec  Spec
		is    error
		want  string
	}{
		{"foreign bridge", func(f *fakeHost) { f.addLink(LinkState{Name: "br-tenant-3", Kind: "bridge"}) }, s,
			ErrForeignLink, "link br-tenant-3 in the host namespace already exists with no alias, not \"bitbuilder:acme\""},
		{"another tenant's bridge", func(f *fakeHost) {
			f.addLink(LinkState{Name: "br-tenant-3", Kind: "bridge", Alias: "bitbuilder:other"})
		}, s,
			ErrForeignLink, `alias "bitbuilder:other"`},
		{"foreign veth", func(f *fakeHost) { f.addLink(LinkState{Name: "vh-tenant-3", Kind: "veth"}) }, s,
			ErrForeignLink, "vh-tenant-3"},
		{"foreign link in the namespace", func(f *fakeHost) {
			f.namespaces["tenant-acme"] = true
			f.addLink(LinkState{Namespace: "tenant-acme", Name: "eth0", Kind: "veth"})
		}, s, ErrForeignLink, "link eth0 in the namespace tenant-acme"},
		{"host route", func(f *fakeHost) {
			f.routes = append(f.routes, HostRoute{Prefix: netip.MustParsePrefix("10.3.0.0/16"), Link: "eth0"})
		}, s, ErrConflict, "tenant acme network 10.3.0.0/24 overlaps host route 10.3.0.0/16 on link eth0"},
		{"host address", func(f *fakeHost) {
			f.addLink(LinkState{Name: "eth0", Kind: "device", Addrs: []netip.Prefix{netip.MustParsePrefix("10.3.0.77/24")}})
		}, s, ErrConflict, "host address 10.3.0.77/24 on link eth0"},
		{"route over the WireGuard network", func(f *fakeHost) {
			f.routes = append(f.routes, HostRoute{Prefix: netip.MustParsePrefix("10.3.100.0/28"), Link: "eth0"})
		}, Spec{Tenant: "acme", Index: 3, WireGuard: true}, ErrConflict, "10.3.100.0/24 overlaps host route 10.3.100.0/28"},
		{"index 0", nil, Spec{Tenant: "acme", Index: 0}, ErrIndexOutOfRange, "index 0: outside the allowed range 1..254"},
		{"index 255", nil, Spec{Tenant: "acme", Index: 255}, ErrIndexOutOfRange, "255"},
		{"tenant upper case", nil, Spec{Tenant: "Acme", Index: 3}, ErrInvalidSpec, `upper-case letter 'A' at position 0`},
		{"tenant too long", nil, Spec{Tenant: strings.Repeat("a", 64), Index: 3}, ErrInvalidSpec, "longer than 63"},
		{"tenant path", nil, Spec{Tenant: "../x", Index: 3}, ErrInvalidSpec, "Tenant"},
		{"tenant leading dash", nil, Spec{Tenant: "-x", Index: 3}, ErrInvalidSpec, "start and end with a letter or digit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost()
			f.routes = []HostRoute{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Link: "eth0"}}
			if c.setup != nil {
				c.setup(f)
			}
			m := newFakeManager(t, f, nil)
			before := snapshot(f)
			_, err := m.Ensure(t.Context(), c.spec)
			if !errors.Is(err, c.is) || !strings.Contains(fmt.Sprint(err), c.want) {
				t.Fatalf("Ensure: %v\nwant %v containing %q", err, c.is, c.want)
			}
			if f.applied != 0 || snapshot(f) != before {
				t.Errorf("a refused Ensure changed the host:\n%s\n->\n%s", before, snapshot(f))
			}
		})
	}
}

func TestEnsureUnsupportedKinds(t *testing.T) {
	f := newFakeHost()
	f.unsupported = []string{"wireguard", "vlan"}
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3, WireGuard: true, VLAN: true, VXLAN: true}
	st, err := m.Ensure(t.Context(), s)
	if !errors.Is(err, ErrLinkUnsupported) || !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("Ensure: %v", err)
	}
	for _, want := range []string{
		"wireguard link wg-tenant-3: not supported by this kernel (EOPNOTSUPP)",
		"vlan link vlan-tenant-3: not supported by this kernel (EOPNOTSUPP)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	var links []string
	for _, p := range st.Problems {
		var u *UnsupportedLinkError
		if errors.As(p.Err, &u) {
			links = append(links, p.Link+"="+u.Kind)
		}
	}
	if !slices.Equal(links, []string{"wg-tenant-3=wireguard", "vlan-tenant-3=vlan"}) {
		t.Errorf("problems: %+v", st.Problems)
	}
	wantConverged(t, f, m, s) // the rest is up
}

func TestEnsureUplink(t *testing.T) {
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	t.Run("none", func(t *testing.T) {
		f := newFakeHost()
		m := newFakeManager(t, f, func(c *Config) { c.Uplink = "" })
		st, err := m.Ensure(t.Context(), s)
		if !errors.Is(err, ErrNoUplink) {
			t.Fatalf("Ensure: %v", err)
		}
		if f.link("", m.Names(s).Bridge) == nil || len(st.Problems) != 1 || st.Problems[0].Link != m.Names(s).VXLAN {
			t.Errorf("status %+v", st.Problems)
		}
	})
	t.Run("default route", func(t *testing.T) {
		f := newFakeHost()
		f.addLink(LinkState{Name: "eth7", Kind: "device"})
		f.defaultLink = "eth7"
		m := newFakeManager(t, f, func(c *Config) { c.Uplink = "" })
		if _, err := m.Ensure(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		if vx := f.link("", m.Names(s).VXLAN); vx == nil || vx.Parent != "eth7" {
			t.Errorf("vxlan %+v", vx)
		}
	})
}

func TestTeardownFake(t *testing.T) {
	f := newFakeHost()
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	if err := m.Teardown(t.Context(), s); err != nil {
		t.Fatalf("Teardown of nothing: %v", err)
	}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	other := Spec{Tenant: "other", Index: 4}
	if _, err := m.Ensure(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	foreign := f.addLink(LinkState{Name: m.Names(s).WireGuard, Kind: "wireguard"})
	if err := m.Teardown(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	for k, l := range f.links {
		if l.Alias == Mark("acme") {
			t.Errorf("left %s", k)
		}
	}
	if f.namespaces[m.Names(s).Namespace] {
		t.Errorf("namespace left")
	}
	if f.link("", foreign.Name) == nil {
		t.Errorf("Teardown removed a foreign link")
	}
	wantConverged(t, f, m, other)
	if err := m.Teardown(t.Context(), s); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestTeardownByGroup(t *testing.T) {
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	cases := []struct {
		name      string
		setup     func(f *fakeHost, m *Manager)
		wantGroup bool
	}{
		{"only the tenant's links in the group", nil, true},
		{"a foreign link in the group", func(f *fakeHost, m *Manager) {
			f.addLink(LinkState{Name: "someones", Kind: "bridge", Group: m.cfg.GroupBase + 3})
		}, false},
		{"an owned link outside the group", func(f *fakeHost, m *Manager) {
			f.link("", m.Names(s).VXLAN).Group = 0
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost()
			m := newFakeManager(t, f, nil)
			if _, err := m.Ensure(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				c.setup(f, m)
			}
			if err := m.Teardown(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			if got := f.groupDeletes == 1; got != c.wantGroup {
				t.Errorf("deleted by group: %v, want %v", got, c.wantGroup)
			}
			for k, l := range f.links {
				if l.Alias == Mark(s.Tenant) {
					t.Errorf("left %s", k)
				}
			}
			if c.name == "a foreign link in the group" && f.link("", "someones") == nil {
				t.Errorf("the foreign link in the group was deleted")
			}
		})
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"prefix too long", Config{BridgePrefix: "a-very-long-br-"}, "BridgePrefix: \"a-very-long-br-\" plus a 3-digit index exceeds the kernel's 15-character link name limit"},
		{"prefix with slash", Config{VethPrefix: "v/"}, "VethPrefix"},
		{"base too small", Config{BasePrefix: netip.MustParsePrefix("10.0.0.0/20")}, "BasePrefix"},
		{"base not masked", Config{BasePrefix: netip.MustParsePrefix("10.1.0.0/8")}, "BasePrefix"},
		{"index beyond base", Config{BasePrefix: netip.MustParsePrefix("172.16.0.0/12")}, "MaxIndex: 254 does not fit in 172.16.0.0/12"},
		{"range", Config{MinIndex: 5, MaxIndex: 2}, "MinIndex/MaxIndex"},
		{"negative", Config{MinIndex: -1}, "MinIndex/MaxIndex"},
		{"group", Config{VXLANGroup: netip.MustParseAddr("10.0.0.1")}, "VXLANGroup"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Host = newFakeHost()
			_, err := New(c.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want ErrInvalidConfig containing %q", err, c.want)
			}
		})
	}
}

// Every link name fits IFNAMSIZ for every index of the range, whatever the tenant's name.
func TestNamesFitIFNAMSIZ(t *testing.T) {
	m := newFakeManager(t, newFakeHost(), nil)
	long := strings.Repeat("x", 63)
	seen := map[string]int{}
	for i := m.cfg.MinIndex; i <= m.cfg.MaxIndex; i++ {
		n := m.Names(Spec{Tenant: long, Index: i})
		for _, name := range []string{n.Bridge, n.Veth, n.Peer, n.VXLAN, n.WireGuard, n.VLAN} {
			if err := checkLinkName(name); err != nil {
				t.Fatalf("index %d: %v", i, err)
			}
		}
		for _, name := range []string{n.Bridge, n.Veth, n.VXLAN, n.WireGuard, n.VLAN} {
			if j, dup := seen[name]; dup {
				t.Fatalf("%s used by index %d and %d", name, j, i)
			}
			seen[name] = i
		}
		if n.Namespace != "tenant-"+long {
			t.Fatalf("namespace %s", n.Namespace)
		}
	}
}

// The isolation program, run in a classic BPF interpreter on crafted frames.
func TestFilterProgram(t *testing.T) {
	f := Filter{Base: netip.MustParsePrefix("10.0.0.0/8"), Own: netip.MustParsePrefix("10.3.0.0/16")}
	var raw []bpf.RawInstruction
	for _, in := range f.program() {
		raw = append(raw, bpf.RawInstruction{Op: in.code, Jt: in.jt, Jf: in.jf, K: in.k})
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(ethType uint16, dst string) []byte {
		b := make([]byte, 14+20)
		b[12], b[13] = byte(ethType>>8), byte(ethType)
		b[14] = 0x45
		a := netip.MustParseAddr(dst).As4()
		copy(b[30:], a[:])
		return b
	}
	cases := []struct {
		name  string
		frame []byte
		want  int
	}{
		{"own gateway", frame(0x0800, "10.3.0.1"), tcActOK},
		{"own WireGuard network", frame(0x0800, "10.3.100.7"), tcActOK},
		{"other tenant's gateway", frame(0x0800, "10.4.0.1"), tcActShot},
		{"other tenant's namespace", frame(0x0800, "10.200.0.2"), tcActShot},
		{"outside world", frame(0x0800, "192.0.2.1"), tcActOK},
		{"broadcast (DHCP)", frame(0x0800, "255.255.255.255"), tcActOK},
		{"ARP", frame(0x0806, "10.4.0.1"), tcActOK},
		{"IPv6", frame(0x86dd, "10.4.0.1"), tcActOK},
	}
	for _, c := range cases {
		got, err := vm.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
	if f.Fingerprint() == (Filter{Base: f.Base, Own: netip.MustParsePrefix("10.4.0.0/16")}).Fingerprint() {
		t.Errorf("fingerprint does not depend on the tenant's prefix")
	}
}

func TestEnsureReplacesStaleVXLAN(t *testing.T) {
	f := newFakeHost()
	f.addLink(LinkState{Name: "eth8", Kind: "device", Up: true})
	m := newFakeManager(t, f, nil)
	s := Spec{Tenant: "acme", Index: 3, VXLAN: true}
	if _, err := m.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	// The uplink changed in the configuration: the VXLAN must move to it.
	m2 := newFakeManager(t, f, func(c *Config) { c.Uplink = "eth8" })
	if _, err := m2.Ensure(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if vx := f.link("", m.Names(s).VXLAN); vx == nil || vx.Parent != "eth8" || vx.Master != m.Names(s).Bridge {
		t.Errorf("vxlan %+v", vx)
	}
	wantConverged(t, f, m2, s)
}
