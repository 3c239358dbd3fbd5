package units

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// testRegistry is testdata/registry.json, which covers every kind of unit and option.
func testRegistry(t testing.TB) Registry {
	t.Helper()
	reg, skipped, err := ReadRegistry(filepath.Join("testdata", "registry.json"))
	if err != nil || len(skipped) > 0 {
		t.Fatalf("testdata/registry.json: %v %v", err, skipped)
	}
	return reg
}

// concat renders units as one text: a "### name" line before each unit.
func concat(units []Unit) []byte {
	var b bytes.Buffer
	for _, u := range units {
		fmt.Fprintf(&b, "### %s\n", u.Name)
		b.Write(u.Content)
	}
	return b.Bytes()
}

func TestRenderGolden(t *testing.T) {
	custom := Config{
		StateDir:    "/srv/bb",
		LibexecDir:  "/opt/bitbuilder/lib",
		Socket:      "/run/bb/api",
		SocketUnit:  "bb.socket",
		Varlinkctl:  "/opt/bin/varlinkctl",
		IP:          "/sbin/ip",
		VMSpawn:     "/opt/sd/systemd-vmspawn",
		VMSpawnArgs: []string{"--kvm=no", "--tpm=no", "--ram=50%", "--set-credential=x:$y z"},
	}
	for _, rt := range testRegistry(t).Tenants {
		for _, c := range []struct {
			suffix string
			cfg    Config
		}{{"", Config{}}, {"-custom", custom}} {
			if c.suffix != "" && rt.Name != "acme-prod" {
				continue
			}
			t.Run(rt.Name+c.suffix, func(t *testing.T) {
				units, err := Render(rt.Tenant(), c.cfg)
				if err != nil {
					t.Fatal(err)
				}
				golden(t, filepath.Join("render", rt.Name+c.suffix+".golden"), concat(units))
			})
		}
	}
}

// TestRenderUnitSet checks which units a tenant gets (and that a mount unit, should one come back, is named
// after its Where=).
func TestRenderUnitSet(t *testing.T) {
	tests := []struct {
		tenant Tenant
		want   []string
	}{
		{Tenant{Name: "a", NetworkIndex: 1}, []string{"tenant@a.service", "netns-tenant@a.service", "tenant-network@a.service"}},
		{Tenant{Name: "a-b", NetworkIndex: 1, Infra: true}, []string{`tenant@a\x2db.service`, `netns-tenant@a\x2db.service`, `tenant-network@a\x2db.service`, `tenant-infra@a\x2db.service`}},
		// Extensions are handed to the machines (package reconcile): no host mount unit for them.
		{Tenant{Name: "a", NetworkIndex: 1, Sysext: []string{"x"}, Confext: []string{"y"}}, []string{
			"tenant@a.service", "netns-tenant@a.service", "tenant-network@a.service"}},
	}
	for _, tt := range tests {
		units, err := Render(tt.tenant, Config{})
		if err != nil {
			t.Fatalf("Render(%+v): %v", tt.tenant, err)
		}
		var got []string
		for _, u := range units {
			got = append(got, u.Name)
			if strings.HasSuffix(u.Name, ".mount") {
				where := settingValue(u.Content, "Where")
				if name, _ := MountUnitName(where); name != u.Name {
					t.Errorf("unit %s has Where=%s, whose unit name is %s", u.Name, where, name)
				}
			}
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Render(%+v) units = %q, want %q", tt.tenant, got, tt.want)
		}
	}
}

