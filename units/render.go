package units

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bitbuilder/bitbuilder/internal/names"
)

// Defaults of Config.
const (
	DefaultStateDir   = "/var/lib/bitbuilder"
	DefaultLibexecDir = "/usr/lib/bitbuilder"
	DefaultSocket     = "/run/bitbuilder/io.bitbuilder"
	DefaultSocketUnit = "bitbuilderd.socket"
	DefaultVarlinkctl = "/usr/bin/varlinkctl"
	DefaultIP         = "/usr/bin/ip"
	DefaultVMSpawn    = "/usr/bin/systemd-vmspawn"
)

// MaxNetworkIndex is the largest network index whose bridge name br-tenant-N fits the kernel's 15-byte limit.
const MaxNetworkIndex = 99999

// maxMachineName is systemd's limit for machine names (hostname_is_valid: HOST_NAME_MAX).
const maxMachineName = 64

// Config says where the rendered units find things on the host. The zero value of a field means its default.
type Config struct {
	// StateDir is the daemon's state directory; a tenant's pinned trees live in StateDir/tenants/<name>
	// (see Paths). Default /var/lib/bitbuilder.
	StateDir string `json:"stateDir,omitempty"`
	// LibexecDir holds BitBuilder's private files (the package ships an empty directory "empty" there, once the
	// bottom layer of the boot-time confext overlays, which no unit mounts any more). Default /usr/lib/bitbuilder.
	LibexecDir string `json:"libexecDir,omitempty"`
	// Socket is the daemon's Varlink socket. Default /run/bitbuilder/io.bitbuilder.
	Socket string `json:"socket,omitempty"`
	// SocketUnit is the unit that listens on Socket and activates the daemon. Default bitbuilderd.socket.
	SocketUnit string `json:"socketUnit,omitempty"`
	// Varlinkctl, IP and VMSpawn are the absolute paths of varlinkctl(1), ip(8) and systemd-vmspawn(1).
	Varlinkctl string `json:"varlinkctl,omitempty"`
	IP         string `json:"ip,omitempty"`
	VMSpawn    string `json:"vmspawn,omitempty"`
	// VMSpawnArgs are appended to every infrastructure VM's and VM's systemd-vmspawn command line, for example
	// --kvm=no on a host without usable KVM.
	VMSpawnArgs []string `json:"vmspawnArgs,omitempty"`
	// Nspawn is the absolute path of systemd-nspawn(1). Default /usr/bin/systemd-nspawn.
	Nspawn string `json:"nspawn,omitempty"`
	// VMUnitProperties are extra [Service] settings (NAME=VALUE) of every VM's unit and the infrastructure VM's,
	// for example TemporaryFileSystem=/run/systemd/machine:ro where a newer systemd-vmspawn meets an older
	// systemd-machined that refuses its Varlink registration (vmspawn then registers over D-Bus).
	VMUnitProperties []string `json:"vmUnitProperties,omitempty"`
}

// withDefaults returns c with every empty field set to its default, or an error naming the first bad field.
func (c Config) withDefaults() (Config, error) {
	fields := []struct {
		name string
		v    *string
		def  string
	}{
		{"StateDir", &c.StateDir, DefaultStateDir},
		{"LibexecDir", &c.LibexecDir, DefaultLibexecDir},
		{"Socket", &c.Socket, DefaultSocket},
		{"Varlinkctl", &c.Varlinkctl, DefaultVarlinkctl},
		{"IP", &c.IP, DefaultIP},
		{"VMSpawn", &c.VMSpawn, DefaultVMSpawn},
		{"Nspawn", &c.Nspawn, DefaultNspawn},
	}
	for _, f := range fields {
		if *f.v == "" {
			*f.v = f.def
		}
		if err := checkConfigPath(*f.v); err != nil {
			return c, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, f.name, err)
		}
	}
	if c.SocketUnit == "" {
		c.SocketUnit = DefaultSocketUnit
	}
	if !strings.HasSuffix(c.SocketUnit, ".socket") || !plainWord(c.SocketUnit) || strings.Contains(c.SocketUnit, "/") {
		return c, fmt.Errorf("%w: SocketUnit %q is not a .socket unit name", ErrInvalidConfig, c.SocketUnit)
	}
	for _, a := range c.VMSpawnArgs {
		if strings.ContainsAny(a, "\n\r\x00") {
			return c, fmt.Errorf("%w: VMSpawnArgs: %q contains a line break or NUL", ErrInvalidConfig, a)
		}
	}
	for _, p := range c.VMUnitProperties {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" || !plainWord(k) || strings.ContainsAny(p, "\n\r\x00") || strings.HasSuffix(v, `\`) {
			return c, fmt.Errorf("%w: VMUnitProperties: %q is not NAME=VALUE on one line", ErrInvalidConfig, p)
		}
	}
	return c, nil
}

