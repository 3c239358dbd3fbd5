// Package units renders BitBuilder's systemd units and defines the boot registry.
//
// # Rendering
//
// Render(Tenant, Config) is the one code path that turns a tenant into unit files. The boot generator
// (cmd/bitbuilder-generator) writes its output into systemd's generator directory (Generate); the daemon's
// reconciler writes the same units into /run/systemd/system (which systemd prefers over the generator directory)
// with ReplaceUnit, which reports whether anything changed so a daemon-reload happens only then. A tenant created
// at run time and one brought back at boot thus get byte-identical units.
//
// All units are generated in full, per tenant; the package ships no tenant@.service style templates. The names
// keep the seed's template@instance form (tenant@<name>.service with the name escaped as by systemd-escape), so
// `systemctl status 'tenant@*'` works, but a template file would have to carry the per-tenant differences
// (infrastructure VM or not, which extensions, network index) as drop-ins, and .mount units cannot be templates
// at all; generating everything keeps one place that decides every line and lets every path be computed, checked
// and quoted in Go instead of relying on %i/%I specifier expansion in paths.
//
// Per tenant T (escaped E = Escape(T), tenant directory D = StateDir/tenants/T, see Paths):
//
//	tenant@E.service          oneshot, RemainAfterExit; Requires+After netns-tenant@E, tenant-network@E and the
//	                          mounts; Wants tenant-infra@E; asks the daemon to converge the tenant
//	                          (varlinkctl call ... io.bitbuilder.Tenant.Start), socket-activating it if needed
//	netns-tenant@E.service    oneshot: ip netns add tenant-T, lo up; ExecStop deletes the namespace
//	tenant-network@E.service  oneshot: io.bitbuilder.Network.Apply for T; Requires netns-tenant@E
//	tenant-infra@E.service    Type=notify systemd-vmspawn of D/infra/rootfs as machine T-infra; BindsTo tenant@E;
//	                          Restart=always (only when the tenant has an infrastructure VM)
//	bitbuilder-E.slice        the slice of T's machines, with T's limits (only with machines)
//	tenant-machine@<E-m>.service  one per machine m: systemd-nspawn or systemd-vmspawn of its own root
//
// No unit mounts extensions: each machine gets the tenant's extensions compatible with it in its own directories,
// bound read-only to its /run/extensions and /run/confexts, and its own systemd-sysext/confext merges them
// (ARCHITECTURE.md, "Extensions").
//
// The generator also links multi-user.target.wants/tenant@E.service for tenants whose desired state is running.
//
// # Changes from the seed generators, and why
//
//   - No [Install] sections; the generator writes the wants link itself. Units in a generator directory cannot be
//     enabled, so the seed's WantedBy=multi-user.target, RequiredBy=tenant@ and WantedBy=tenant@ never took
//     effect and no tenant came back at boot. Their intent is kept as Unit-section dependencies: tenant@ Requires=
//     tenant-network@ and the mounts (seed: RequiredBy=tenant@), Wants= tenant-infra@ (seed: WantedBy=tenant@).
//   - tenant@ is Type=oneshot with RemainAfterExit=yes, not Type=notify: in this design no per-tenant manager
//     process runs on the host (the seed's tenant-provision/tenant-manager/tenant-cleanup do not exist); the
//     daemon converges tenants. Restart=on-failure and RestartSec=10 are kept (they retry the call while the
//     daemon is not ready yet). It has no ExecStop: stopping the unit at shutdown must not change the tenant's
//     recorded desired state, which Tenant.Stop would.
//   - tenant-network@ calls the daemon (Network.Apply) instead of the non-existent setup-tenant-network, and has no
//     ExecStop: networkd's files persist and teardown belongs to tenant deletion, not shutdown.
//   - netns-tenant@ is the seed's netns-tenant@.service, generated, with the namespace named by the unescaped
//     tenant name (tenant-T, as DESIGN.md and package netns say; %i would have given tenant-acme\x2dprod), "ip -n
//     NS" instead of "ip netns exec NS ip" (no PATH lookup, no extra mounts), ordered before tenant@ and pulled in
//     by it rather than by multi-user.target. The seed's `ip netns add` failed when the namespace existed, and the
//     daemon makes the same namespace (a race at boot, when bitbuilderd starts in parallel): it now runs with "-"
//     so an existing namespace is adopted, and the following `ip -n NS link set lo up` fails if it is really
//     missing.
//   - tenant-infra@: the seed's flags do not exist in systemd-vmspawn: --network-bridge= is an nspawn option
//     (vmspawn has --network-tap; the daemon's networkd files put the vt-* tap on br-tenant-N) and --setenv= is
//     replaced by --set-credential=bitbuilder.tenant:T. The seed bound the host-wide /usr/lib/extensions into
//     every tenant's VM; now only the tenant's own extension trees are bound, read-only, to /run/extensions and
//     /run/confexts (the infrastructure VM's own directories, D/infra-extensions/{sysext,confext}, holding the
//     extensions compatible with its os-release), where the guest's systemd-sysext/confext merge them. The rootfs path is the tenant's pinned tree under the daemon's state directory
//     (/var/lib/tenants/ in the seed was no directory of ours), with RequiresMountsFor= since /var may be a
//     separate mount. The machine is named T-infra (DESIGN.md: machines are <tenant>-<name>), which limits
//     tenants with an infrastructure VM to 58-character names (machine names are at most 64). Restart=always is
//     kept, with RestartSec=10 so a VM that fails at once does not hit the start rate limit within a second.
//     KillMode=mixed as in systemd-nspawn@.service, so vmspawn can shut the guest down. Type=notify is kept: vmspawn
//     passes the guest's READY=1 on (over AF_VSOCK), so the unit is active when the infrastructure VM has booted;
//     TimeoutStartSec=10min because that takes 90-130 s under TCG (testenv.md), more than the default 90 s. A host
//     without /dev/vhost-vsock never gets READY=1: give vmspawn --notify-ready=no there (Config.VMSpawnArgs).
//   - The seed's overlay mounts are gone (the daemon hands extensions to the machines instead). They were wrong in
//     four ways, fixed first, before they were dropped. (1) lowerdir=/usr:EXT put the host's /usr on top (the leftmost
//     lowerdir is the top layer), so an extension could not override anything; the extensions are now on top.
//     (2) EXT was the directory holding the extension trees, whose usr/ would have appeared as /usr/usr; each
//     extension's usr/ (sysext) or etc/ (confext) is now its own layer. (3) The upperdir was the mount point
//     itself and was writable: a tenant writing to its view made copy-ups of host files that then shadowed the
//     host's later updates, inside the tenant's tree. The overlays are now read-only, like systemd-sysext's own
//     merge (ro,nodev; confexts also nosuid,noexec as systemd-confext mounts them), with no upper or work dir.
//     (4) The confext overlay exposed the host's /etc (shadow, SSH host keys, machine-id, credentials) to the
//     tenant; its bottom layer is now an empty directory shipped by the package (LibexecDir/empty), because a
//     read-only overlay needs at least two layers. Host /usr stays the sysext base: it is the distribution's
//     public content, read-only. Mount points are D/merged/{usr,etc}; names are the systemd-escaped Where= paths.
//   - Every name derived from a tenant is escaped (Escape, EscapePath: systemd-escape and systemd-escape --path,
//     tested against the real binary), every Exec argument is quoted per systemd.service(5) (quoteArg), and names
//     are checked first: a tenant name must be a hostname label, so "../x" or "a/b" never reach a file name.
//     Unit names longer than systemd allows (mount names for very long tenant names) are refused, not hashed.
//
// # Boot registry
//
// The generator never reads the daemon's database: systemd runs generators before /var is mounted and forbids
// them to talk to other processes. The daemon therefore keeps a small JSON file, the Registry, at
// DefaultRegistryPath (/etc/bitbuilder/boot-registry.json). /etc is on the root file system, which is mounted
// when generators run; /var/lib is not (it may be a separate mount), /run does not survive a reboot and /usr is
// the vendor's. Like /etc/machine-id and the enablement symlinks in /etc/systemd/system, the registry is host-local
// state that boot needs. WriteRegistry replaces it atomically (temporary file, fsync, rename, fsync of the
// directory) and refuses invalid input; ReadRegistry tolerates bad entries (each is skipped with a reason) and
// fails with a specific error on a missing, empty, truncated, non-JSON or newer-version file.
//
// Format, version 1:
//
//	{"version": 1, "tenants": [
//	  {"name": "acme", "networkIndex": 7, "infra": true, "sysext": ["tools"], "confext": ["net"], "running": true}
//	]}
package units
