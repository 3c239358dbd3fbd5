package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	sdbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/bitbuilder/bitbuilder/examples/templates"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/netconf"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// HostConfig says where the daemon changes the host. Zero fields take the defaults of
// a systemd host.
type HostConfig struct {
	// NetworkDir receives rendered networkd files (default /run/systemd/network).
	NetworkDir string
	// UnitDir receives tenants' units (default /run/systemd/system).
	UnitDir string
	// BootRegistry is the file the boot generator reads (default
	// /etc/bitbuilder/boot-registry.json).
	BootRegistry string
	// Units configures unit rendering (state dir, libexec dir, tool paths).
	Units units.Config
	// BasePrefix is where tenant networks are cut from (default 10.0.0.0/8): tenant N owns
	// the /16 at BasePrefix + N<<16.
	BasePrefix netip.Prefix
	// ArtifactSources are the host files templates may ask for (set from Config.ArtifactSources).
	ArtifactSources []string
	// Netns overrides the network manager's configuration (tests use their own prefixes).
	Netns netns.Config
	// NetnsViaSystemd makes named network namespaces through transient units of the service manager, in the
	// host's mount namespace (netns.SystemdRun), for a daemon whose unit gives it a mount namespace of its own.
	NetnsViaSystemd bool
}

// setDefaults fills in the zero fields.
func (hc *HostConfig) setDefaults(stateDir string) {
	if hc.NetworkDir == "" {
		hc.NetworkDir = "/run/systemd/network"
	}
	if hc.UnitDir == "" {
		hc.UnitDir = "/run/systemd/system"
	}
	if hc.BootRegistry == "" {
		hc.BootRegistry = units.DefaultRegistryPath
	}
	if hc.Units.StateDir == "" {
		hc.Units.StateDir = stateDir
	}
}

// logHostChanges says, once at start, what the daemon will make on the host and how to remove it.
func logHostChanges(log *slog.Logger, hc HostConfig, stateDir string) {
	hc.setDefaults(stateDir)
	log.Warn("this daemon changes the host: for each tenant it creates a network namespace, bridge, veth and tunnel links, networkd files, units and machines; bitbuilderd --cleanup removes them all, --no-host keeps records only",
		"namespaces", "tenant-<name>",
		"links", "br-tenant-N, vh-tenant-N, vx-tenant-N, wg-tenant-N, vlan-tenant-N, vt-<machine> (alias "+netns.Mark("<tenant>")+")",
		"networkFiles", filepath.Join(hc.NetworkDir, "50-bitbuilder-N-*, 10-bitbuilder-tap-*.network"),
		"units", filepath.Join(hc.UnitDir, "tenant*@*, bitbuilder-*.slice (listed in .bitbuilder/<tenant>.units)"),
		"bootRegistry", hc.BootRegistry,
		"trees", filepath.Join(stateDir, "tenants")+", "+filepath.Join(stateDir, "trees"))
}