// checkConfigPath accepts absolute, clean paths of characters that need no quoting anywhere in a unit file or
// overlayfs option string (no ":", ",", "%", "$", "\", quotes or white space).
func checkConfigPath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("%q is not an absolute, clean path", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./+-@", c) >= 0) {
			return fmt.Errorf("%q has the character %q", p, c)
		}
	}
	return nil
}

// Tenant is what Render needs to know about a tenant.
type Tenant struct {
	// Name is the tenant's name, a hostname label.
	Name string
	// NetworkIndex is the tenant's network index N (bridge br-tenant-N), 1..MaxNetworkIndex.
	NetworkIndex int
	// Infra says whether the tenant has an infrastructure VM (tenant-infra@.service).
	Infra bool
	// Sysext and Confext name the tenant's extension trees, directories under Paths.SysextDir and
	// Paths.ConfextDir. They are stacked in this order, the last one on top.
	Sysext  []string
	Confext []string
	// Machines are the tenant's containers and VMs, each run by its own unit in the tenant's slice.
	Machines []Machine
	// CPUs, MemoryBytes and TasksMax limit the tenant's slice (0: no limit; TasksMax 0: DefaultTenantTasksMax).
	CPUs        float64
	MemoryBytes int64
	TasksMax    int
}

// Unit is one rendered unit file.
type Unit struct {
	// Name is the unit's file name, for example tenant@acme.service.
	Name string
	// Content is the whole file.
	Content []byte
}

// Paths is the layout of one tenant's directory under the state directory. The daemon materializes the pinned
// template trees at these places; the rendered units use them.
type Paths struct {
	// Dir is StateDir/tenants/<name>.
	Dir string
	// InfraRoot is the infrastructure VM's root file system: Dir/infra/rootfs.
	InfraRoot string
	// SysextDir and ConfextDir hold the tenant's checkouts of its extension templates, one directory per
	// template: Dir/extensions/{sysext,confext}/<template>. No machine sees them: each machine gets the ones
	// compatible with it in its own directories (MachinePaths.Sysext, MachinePaths.Confext).
	SysextDir  string
	ConfextDir string
	// InfraSysext and InfraConfext are the infrastructure VM's extension directories, bound read-only to its
	// /run/extensions and /run/confexts: Dir/infra-extensions/{sysext,confext} (not below Dir/infra, the
	// template's checkout, which a new pin replaces).
	InfraSysext  string
	InfraConfext string
}

// TenantPaths returns the layout of tenant name's directory. It does not check the name.
func (c Config) TenantPaths(name string) Paths {
	sd := c.StateDir
	if sd == "" {
		sd = DefaultStateDir
	}
	dir := sd + "/tenants/" + name
	return Paths{
		Dir:          dir,
		InfraRoot:    dir + "/infra/rootfs",
		SysextDir:    dir + "/extensions/sysext",
		ConfextDir:   dir + "/extensions/confext",
		InfraSysext:  dir + "/infra-extensions/sysext",
		InfraConfext: dir + "/infra-extensions/confext",
	}
}

// NamespaceName is the network namespace of tenant name (/run/netns/tenant-<name>).
func NamespaceName(name string) string { return "tenant-" + name }

// BridgeName is the bridge of the tenant with network index n.
func BridgeName(n int) string { return "br-tenant-" + strconv.Itoa(n) }

// InfraMachineName is the machine name of a tenant's infrastructure VM: <tenant>-infra, like every machine of a
// tenant (<tenant>-<name>).
func InfraMachineName(name string) string { return name + "-infra" }

// TenantUnit is the name of tenant name's main unit, tenant@<escaped name>.service.
func TenantUnit(name string) string { return "tenant@" + Escape(name) + ".service" }

// CheckName returns an error wrapping ErrInvalidName and the *names.LabelError unless name is a hostname label
// (names.CheckLabel).
func CheckName(name string) error {
	if err := names.CheckLabel(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	return nil
}

func checkExtensions(kind string, names []string) error {
	for i, n := range names {
		if n == "" || n[0] == '.' || len(n) > 255 {
			return fmt.Errorf("%w: %s %q must be 1 to 255 characters and not start with \".\"", ErrInvalidExtension, kind, n)
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
				return fmt.Errorf("%w: %s %q has the character %q (allowed: A-Z, a-z, 0-9, _, ., -)", ErrInvalidExtension, kind, n, c)
			}
		}
		// A tenant has a handful of extensions: a quadratic scan beats a map here.
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("%w: %s %q is listed twice", ErrInvalidExtension, kind, n)
		}
	}
	return nil
}

