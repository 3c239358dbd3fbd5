package metadata

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// HostInfo is what a host offers. Zero values mean unknown.
type HostInfo struct {
	// SystemdVersion is the running manager's major version; 0 if unknown.
	SystemdVersion int
	// SystemdUnknown says why SystemdVersion is unknown.
	SystemdUnknown string
	// Kernel is the kernel release (uname -r); "" if unknown.
	Kernel string
	// Features maps a feature to whether the host has it; a feature that is
	// not in the map could not be determined.
	Features map[Feature]bool
}

// Problem is one requirement the host does not meet, or cannot be shown to
// meet (Unknown).
type Problem struct {
	// Requirement is the metadata.json field: "systemd_version", "kernel" or
	// "features".
	Requirement string
	// Feature is set for Requirement "features".
	Feature Feature
	// Unknown is true when the host's value could not be determined.
	Unknown bool
	// Message is a complete sentence, e.g. "requires systemd >=258, host has 257".
	Message string
}

func (p Problem) String() string { return p.Message }

// CheckHost returns every requirement of m that h does not meet, in the
// order systemd, kernel, features. An empty result means the host fits.
func CheckHost(m *Metadata, h HostInfo) []Problem {
	var out []Problem
	req := m.Requirements
	if req.SystemdVersion != "" {
		c, err := ParseConstraint(req.SystemdVersion)
		switch {
		case err != nil:
			out = append(out, Problem{Requirement: "systemd_version", Message: err.Error()})
		case h.SystemdVersion <= 0:
			why := h.SystemdUnknown
			if why == "" {
				why = "not probed"
			}
			out = append(out, Problem{Requirement: "systemd_version", Unknown: true,
				Message: fmt.Sprintf("requires systemd %s, host systemd version unknown (%s)", c, why)})
		case !c.Allows([]int{h.SystemdVersion}):
			out = append(out, Problem{Requirement: "systemd_version",
				Message: fmt.Sprintf("requires systemd %s, host has %d", c, h.SystemdVersion)})
		}
	}
	if req.Kernel != "" {
		c, err := ParseConstraint(req.Kernel)
		var kv []int
		var kerr error
		if h.Kernel != "" {
			kv, kerr = ParseVersion(h.Kernel)
		}
		switch {
		case err != nil:
			out = append(out, Problem{Requirement: "kernel", Message: err.Error()})
		case h.Kernel == "":
			out = append(out, Problem{Requirement: "kernel", Unknown: true,
				Message: fmt.Sprintf("requires kernel %s, host kernel release unknown", c)})
		case kerr != nil:
			out = append(out, Problem{Requirement: "kernel", Unknown: true,
				Message: fmt.Sprintf("requires kernel %s, host kernel release %q has no version number", c, h.Kernel)})
		case !c.Allows(kv):
			out = append(out, Problem{Requirement: "kernel",
				Message: fmt.Sprintf("requires kernel %s, host has %s", c, h.Kernel)})
		}
	}
	for _, f := range req.Features {
		have, known := h.Features[f]
		switch {
		case !known:
			out = append(out, Problem{Requirement: "features", Feature: f, Unknown: true,
				Message: fmt.Sprintf("requires feature %s, host support unknown", f)})
		case !have:
			out = append(out, Problem{Requirement: "features", Feature: f,
				Message: fmt.Sprintf("requires feature %s, host does not have it", f)})
		}
	}
	return out
}

// Prober finds out what the host offers.
type Prober struct {
	// SystemBusAddress is the D-Bus address of the system bus. Empty means
	// $DBUS_SYSTEM_BUS_ADDRESS, else unix:path=/run/dbus/system_bus_socket.
	SystemBusAddress string
	// Root is prepended to the paths looked at for features ("/" if empty).
	Root string
}

// ProbeHost probes the running host with a default Prober.
func ProbeHost(ctx context.Context) HostInfo {
	return Prober{}.Probe(ctx)
}

