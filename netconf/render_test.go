package netconf

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/bitbuilder/bitbuilder/netns"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const exampleDir = "../examples/templates/network"

// A fixed valid key (base64 of 32 bytes) for the golden output.
const peerKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

func loadExample(t *testing.T) *Template {
	t.Helper()
	tmpl, err := Load(os.DirFS(exampleDir))
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func testManager(t *testing.T, r Reloader) *Manager {
	t.Helper()
	if r == nil {
		r = &fakeReloader{}
	}
	m, err := New(Config{Dir: filepath.Join(t.TempDir(), "network"), TenantsDir: filepath.Join(t.TempDir(), "tenants"),
		Reloader: r, KeyOwner: &Owner{UID: os.Getuid(), GID: os.Getgid()}, Addresses: addresses(netns.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func exampleInput() Input {
	return Input{
		Tenant: "acme", Index: 3,
		Vars: map[string]string{"PEER_PUBLIC_KEY": peerKey, "PEER_ENDPOINT": "198.51.100.7:51820", "WIREGUARD_PORT": "51823"},
		Peers: []Peer{{PublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", Endpoint: "[2001:db8::7]:51820",
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.3.100.2/32"), netip.MustParsePrefix("fd00:3::/64")}, PersistentKeepalive: 30}},
	}
}

// The rendered example template is compared with testdata/golden; go test -run TestGolden -update rewrites them.
func TestGoldenExampleTemplate(t *testing.T) {
	m, err := New(Config{Dir: "/run/systemd/network", TenantsDir: "/var/lib/bitbuilder/tenants", Reloader: &fakeReloader{},
		Addresses: addresses(netns.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	files, err := m.Render(loadExample(t), exampleInput())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 9 {
		t.Fatalf("rendered %d files, want the template's 9", len(files))
	}
	for _, f := range files {
		t.Run(f.Name, func(t *testing.T) {
			golden := filepath.Join("testdata", "golden", f.Name)
			if *update {
				if err := os.WriteFile(golden, f.Content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if string(want) != string(f.Content) {
				t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", f.Name, golden, f.Content, want)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	example := func(t *testing.T) *Template { return loadExample(t) }
	synthetic := func(files map[string]string, params string) func(t *testing.T) *Template {
		return func(t *testing.T) *Template {
			fsys := fstest.MapFS{
				"metadata.json":   {Data: []byte(`{"template":{"type":"network","version":"1","name":"t"},"requirements":{"systemd_version":">=257"}}`)},
				"parameters.json": {Data: []byte(`{` + params + `}`)},
			}
			for name, content := range files {
				fsys[name] = &fstest.MapFile{Data: []byte(content)}
			}
			tmpl, err := Load(fsys)
			if err != nil {
				t.Fatal(err)
			}
			return tmpl
		}
	}
	withVar := func(name, value string) func(*Input) {
		return func(in *Input) { in.Vars[name] = value }
	}
	cases := []struct {
		name   string
		tmpl   func(t *testing.T) *Template
		modify func(*Input)
		is     error
		want   string
	}{
		{"newline in a value", example, withVar("PEER_ENDPOINT", "198.51.100.7:1\n[Match]\nName=eth0"), ErrInvalidValue, "PEER_ENDPOINT: contains a newline"},
		{"carriage return", example, withVar("BRIDGE_STP", "no\rDHCP=yes"), ErrInvalidValue, "carriage return"},
		{"NUL", example, withVar("BRIDGE_STP", "no\x00"), ErrInvalidValue, "NUL"},
		{"control character", example, withVar("BRIDGE_STP", "no\x1b[2J"), ErrInvalidValue, "control character U+001B"},
		{"section header", synthetic(map[string]string{"a.network": "[Match]\nName=x\n[Network]\nDescription=${D}\n"}, ""),
			withVar("D", "[Network]"), ErrInvalidValue, "could start a [Section] header"},
		{"percent specifier", example, withVar("PEER_ENDPOINT", "%H:51820"), ErrInvalidValue, "contains '%'"},
		{"percent i", example, withVar("BRIDGE_STP", "%i"), ErrInvalidValue, "contains '%'"},
		{"backslash continuation", example, withVar("BRIDGE_STP", `no\`), ErrInvalidValue, "backslash"},
		{"unknown variable", synthetic(map[string]string{"a.network": "[Match]\nName=x\n[Network]\nDescription=${NOPE}\n"}, ""),
			nil, ErrUnknownVariable, "variable ${NOPE} in a.network line 4"},
		{"unused variable", example, withVar("PEER_ENDPIONT", "1.2.3.4:5"), ErrUnusedVariable, "${PEER_ENDPIONT}"},
		{"built-in variable", example, withVar("TENANT", "other"), ErrInvalidValue, "built-in"},
		{"missing required", example, func(in *Input) { delete(in.Vars, "PEER_PUBLIC_KEY") }, ErrUnknownVariable, "${PEER_PUBLIC_KEY} in 20-wireguard.netdev line 10"},
		{"index zero", example, func(in *Input) { in.Index = 0 }, ErrIndexOutOfRange, "network index 0: outside the allowed range 1..254"},
		{"index 255", example, func(in *Input) { in.Index = 255 }, ErrIndexOutOfRange, "255"},
		{"tenant with a slash", example, func(in *Input) { in.Tenant = "../etc" }, ErrInvalidValue, "tenant"},
		{"peer key not base64", example, withVar("PEER_PUBLIC_KEY", "not-a-key"), ErrInvalidValue, "not standard base64"},
		{"peer key 31 bytes", example, withVar("PEER_PUBLIC_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="), ErrInvalidValue, "31 bytes, want 32"},
		{"API peer key", example, func(in *Input) { in.Peers[0].PublicKey = "short" }, ErrInvalidValue, "peer[0].PublicKey"},
		{"endpoint without port", example, withVar("PEER_ENDPOINT", "198.51.100.7"), ErrInvalidValue, "missing port"},
		{"endpoint port too big", example, withVar("PEER_ENDPOINT", "198.51.100.7:99999"), ErrInvalidValue, "port \"99999\""},
		{"endpoint bare IPv6", example, withVar("PEER_ENDPOINT", "2001:db8::1:51820"), ErrInvalidValue, "PEER_ENDPOINT"},
		{"endpoint bad host", example, withVar("PEER_ENDPOINT", "bad_host!:51820"), ErrInvalidValue, "neither an IP address nor a DNS name"},
		{"endpoint brackets around a name", example, withVar("PEER_ENDPOINT", "[peer]:51820"), ErrInvalidValue, "not an IPv6 address"},
		{"API peer endpoint", example, func(in *Input) { in.Peers[0].Endpoint = "nope" }, ErrInvalidValue, "peer[0].Endpoint"},
		{"keepalive out of range", example, withVar("PEER_KEEPALIVE", "70000"), ErrInvalidValue, "0..65535"},
		{"API keepalive negative", example, func(in *Input) { in.Peers[0].PersistentKeepalive = -1 }, ErrInvalidValue, "peer[0].PersistentKeepalive"},
		{"API peer without AllowedIPs", example, func(in *Input) { in.Peers[0].AllowedIPs = nil }, ErrInvalidValue, "peer[0].AllowedIPs"},
		{"AllowedIPs not CIDRs", synthetic(map[string]string{"a.netdev": "[NetDev]\nName=wg0\nKind=wireguard\n[WireGuardPeer]\nAllowedIPs=${IPS}\n"}, `"IPS":{"type":"cidr-list"}`),
			withVar("IPS", "10.0.0.0/24,10.1.0.1"), ErrInvalidValue, `"10.1.0.1" is not a CIDR`},
		{"unknown % sequence in the template", synthetic(map[string]string{"a.network": "[Match]\nName=br-%H\n"}, ""),
			nil, ErrInvalidTemplate, `a.network line 2: unknown sequence "%H"`},
		{"interface name too long", synthetic(map[string]string{"a.netdev": "[NetDev]\nName=vxlan-tenant-%i\nKind=vxlan\n"}, ""),
			func(in *Input) { in.Index = 100 }, ErrInvalidTemplate, "Name=vxlan-tenant-100 has 16 characters"},
		{"omit unknown file", example, func(in *Input) { in.Omit = []string{"99-nope.network"} }, ErrInvalidTemplate, "99-nope.network"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := testManager(t, nil)
			in := exampleInput()
			in.Vars = map[string]string{}
			tmpl := c.tmpl(t)
			if tmpl.Meta.Template.Name == "tenant-network" {
				in = exampleInput()
			} else {
				in.Peers = nil
			}
			if c.modify != nil {
				c.modify(&in)
			}
			files, err := m.Render(tmpl, in)
			if err == nil {
				t.Fatalf("Render succeeded:\n%s", files)
			}
			if !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			// And Apply changes nothing.
			if _, err := m.Apply(t.Context(), tmpl, in); err == nil {
				t.Fatal("Apply succeeded")
			}
			for _, dir := range []string{m.cfg.Dir, m.cfg.TenantsDir} {
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("Apply with bad input created %s", dir)
				}
			}
			if r := m.cfg.Reloader.(*fakeReloader); r.calls != 0 {
				t.Errorf("Apply with bad input reloaded networkd")
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	meta := `{"template":{"type":"network","version":"1","name":"t"},"requirements":{"systemd_version":">=257"}}`
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no metadata", map[string]string{"a.network": "[Match]\n"}, "metadata.json"},
		{"wrong type", map[string]string{"metadata.json": strings.Replace(meta, `"network"`, `"machine"`, 1), "a.network": "[Match]\n"}, `template.type is "machine"`},
		{"no files", map[string]string{"metadata.json": meta}, "no .netdev or .network files"},
		{"key outside a section", map[string]string{"metadata.json": meta, "a.network": "Name=x\n"}, "a.network line 1: assignment outside a section"},
		{"not key=value", map[string]string{"metadata.json": meta, "a.network": "[Match]\nName\n"}, "a.network line 2"},
		{"carriage return", map[string]string{"metadata.json": meta, "a.network": "[Match]\r\nName=x\n"}, "carriage return"},
		{"bad parameter type", map[string]string{"metadata.json": meta, "parameters.json": `{"X":{"type":"color"}}`, "a.network": "[Match]\n"}, `parameters.json: X: type "color"`},
		{"unknown parameter field", map[string]string{"metadata.json": meta, "parameters.json": `{"X":{"typ":"port"}}`, "a.network": "[Match]\n"}, `parameters.json: json: unknown field "typ"`},
		{"built-in parameter", map[string]string{"metadata.json": meta, "parameters.json": `{"TENANT":{}}`, "a.network": "[Match]\n"}, "TENANT is built in"},
		{"bad parameter name", map[string]string{"metadata.json": meta, "parameters.json": `{"A-B":{}}`, "a.network": "[Match]\n"}, `"A-B" is not a variable name`},
		{"default not a string", map[string]string{"metadata.json": meta, "parameters.json": `{"X":{"default":3}}`, "a.network": "[Match]\n"}, "parameters.json"},
		{"default of the wrong type", map[string]string{"metadata.json": meta, "parameters.json": `{"X":{"type":"port","default":"0"}}`, "a.network": "[Match]\n"}, "X: default"},
		{"newline in the name", map[string]string{"metadata.json": strings.Replace(meta, `"name":"t"`, `"name":"t\n[Network]"`, 1), "a.network": "[Match]\n"}, "template.name: contains a newline"},
		{"bad default", map[string]string{"metadata.json": meta, "parameters.json": `{"X":{"default":"a\nb"}}`, "a.network": "[Match]\n"}, "newline"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for n, content := range c.files {
				fsys[n] = &fstest.MapFile{Data: []byte(content)}
			}
			_, err := Load(fsys)
			if !errors.Is(err, ErrInvalidTemplate) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Load: %v, want ErrInvalidTemplate containing %q", err, c.want)
			}
		})
	}
}

// metadata.json is the seed's format, validated in full elsewhere: its other keys are accepted here.
func TestLoadIgnoresOtherMetadata(t *testing.T) {
	meta := `{"template":{"type":"network","version":"1","name":"t"},"requirements":{"systemd_version":">=257"},` +
		`"defaults":{"network":{"mode":"private"}}}`
	tmpl, err := Load(fstest.MapFS{"metadata.json": {Data: []byte(meta)}, "a.network": {Data: []byte("[Match]\nName=x\n")}})
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.Meta.Template.Name != "t" || len(tmpl.Params) != 0 {
		t.Errorf("template: %+v", tmpl)
	}
}

func TestAddRemovePeer(t *testing.T) {
	a := Peer{PublicKey: peerKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.3.100.2/32")}}
	b := Peer{PublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.3.100.3/32")}}
	peers, err := AddPeer(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	if peers, err = AddPeer(peers, b); err != nil || len(peers) != 2 {
		t.Fatalf("%v %d", err, len(peers))
	}
	a2 := a
	a2.Endpoint = "198.51.100.9:51820"
	if peers, err = AddPeer(peers, a2); err != nil || len(peers) != 2 || peers[0].Endpoint != a2.Endpoint {
		t.Fatalf("replace: %v %+v", err, peers)
	}
	if _, err := AddPeer(peers, Peer{PublicKey: "bad"}); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("AddPeer with a bad key: %v", err)
	}
	peers, ok := RemovePeer(peers, peerKey)
	if !ok || len(peers) != 1 || peers[0].PublicKey != b.PublicKey {
		t.Errorf("RemovePeer: %v %+v", ok, peers)
	}
	if _, ok := RemovePeer(peers, peerKey); ok {
		t.Errorf("RemovePeer of an absent key reported a removal")
	}
}

// addresses is the daemon's Config.Addresses: the network manager's derivation for cfg.
func addresses(cfg netns.Config) func(int) Addresses {
	return func(index int) Addresses {
		p := cfg.Prefixes(index)
		return Addresses{Gateway: p.Gateway, Bridge: p.Bridge, WireGuard: p.WireGuard}
	}
}

// The built-in address variables are the network manager's (netns) networks for the tenant, whatever its base
// prefix: netconf derives none itself, and refuses to work without them.
func TestAddressesFromNetns(t *testing.T) {
	tm, err := Load(os.DirFS("../examples/templates/network"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Dir: t.TempDir(), TenantsDir: t.TempDir(), MaxIndex: 63, Reloader: nopReloader{},
		Addresses: addresses(netns.Config{BasePrefix: netip.MustParsePrefix("100.64.0.0/10"), MaxIndex: 63})})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := m.Render(tm, Input{Tenant: "acme", Index: 5, Vars: map[string]string{"PEER_PUBLIC_KEY": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "PEER_ENDPOINT": "127.0.0.1:51820"}})
	if err != nil {
		t.Fatal(err)
	}
	var all string
	for _, r := range rs {
		all += string(r.Content)
	}
	for _, want := range []string{"Address=100.69.0.1/24", "DNS=100.69.0.1", "Address=100.69.100.1/24", "AllowedIPs=100.69.100.0/24"} {
		if !strings.Contains(all, want) {
			t.Errorf("rendered files lack %q", want)
		}
	}
	if strings.Contains(all, "10.5.") {
		t.Error("rendered files still use the default base prefix")
	}
	if _, err := New(Config{Dir: t.TempDir(), TenantsDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "Addresses") {
		t.Errorf("New without Addresses: %v, want an error naming Addresses", err)
	}
}

type nopReloader struct{}

func (nopReloader) Reload(context.Context) error { return nil }