// Check returns an error if Render would refuse t with any Config; Render may still refuse a tenant whose unit
// names grow too long under a long Config.StateDir (ErrNameTooLong).
func (t Tenant) Check() error {
	if err := CheckName(t.Name); err != nil {
		return err
	}
	if t.NetworkIndex < 1 || t.NetworkIndex > MaxNetworkIndex {
		return fmt.Errorf("%w: tenant %q: %d is not in 1..%d", ErrInvalidIndex, t.Name, t.NetworkIndex, MaxNetworkIndex)
	}
	if t.Infra && len(InfraMachineName(t.Name)) > maxMachineName {
		return fmt.Errorf("%w: tenant %q: machine name %q is longer than %d characters", ErrNameTooLong, t.Name, InfraMachineName(t.Name), maxMachineName)
	}
	if err := checkExtensions("sysext", t.Sysext); err != nil {
		return fmt.Errorf("tenant %q: %w", t.Name, err)
	}
	if err := checkExtensions("confext", t.Confext); err != nil {
		return fmt.Errorf("tenant %q: %w", t.Name, err)
	}
	return checkMachines(t)
}

// Render returns the units of tenant t, in a fixed order: tenant@, netns-tenant@, tenant-network@, then
// tenant-infra@ if t.Infra, then the tenant's slice and machine units if it has machines. It is the one
// rendering code path of BitBuilder: the boot generator writes its result into the generator directory, and
// the daemon may write the same units into /run/systemd/system. Bad input returns an error and no units.
func Render(t Tenant, cfg Config) ([]Unit, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return render(t, cfg)
}

// render is Render with cfg already completed by withDefaults (Generate does that once for all tenants).
func render(t Tenant, cfg Config) ([]Unit, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	r := renderer{t: t, cfg: cfg, p: cfg.TenantPaths(t.Name)}
	r.b.Grow(2048)
	return r.render()
}

type renderer struct {
	t   Tenant
	cfg Config
	p   Paths
	b   bytes.Buffer
	// inSection is set once the current unit has a section, so the next one is preceded by a blank line.
	inSection bool
}