// Probe reads the systemd manager's Version property over D-Bus (where a
// system bus with org.freedesktop.systemd1 exists; otherwise
// SystemdUnknown says why), the kernel release from uname, and features
// from installed binaries, kernel modules and device nodes.
func (p Prober) Probe(ctx context.Context) HostInfo {
	var h HostInfo
	h.SystemdVersion, h.SystemdUnknown = p.systemdVersion(ctx)
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		h.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	h.Features = p.features(h.Kernel)
	return h
}

func (p Prober) systemdVersion(ctx context.Context) (int, string) {
	addr := p.SystemBusAddress
	if addr == "" {
		addr = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	if addr == "" {
		addr = "unix:path=/run/dbus/system_bus_socket"
	}
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return 0, fmt.Sprintf("no system bus at %s: %v", addr, err)
	}
	defer conn.Close()
	var v dbus.Variant
	obj := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0,
		"org.freedesktop.systemd1.Manager", "Version").Store(&v); err != nil {
		return 0, fmt.Sprintf("systemd manager not reachable on the system bus: %v", err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return 0, fmt.Sprintf("systemd manager Version property is %s, not a string", v.Signature())
	}
	ver, err := ParseVersion(strings.TrimPrefix(s, "v"))
	if err != nil {
		return 0, fmt.Sprintf("systemd manager Version %q: %v", s, err)
	}
	return ver[0], ""
}

var binDirs = []string{"usr/bin", "bin", "usr/sbin", "sbin", "usr/local/bin", "usr/lib/systemd", "lib/systemd",
	"usr/libexec", "usr/lib/qemu"}

func (p Prober) features(kernel string) map[Feature]bool {
	root := p.Root
	if root == "" {
		root = "/"
	}
	exists := func(rel string) bool {
		_, err := os.Stat(filepath.Join(root, rel))
		return err == nil
	}
	bin := func(name string) bool {
		return slices.ContainsFunc(binDirs, func(d string) bool { return exists(filepath.Join(d, name)) })
	}
	f := map[Feature]bool{
		FeatureVmspawn:  bin("systemd-vmspawn"),
		FeatureNspawn:   bin("systemd-nspawn"),
		FeatureVarlink:  bin("varlinkctl"),
		FeatureNetworkd: bin("systemd-networkd"),
		FeatureResolved: bin("systemd-resolved"),
		FeatureMachined: bin("systemd-machined"),
		FeatureHomed:    bin("systemd-homed"),
		FeatureSysext:   bin("systemd-sysext"),
		FeatureConfext:  bin("systemd-confext"),
		FeatureKVM:      exists("dev/kvm"),
		FeatureVirtiofs: bin("virtiofsd"),
		FeatureTPM:      bin("swtpm"),
	}
	mods := kernelModules(root, kernel)
	for feat, mod := range map[Feature]string{FeatureBridge: "bridge", FeatureVeth: "veth",
		FeatureWireguard: "wireguard", FeatureVxlan: "vxlan", FeatureVlan: "8021q"} {
		switch {
		case exists(filepath.Join("sys/module", mod)):
			f[feat] = true
		case mods != nil:
			f[feat] = mods[mod]
		}
		// Otherwise unknown: no module list to look in.
	}
	return f
}

// kernelModules returns the modules the kernel has built in or can load,
// from lib/modules/<release>/modules.builtin and modules.dep; nil if they
// cannot be read.
func kernelModules(root, release string) map[string]bool {
	if release == "" {
		return nil
	}
	mods := map[string]bool{}
	found := false
	for _, name := range []string{"modules.builtin", "modules.dep"} {
		f, err := os.Open(filepath.Join(root, "lib/modules", release, name))
		if err != nil {
			continue
		}
		found = true
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			path, _, _ := strings.Cut(sc.Text(), ":")
			base := filepath.Base(path)
			if i := strings.Index(base, ".ko"); i > 0 {
				mods[strings.ReplaceAll(base[:i], "-", "_")] = true
			}
		}
		f.Close()
	}
	if !found {
		return nil
	}
	return mods
}