// setUpHost builds the reconciler's host steps, in set-up order: template trees, network,
// units; and the boot registry observer.
func setUpHost(hc HostConfig, stateDir string, indexMin, indexMax int, reg *template.Registry, log *slog.Logger) (*hostNetwork, []reconcile.Step, reconcile.Observer, error) {
	hc.setDefaults(stateDir)
	tenantsDir := filepath.Join(stateDir, "tenants")
	if err := os.MkdirAll(tenantsDir, 0o755); err != nil {
		return nil, nil, nil, err
	}
	ncfg := networkConfig(&hc)
	ncfg.MinIndex, ncfg.MaxIndex = indexMin, indexMax
	if hc.NetnsViaSystemd && ncfg.NamespaceHelper == nil {
		ncfg.NamespaceHelper = netns.SystemdRun()
	}
	if ncfg.Logger == nil {
		ncfg.Logger = log.With("component", "netns")
	}
	// networkd gives the bridge its address and runs the DHCP server on it.
	ncfg.AddressMode = netns.AddressByNetworkd
	links, err := netns.New(ncfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("network: %w", err)
	}
	files, err := netconf.New(netconf.Config{
		Dir: hc.NetworkDir, TenantsDir: tenantsDir, MinIndex: indexMin, MaxIndex: indexMax,
		Addresses: func(index int) netconf.Addresses {
			p := links.Prefixes(index)
			return netconf.Addresses{Gateway: p.Gateway, Bridge: p.Bridge, WireGuard: p.WireGuard}
		},
		Logger: log.With("component", "netconf"),
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("network files: %w", err)
	}
	defaultTemplate, err := netconf.Load(templates.Network())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("built-in network template: %w", err)
	}
	// A tenant's network template is the one it names (checked out by the templates
	// step), or the built-in one.
	networkTemplate := func(t *tenant.Tenant) (*netconf.Template, error) {
		for _, u := range t.Templates {
			if u.Role == "network" {
				return netconf.LoadDir(reconcile.TemplateDir(tenantsDir, t.Name, u))
			}
		}
		return defaultTemplate, nil
	}
	hn := &hostNetwork{links: links, files: files, template: networkTemplate, machines: machines.New(log.With("component", "machines"))}
	steps := []reconcile.Step{
		&reconcile.TemplatesStep{Registry: reg, TenantsDir: tenantsDir, ArtifactSources: hc.ArtifactSources},
		&reconcile.NetworkStep{Links: links, Files: files, Template: networkTemplate},
		&reconcile.UnitsStep{Dir: hc.UnitDir, Config: hc.Units, TenantsDir: tenantsDir, Reload: reloadSystemd,
			Stop: func(ctx context.Context, unit string) error { return hn.machines.Stop(ctx, unit, true) }},
		&reconcile.MachinesStep{
			Host: hn.machines, Units: hc.Units, TenantsDir: tenantsDir, UnitDir: hc.UnitDir, Reload: reloadSystemd,
			NetworkDir: hc.NetworkDir, NetworkReload: netconf.NetworkdBus{}.Reload, VMAddresses: vmAddresses,
			Log: log.With("component", "machines"),
		},
		&reconcile.UsersStep{Host: hn.machines, Units: hc.Units, TenantsDir: tenantsDir, Log: log.With("component", "users")},
	}
	boot, prune := reconcile.BootRegistry(hc.BootRegistry, hc.Units, tenantsDir), reconcile.PruneSharedTrees(tenantsDir)
	observer := func(ctx context.Context, ts []*tenant.Tenant) error {
		return errors.Join(boot(ctx, ts), prune(ctx, ts))
	}
	return hn, steps, observer, nil
}

// reloadSystemd asks the service manager to reload unit files over D-Bus.
func reloadSystemd(ctx context.Context) error {
	conn, err := sdbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("no system bus: %w", err)
	}
	defer conn.Close()
	return conn.ReloadContext(ctx)
}

// vmAddresses returns the addresses the DHCP server on bridge leased to the MACs the bridge learned behind tap.
func vmAddresses(ctx context.Context, tap, bridge string) ([]string, error) {
	macs, err := machines.TapPeerMACs(tap)
	if err != nil || len(macs) == 0 {
		return nil, err
	}
	leases, err := netconf.NetworkdBus{}.Leases(ctx, bridge)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range leases {
		if slices.Contains(macs, l.HardwareAddr) && l.Address.IsValid() {
			out = append(out, l.Address.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// recordsOnlyStep is the one reconciler step of a records-only daemon (--no-host): it changes
// nothing and says so in each tenant's conditions.
type recordsOnlyStep struct{}

func (recordsOnlyStep) Name() string { return "HostApplied" }

func (recordsOnlyStep) Ensure(context.Context, *tenant.Tenant) ([]tenant.Condition, error) {
	return []tenant.Condition{{Type: "HostApplied", Status: "false", Reason: reconcile.ReasonRecordsOnly,
		Message: "bitbuilderd runs with --no-host: the tenant is recorded, nothing of it is applied to this host"}}, nil
}

func (recordsOnlyStep) Teardown(context.Context, *tenant.Tenant) error { return nil }
