package metadata

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

func TestCheckHost(t *testing.T) {
	m, err := Parse([]byte(seedExample)) // systemd >=258, kernel >=6.0, vmspawn varlink networkd
	if err != nil {
		t.Fatal(err)
	}
	all := map[Feature]bool{FeatureVmspawn: true, FeatureVarlink: true, FeatureNetworkd: true}
	tests := []struct {
		name string
		host HostInfo
		want []string
	}{
		{"fits", HostInfo{SystemdVersion: 258, Kernel: "6.12.48+deb13-amd64", Features: all}, nil},
		{"old systemd", HostInfo{SystemdVersion: 257, Kernel: "6.1.0", Features: all},
			[]string{"requires systemd >=258, host has 257"}},
		{"old kernel", HostInfo{SystemdVersion: 260, Kernel: "5.15.0-100-generic", Features: all},
			[]string{"requires kernel >=6.0, host has 5.15.0-100-generic"}},
		{"unknown systemd", HostInfo{SystemdUnknown: "no system bus", Kernel: "6.1.0", Features: all},
			[]string{"requires systemd >=258, host systemd version unknown (no system bus)"}},
		{"missing and unknown features", HostInfo{SystemdVersion: 258, Kernel: "6.1", Features: map[Feature]bool{FeatureVmspawn: false, FeatureVarlink: true}},
			[]string{"requires feature vmspawn, host does not have it", "requires feature networkd, host support unknown"}},
		{"nothing known", HostInfo{},
			[]string{"requires systemd >=258, host systemd version unknown (not probed)", "requires kernel >=6.0, host kernel release unknown",
				"requires feature vmspawn, host support unknown", "requires feature varlink, host support unknown", "requires feature networkd, host support unknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range CheckHost(m, tt.host) {
				got = append(got, p.Message)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	none, _ := Parse([]byte(`{"template":{"type":"network","name":"n","version":"1"}}`))
	if p := CheckHost(none, HostInfo{}); len(p) != 0 {
		t.Errorf("no requirements, problems %v", p)
	}
}

// TestProbeHostReal probes this machine and compares with what the kernel
// and systemctl say.
func TestProbeHostReal(t *testing.T) {
	h := ProbeHost(t.Context())
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	testpolicy.RequireNoError(t, err, "no /proc")
	if h.Kernel != strings.TrimSpace(string(rel)) {
		t.Errorf("Kernel = %q, /proc says %q", h.Kernel, strings.TrimSpace(string(rel)))
	}
	if h.SystemdVersion == 0 {
		if h.SystemdUnknown == "" {
			t.Error("systemd version unknown without a reason")
		}
		t.Logf("systemd version unknown here: %s", h.SystemdUnknown)
	} else if out, err := exec.Command("systemctl", "--version").Output(); err == nil {
		fields := strings.Fields(string(out))
		if len(fields) >= 2 && fields[1] != "" && !strings.HasPrefix(fields[1], strconv.Itoa(h.SystemdVersion)) {
			t.Errorf("SystemdVersion = %d, systemctl --version says %q", h.SystemdVersion, fields[1])
		}
	}
	_, nspawnErr := exec.LookPath("systemd-nspawn")
	if has, ok := h.Features[FeatureNspawn]; !ok || has != (nspawnErr == nil) {
		t.Errorf("nspawn feature = %t/%t, LookPath says %v", has, ok, nspawnErr)
	}
	_, kvmErr := os.Stat("/dev/kvm")
	if h.Features[FeatureKVM] != (kvmErr == nil) {
		t.Errorf("kvm feature = %t, /dev/kvm: %v", h.Features[FeatureKVM], kvmErr)
	}
}

func TestProbeNoBus(t *testing.T) {
	p := Prober{SystemBusAddress: "unix:path=" + filepath.Join(t.TempDir(), "nobus")}
	h := p.Probe(t.Context())
	if h.SystemdVersion != 0 || !strings.Contains(h.SystemdUnknown, "no system bus at unix:path=") {
		t.Errorf("SystemdVersion=%d SystemdUnknown=%q", h.SystemdVersion, h.SystemdUnknown)
	}
}

// manager serves org.freedesktop.DBus.Properties for a systemd1 Manager
// with a given Version on a real dbus-daemon.
type manager struct{ version string }

func (m manager) Get(iface, prop string) (dbus.Variant, *dbus.Error) {
	if iface == "org.freedesktop.systemd1.Manager" && prop == "Version" {
		return dbus.MakeVariant(m.version), nil
	}
	return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{prop})
}

// TestProbeSystemdOverDBus runs a private dbus-daemon, puts a Manager
// object with a Version property on it, and probes through that bus.
func TestProbeSystemdOverDBus(t *testing.T) {
	daemon := testpolicy.RequireTool(t, "dbus-daemon")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path=`+sock+`</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*"/><allow receive_sender="*"/><allow own="*"/><allow user="*"/></policy></busconfig>`), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, daemon, "--config-file="+conf, "--nofork", "--print-address")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addrLine, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon did not print its address: %v", err)
	}
	addr := strings.TrimSpace(addrLine)

	tests := []struct {
		version string
		want    int
		unknown string
	}{
		{"257.9-1~deb13u1", 257, ""},
		{"252.38-1~deb12u1", 252, ""},
		{"v258", 258, ""},
		{"git", 0, `Version "git"`},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			srv, err := dbus.Connect(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if err := srv.Export(manager{tt.version}, "/org/freedesktop/systemd1", "org.freedesktop.DBus.Properties"); err != nil {
				t.Fatal(err)
			}
			if r, err := srv.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
				t.Fatalf("RequestName: %v %v", r, err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			h := Prober{SystemBusAddress: addr}.Probe(ctx)
			if h.SystemdVersion != tt.want || !strings.Contains(h.SystemdUnknown, tt.unknown) {
				t.Errorf("SystemdVersion=%d SystemdUnknown=%q, want %d %q", h.SystemdVersion, h.SystemdUnknown, tt.want, tt.unknown)
			}
			srv.ReleaseName("org.freedesktop.systemd1")
		})
	}
	// A bus without systemd on it.
	h := Prober{SystemBusAddress: addr}.Probe(t.Context())
	if h.SystemdVersion != 0 || !strings.Contains(h.SystemdUnknown, "systemd manager not reachable") {
		t.Errorf("without systemd: %d %q", h.SystemdVersion, h.SystemdUnknown)
	}
}

func TestProbeFeaturesFromRoot(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"usr/bin/systemd-nspawn", "usr/lib/systemd/systemd-networkd", "dev/kvm",
		"lib/modules/6.1.0-test/modules.dep", "sys/module/bridge/x"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), nil, 0o644)
	}
	os.WriteFile(filepath.Join(root, "lib/modules/6.1.0-test/modules.dep"),
		[]byte("kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\nkernel/drivers/net/veth.ko:\n"), 0o644)
	f := Prober{Root: root}.features("6.1.0-test")
	want := map[Feature]bool{FeatureNspawn: true, FeatureNetworkd: true, FeatureKVM: true, FeatureVmspawn: false,
		FeatureVxlan: true, FeatureVeth: true, FeatureBridge: true, FeatureWireguard: false, FeatureVlan: false}
	for k, v := range want {
		if got, ok := f[k]; !ok || got != v {
			t.Errorf("feature %s = %t (known %t), want %t", k, got, ok, v)
		}
	}
	unknown := Prober{Root: root}.features("no-such-release")
	if _, ok := unknown[FeatureWireguard]; ok {
		t.Error("wireguard known without a module list")
	}
}