func settingValue(content []byte, key string) string {
	for _, line := range strings.Split(string(content), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestRenderRejects(t *testing.T) {
	long58 := strings.Repeat("a", 58)
	tests := []struct {
		name   string
		tenant Tenant
		cfg    Config
		want   error
	}{
		{"empty name", Tenant{NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"upper case", Tenant{Name: "Acme", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"dot dot slash", Tenant{Name: "../etc", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"slash", Tenant{Name: "a/b", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"leading dash", Tenant{Name: "-a", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"trailing dash", Tenant{Name: "a-", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"64 characters", Tenant{Name: strings.Repeat("a", 64), NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"space", Tenant{Name: "a b", NetworkIndex: 1}, Config{}, ErrInvalidName},
		{"index 0", Tenant{Name: "a"}, Config{}, ErrInvalidIndex},
		{"index too big", Tenant{Name: "a", NetworkIndex: MaxNetworkIndex + 1}, Config{}, ErrInvalidIndex},
		{"infra machine name too long", Tenant{Name: long58 + "a", NetworkIndex: 1, Infra: true}, Config{}, ErrNameTooLong},
		{"mount unit name too long", Tenant{Name: "a" + strings.Repeat("-", 61) + "a", NetworkIndex: 1, Sysext: []string{"x"}}, Config{}, ErrNameTooLong},
		{"extension with slash", Tenant{Name: "a", NetworkIndex: 1, Sysext: []string{"../../etc"}}, Config{}, ErrInvalidExtension},
		{"extension with colon", Tenant{Name: "a", NetworkIndex: 1, Confext: []string{"x:y"}}, Config{}, ErrInvalidExtension},
		{"extension with comma", Tenant{Name: "a", NetworkIndex: 1, Confext: []string{"x,upperdir=/"}}, Config{}, ErrInvalidExtension},
		{"hidden extension", Tenant{Name: "a", NetworkIndex: 1, Sysext: []string{".x"}}, Config{}, ErrInvalidExtension},
		{"duplicate extension", Tenant{Name: "a", NetworkIndex: 1, Sysext: []string{"x", "x"}}, Config{}, ErrInvalidExtension},
		{"relative state dir", Tenant{Name: "a", NetworkIndex: 1}, Config{StateDir: "var/lib"}, ErrInvalidConfig},
		{"state dir with colon", Tenant{Name: "a", NetworkIndex: 1}, Config{StateDir: "/var/a:b"}, ErrInvalidConfig},
		{"state dir unclean", Tenant{Name: "a", NetworkIndex: 1}, Config{StateDir: "/var/../etc"}, ErrInvalidConfig},
		{"ip with space", Tenant{Name: "a", NetworkIndex: 1}, Config{IP: "/usr/bin/i p"}, ErrInvalidConfig},
		{"socket unit", Tenant{Name: "a", NetworkIndex: 1}, Config{SocketUnit: "x.service"}, ErrInvalidConfig},
		{"vmspawn arg newline", Tenant{Name: "a", NetworkIndex: 1}, Config{VMSpawnArgs: []string{"a\nExecStart=/bin/evil"}}, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			units, err := Render(tt.tenant, tt.cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Render error = %v, want %v", err, tt.want)
			}
			if units != nil {
				t.Errorf("Render returned %d units with its error", len(units))
			}
		})
	}
	// The longest names that are accepted.
	for _, tn := range []Tenant{
		{Name: long58, NetworkIndex: 1, Infra: true},
		{Name: strings.Repeat("b", 63), NetworkIndex: MaxNetworkIndex, Sysext: []string{"x"}, Confext: []string{"y"}},
	} {
		if _, err := Render(tn, Config{}); err != nil {
			t.Errorf("Render(%q): %v", tn.Name, err)
		}
	}
}

// TestRenderExtensionBinds: a container's unit always binds its own extension directories to /run/extensions and
// /run/confexts (so a change of the tenant's extensions needs no restart); a VM's only when the tenant has
// extensions of the class or its template carries disk images of it (each bind is a virtiofsd); the
// infrastructure VM binds its own directories.
func TestRenderExtensionBinds(t *testing.T) {
	cfg := Config{}
	mp := cfg.MachinePaths("a", "c")
	vp := cfg.MachinePaths("a", "v")
	sysBind, confBind := "--bind-ro="+mp.Sysext+":/run/extensions", "--bind-ro="+mp.Confext+":/run/confexts"
	vmSys, vmConf := "--bind-ro="+vp.Sysext+":/run/extensions", "--bind-ro="+vp.Confext+":/run/confexts"
	infraSys := "--bind-ro=" + cfg.TenantPaths("a").InfraSysext + ":/run/extensions"
	for _, tt := range []struct {
		sysext, confext []string
		want, notWant   []string
		imgSys, imgConf bool // the VM's template has disk images of the class in its extensions/
	}{
		{nil, nil, []string{sysBind, confBind}, []string{vmSys, vmConf, infraSys}, false, false},
		{[]string{"x"}, nil, []string{sysBind, confBind, vmSys, infraSys}, []string{vmConf}, false, false},
		{nil, []string{"y"}, []string{sysBind, confBind, vmConf}, []string{vmSys, infraSys}, false, false},
		{nil, nil, []string{vmSys}, []string{vmConf, infraSys}, true, false},
		{nil, nil, []string{vmConf}, []string{vmSys, infraSys}, false, true},
	} {
		us, err := Render(Tenant{Name: "a", NetworkIndex: 1, Infra: true, Sysext: tt.sysext, Confext: tt.confext,
			Machines: []Machine{{Name: "c", Kind: KindContainer}, {Name: "v", Kind: KindVM, ImageSysext: tt.imgSys, ImageConfext: tt.imgConf}}}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		all := string(concat(us))
		for _, w := range tt.want {
			if !strings.Contains(all, w) {
				t.Errorf("sysext %v confext %v: no %s", tt.sysext, tt.confext, w)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(all, w) {
				t.Errorf("sysext %v confext %v: has %s", tt.sysext, tt.confext, w)
			}
		}
	}
}
