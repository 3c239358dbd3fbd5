package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Machine kinds of units.Machine.
const (
	KindContainer = "container"
	KindVM        = "vm"
)

// DefaultNspawn is the default path of systemd-nspawn(1).
const DefaultNspawn = "/usr/bin/systemd-nspawn"

// DefaultTenantTasksMax bounds the processes of one tenant's slice when Tenant.TasksMax is 0 (systemd-nspawn@.service
// allows 16384 per container).
const DefaultTenantTasksMax = 16384

// Machine is what Render needs to know about one machine (container or VM) of a tenant.
type Machine struct {
	// Name is the machine's name within the tenant, a hostname label; systemd-machined knows it as
	// <tenant>-<name> (MachineName).
	Name string `json:"name"`
	// Kind is KindContainer or KindVM.
	Kind string `json:"kind"`
	// CPUs (0: no CPU limit of its own, the tenant's slice still applies) and MemoryBytes (0: none of its own).
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memoryBytes,omitempty"`
	// VMArgs are extra systemd-vmspawn options from the template's vm-config.yaml (already checked by the daemon).
	VMArgs []string `json:"vmArgs,omitempty"`
	// CloudInit says the VM's template has cloud-init user-data and meta-data: they are passed to the guest as
	// the credentials bitbuilder.cloud-init.user-data and bitbuilder.cloud-init.meta-data.
	CloudInit bool `json:"cloudInit,omitempty"`
	// ImageSysext and ImageConfext say the VM's template carries disk-image extensions of the class in its
	// extensions/: the VM gets that extension directory even when the tenant has no extension of the class.
	ImageSysext  bool `json:"imageSysext,omitempty"`
	ImageConfext bool `json:"imageConfext,omitempty"`
}

// MachineName is the name systemd-machined knows machine m of tenant t by.
func MachineName(tenant, machine string) string { return tenant + "-" + machine }

// MachineUnit is the unit that runs machine m of tenant t: tenant-machine@<escaped machine name>.service.
func MachineUnit(tenant, machine string) string {
	return "tenant-machine@" + Escape(MachineName(tenant, machine)) + ".service"
}

// TenantSlice is the slice all machines of tenant t run in, below bitbuilder.slice: bitbuilder-<escaped t>.slice.
// Its CPUQuota=, MemoryMax= and TasksMax= are the tenant's limits.
func TenantSlice(tenant string) string { return "bitbuilder-" + Escape(tenant) + ".slice" }

// MachinePaths is the layout of one machine's directory, Paths.Dir/machines/<name>.
type MachinePaths struct {
	// Dir is Paths.Dir/machines/<name>.
	Dir string
	// Root is the machine's own writable root: a private copy of the template's tree (a container's rootfs/, a
	// VM's disk-image/rootfs/), made by the daemon.
	Root string
	// Boot is a VM's copy of the template's disk-image/boot (kernel and initrd).
	Boot string
	// Settings is a container's systemd.nspawn(5) file: the template's settings after the daemon dropped what a
	// template may not set. nspawn reads it as an untrusted file next to the root (privileged settings ignored).
	Settings string
	// Credentials holds files a VM gets as systemd credentials (its template's cloud-init user-data, meta-data).
	Credentials string
	// Sysext and Confext hold the extensions handed to the machine, one directory per extension named after its
	// image (the name its release file carries), bound read-only to the machine's /run/extensions and
	// /run/confexts, where its own systemd-sysext and systemd-confext merge them. The daemon fills them with the
	// tenant's extensions that are compatible with the machine (package reconcile).
	Sysext  string
	Confext string
}

// MachinePaths returns the layout of machine m of tenant t.
func (c Config) MachinePaths(tenant, machine string) MachinePaths {
	dir := c.TenantPaths(tenant).Dir + "/machines/" + machine
	return MachinePaths{
		Dir:         dir,
		Root:        dir + "/rootfs",
		Boot:        dir + "/boot",
		Settings:    dir + "/" + MachineName(tenant, machine) + ".nspawn",
		Credentials: dir + "/credentials",
		Sysext:      dir + "/extensions/sysext",
		Confext:     dir + "/extensions/confext",
	}
}