func (r *renderer) render() ([]Unit, error) {
	t := r.t
	names := unitNames{}
	instance := "@" + Escape(t.Name) + ".service"
	// tenant-network@ is the longest of the four template names.
	if n := len("tenant-network") + len(instance); n > unitNameMax {
		return nil, fmt.Errorf("%w: unit tenant-network%s is %d bytes long (systemd allows %d)", ErrNameTooLong, instance, n, unitNameMax)
	}
	names.tenant = "tenant" + instance
	names.netns = "netns-tenant" + instance
	names.network = "tenant-network" + instance
	names.infra = "tenant-infra" + instance
	names.slice = TenantSlice(t.Name)
	for _, m := range t.Machines {
		if n := MachineUnit(t.Name, m.Name); len(n) > unitNameMax {
			return nil, fmt.Errorf("%w: unit %s is %d bytes long (systemd allows %d)", ErrNameTooLong, n, len(n), unitNameMax)
		}
	}
	units := make([]Unit, 0, 6)
	add := func(name string) { units = append(units, Unit{Name: name, Content: r.take()}) }

	// tenant@: the tenant's anchor. It pulls in everything else and asks the daemon to converge the tenant.
	r.header()
	r.section("Unit")
	r.kv("Description", "BitBuilder tenant ", t.Name)
	r.kv("Wants", "network-online.target")
	r.kv("After", "network-online.target")
	r.kv("Wants", r.cfg.SocketUnit)
	r.kv("After", r.cfg.SocketUnit)
	r.kv("Requires", names.netns, " ", names.network)
	r.kv("After", names.netns, " ", names.network)
	if t.Infra {
		r.kv("Wants", names.infra)
	}
	r.section("Service")
	r.kv("Type", "oneshot")
	r.kv("RemainAfterExit", "yes")
	r.exec("ExecStart", r.cfg.Varlinkctl, "call", r.cfg.Socket, "io.bitbuilder.Tenant.Start", `{"name":`+strconv.Quote(t.Name)+`}`)
	r.kv("Restart", "on-failure")
	r.kv("RestartSec", "10")
	add(names.tenant)

	// netns-tenant@: the tenant's network namespace.
	ns := NamespaceName(t.Name)
	r.header()
	r.section("Unit")
	r.kv("Description", "Network namespace of BitBuilder tenant ", t.Name)
	r.kv("After", "network.target")
	r.kv("Before", names.tenant)
	r.section("Service")
	r.kv("Type", "oneshot")
	r.kv("RemainAfterExit", "yes")
	// The daemon makes the namespace too (netns package, same name): "-" lets this unit adopt one that exists, and
	// the next command, which needs the namespace, fails if it really is missing.
	r.execPrefixed("ExecStart", "-", r.cfg.IP, "netns", "add", ns)
	r.exec("ExecStart", r.cfg.IP, "-n", ns, "link", "set", "lo", "up")
	r.exec("ExecStop", r.cfg.IP, "netns", "delete", ns)
	add(names.netns)

	// tenant-network@: the tenant's bridge and links, made by the daemon (Network.Apply).
	r.header()
	r.section("Unit")
	r.kv("Description", "Network of BitBuilder tenant ", t.Name)
	r.kv("Requires", names.netns)
	r.kv("After", names.netns, " systemd-networkd.service")
	r.kv("Wants", r.cfg.SocketUnit)
	r.kv("After", r.cfg.SocketUnit)
	r.kv("Before", names.tenant)
	r.section("Service")
	r.kv("Type", "oneshot")
	r.kv("RemainAfterExit", "yes")
	r.exec("ExecStart", r.cfg.Varlinkctl, "call", r.cfg.Socket, "io.bitbuilder.Network.Apply", `{"tenant":`+strconv.Quote(t.Name)+`}`)
	add(names.network)

	if t.Infra {
		argv := []string{
			r.cfg.VMSpawn,
			"--machine=" + InfraMachineName(t.Name),
			"--directory=" + r.p.InfraRoot,
			"--network-tap",
			"--set-credential=bitbuilder.tenant:" + t.Name,
		}
		mountsFor := r.p.InfraRoot
		if len(t.Sysext) > 0 {
			argv = append(argv, "--bind-ro="+r.p.InfraSysext+":/run/extensions")
		}
		if len(t.Confext) > 0 {
			argv = append(argv, "--bind-ro="+r.p.InfraConfext+":/run/confexts")
		}
		argv = append(argv, r.cfg.VMSpawnArgs...)
		r.header()
		r.section("Unit")
		r.kv("Description", "Infrastructure VM of BitBuilder tenant ", t.Name)
		r.kv("BindsTo", names.tenant)
		r.kv("After", names.tenant, " ", names.network)
		r.kv("RequiresMountsFor", mountsFor)
		r.section("Service")
		r.kv("Type", "notify")
		// vmspawn reports READY=1 when the guest's systemd does (over vsock), which takes minutes under TCG.
		r.kv("TimeoutStartSec", "10min")
		r.exec("ExecStart", argv...)
		r.vmProperties()
		r.kv("KillMode", "mixed")
		r.kv("Restart", "always")
		r.kv("RestartSec", "10")
		add(names.infra)
	}

	if len(t.Machines) > 0 {
		r.renderSlice(names.tenant)
		add(names.slice)
		for _, m := range t.Machines {
			r.renderMachine(m, names)
			add(MachineUnit(t.Name, m.Name))
		}
	}
	return units, nil
}

func (r *renderer) header() {
	r.inSection = false
	r.b.WriteString("# Rendered by BitBuilder (package units). Do not edit: the boot generator and the daemon rewrite it.\n")
}

func (r *renderer) section(s string) {
	if r.inSection {
		r.b.WriteByte('\n')
	}
	r.inSection = true
	r.b.WriteString("[" + s + "]\n")
}

// kv writes one setting. Values come from checked names and paths (no "%", no line breaks, no trailing "\"),
// or from execLine, which quotes.
func (r *renderer) kv(k string, v ...string) {
	r.b.WriteString(k)
	r.b.WriteByte('=')
	for _, part := range v {
		r.b.WriteString(part)
	}
	r.b.WriteByte('\n')
}

// exec writes an Exec*= setting with argv quoted.
func (r *renderer) exec(k string, argv ...string) { r.execPrefixed(k, "", argv...) }

// execPrefixed writes an Exec*= setting with one of systemd's executable prefixes ("-" ignores a failure).
func (r *renderer) execPrefixed(k, prefix string, argv ...string) {
	r.b.WriteString(k)
	r.b.WriteByte('=')
	r.b.WriteString(prefix)
	writeExec(&r.b, argv...)
	r.b.WriteByte('\n')
}

func (r *renderer) take() []byte {
	out := bytes.Clone(r.b.Bytes())
	r.b.Reset()
	return out
}