func checkMachines(t Tenant) error {
	seen := map[string]bool{}
	for _, m := range t.Machines {
		if err := CheckName(m.Name); err != nil {
			return fmt.Errorf("tenant %q: machine: %w", t.Name, err)
		}
		if seen[m.Name] {
			return fmt.Errorf("%w: tenant %q: machine %q is listed twice", ErrInvalidName, t.Name, m.Name)
		}
		seen[m.Name] = true
		if n := MachineName(t.Name, m.Name); len(n) > maxMachineName {
			return fmt.Errorf("%w: tenant %q: machine name %q is longer than %d characters", ErrNameTooLong, t.Name, n, maxMachineName)
		}
		if m.Kind != KindContainer && m.Kind != KindVM {
			return fmt.Errorf("%w: tenant %q: machine %q has kind %q", ErrInvalidName, t.Name, m.Name, m.Kind)
		}
		if m.CPUs < 0 || m.MemoryBytes < 0 || math.IsNaN(m.CPUs) || math.IsInf(m.CPUs, 0) {
			return fmt.Errorf("%w: tenant %q: machine %q has negative limits", ErrInvalidName, t.Name, m.Name)
		}
		for _, a := range m.VMArgs {
			if !strings.HasPrefix(a, "--") || strings.ContainsAny(a, "\n\r\x00") {
				return fmt.Errorf("%w: tenant %q: machine %q: vmspawn argument %q", ErrInvalidName, t.Name, m.Name, a)
			}
		}
	}
	if t.CPUs < 0 || t.MemoryBytes < 0 || t.TasksMax < 0 || math.IsNaN(t.CPUs) || math.IsInf(t.CPUs, 0) {
		return fmt.Errorf("%w: tenant %q has negative limits", ErrInvalidName, t.Name)
	}
	return nil
}

// quota renders a CPU count as CPUQuota= percent.
func quota(cpus float64) string {
	return strconv.FormatInt(int64(math.Round(cpus*100)), 10) + "%"
}

// renderSlice writes the tenant's slice.
func (r *renderer) renderSlice(tenantUnit string) {
	t := r.t
	r.header()
	r.section("Unit")
	r.kv("Description", "Machines of BitBuilder tenant ", t.Name)
	r.kv("Before", "slices.target")
	r.section("Slice")
	if t.CPUs > 0 {
		r.kv("CPUQuota", quota(t.CPUs))
	}
	if t.MemoryBytes > 0 {
		r.kv("MemoryMax", strconv.FormatInt(t.MemoryBytes, 10))
	}
	tasks := t.TasksMax
	if tasks == 0 {
		tasks = DefaultTenantTasksMax
	}
	r.kv("TasksMax", strconv.Itoa(tasks))
	_ = tenantUnit
}

// renderMachine writes the unit of one machine.
func (r *renderer) renderMachine(m Machine, names unitNames) {
	t := r.t
	mp := r.cfg.MachinePaths(t.Name, m.Name)
	full := MachineName(t.Name, m.Name)
	bridge := BridgeName(t.NetworkIndex)
	r.header()
	r.section("Unit")
	if m.Kind == KindContainer {
		r.kv("Description", "Container ", m.Name, " of BitBuilder tenant ", t.Name)
	} else {
		r.kv("Description", "VM ", m.Name, " of BitBuilder tenant ", t.Name)
	}
	// The bridge comes from the tenant's network; the machine starts after it, but a failed network call (the
	// daemon is late at boot) does not keep it down: the daemon starts machines itself once it runs.
	r.kv("Wants", names.network)
	r.kv("After", names.network, " ", names.netns, " systemd-machined.service")
	r.kv("Wants", "systemd-machined.service")
	r.kv("PartOf", names.tenant)
	r.kv("RequiresMountsFor", mp.Dir)
	r.section("Service")
	r.kv("Slice", names.slice)
	r.kv("Delegate", "yes")
	r.kv("KillMode", "mixed")
	if m.CPUs > 0 {
		r.kv("CPUQuota", quota(m.CPUs))
	}
	if m.MemoryBytes > 0 {
		limit := m.MemoryBytes
		if m.Kind == KindVM {
			// The guest's RAM plus QEMU's own: a quarter more and 256 MiB.
			limit += m.MemoryBytes/4 + 256<<20
		}
		r.kv("MemoryMax", strconv.FormatInt(limit, 10))
	}
	if m.Kind == KindContainer {
		// As systemd-nspawn@.service: the container's READY=1 makes the unit active; exit 133 is a reboot
		// requested inside the container.
		r.kv("Type", "notify")
		r.kv("TimeoutStartSec", "5min")
		r.kv("RestartForceExitStatus", "133")
		r.kv("SuccessExitStatus", "133")
		r.kv("DelegateSubgroup", "supervisor")
		r.kv("DevicePolicy", "closed")
		r.kv("DeviceAllow", "/dev/net/tun rwm")
		r.kv("DeviceAllow", "char-pts rw")
		r.exec("ExecStart", r.cfg.Nspawn,
			"--quiet",
			"--keep-unit",
			"--boot",
			"--link-journal=no",
			"--machine="+full,
			"--directory="+mp.Root,
			"--private-users=pick",
			"--private-users-ownership=auto",
			"--network-bridge="+bridge,
			"--notify-ready=yes",
			"--settings=yes",
			// Always bound (empty when the tenant has no extension), so that a change of the extensions
			// needs no restart: the daemon has the container's systemd-sysext/confext merge them anew.
			"--bind-ro="+mp.Sysext+":/run/extensions",
			"--bind-ro="+mp.Confext+":/run/confexts",
		)
	} else {
		argv := []string{
			r.cfg.VMSpawn,
			"--machine=" + full,
			"--directory=" + mp.Root,
			"--linux=" + mp.Boot + "/vmlinuz",
			"--initrd=" + mp.Boot + "/initrd.img",
			"--network-tap",
			"--set-credential=bitbuilder.tenant:" + t.Name,
		}
		if m.CloudInit {
			argv = append(argv,
				"--load-credential=bitbuilder.cloud-init.user-data:"+mp.Credentials+"/user-data",
				"--load-credential=bitbuilder.cloud-init.meta-data:"+mp.Credentials+"/meta-data")
		}
		if m.CPUs > 0 {
			argv = append(argv, "--cpus="+strconv.Itoa(int(math.Ceil(m.CPUs))))
		}
		if m.MemoryBytes > 0 {
			argv = append(argv, "--ram="+strconv.FormatInt(m.MemoryBytes, 10))
		}
		// A VM gets its extension directories (virtiofs) only when the tenant or its template (disk images in
		// its extensions/) has extensions of the class: each
		// bind is a virtiofsd of its own. The guest's systemd-sysext/confext merge them at boot.
		if len(t.Sysext) > 0 || m.ImageSysext {
			argv = append(argv, "--bind-ro="+mp.Sysext+":/run/extensions")
		}
		if len(t.Confext) > 0 || m.ImageConfext {
			argv = append(argv, "--bind-ro="+mp.Confext+":/run/confexts")
		}
		argv = append(argv, m.VMArgs...)
		argv = append(argv, r.cfg.VMSpawnArgs...)
		r.kv("Type", "notify")
		// vmspawn reports READY=1 when the guest's systemd does (over vsock), which takes minutes under TCG.
		r.kv("TimeoutStartSec", "10min")
		r.exec("ExecStart", argv...)
		r.vmProperties()
	}
	r.kv("Restart", "on-failure")
	r.kv("RestartSec", "5")
}

// unitNames are the names of one tenant's units.
type unitNames struct{ tenant, netns, network, infra, slice string }

// vmProperties writes Config.VMUnitProperties (checked by withDefaults).
func (r *renderer) vmProperties() {
	for _, p := range r.cfg.VMUnitProperties {
		k, v, _ := strings.Cut(p, "=")
		r.kv(k, v)
	}
}

// TapName is the name systemd-vmspawn gives the tap of machine (vt-<machine>) when it fits the kernel's 15 bytes;
// ok is false for longer names, which vmspawn shortens with a hash: find those on the host (machines.TapOf).
func TapName(machine string) (name string, ok bool) {
	name = "vt-" + machine
	return name, len(name) <= 15
}

// TapNetworkFile is the networkd file of the tap of VM machine (tenant t, machine m). It sorts before networkd's
// stock 80-vm-vt.network, which would otherwise give the tap an address and a DHCP server of its own, outside the
// tenant's bridge and its isolation filter. The daemon puts the tap on the bridge (machines.AttachTap): networkd
// cannot, since the bridge is the daemon's (made with netlink, its netdev failed in networkd), so the file keeps
// the master the daemon set and configures nothing else.
func TapNetworkFile(tenant, machine string) string {
	return "10-bitbuilder-tap-" + MachineName(tenant, machine) + ".network"
}

// TapNetwork is the content of TapNetworkFile for tap, which the daemon puts on bridge.
func TapNetwork(tap, bridge string) []byte {
	return []byte("# Written by BitBuilder: this VM's tap is a port of its tenant's bridge " + bridge + ", put there by the\n" +
		"# daemon. Do not edit.\n" +
		"[Match]\nName=" + tap + "\nDriver=tun\n\n[Network]\nKeepMaster=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
}
