// Package testhost boots real systemd 257 hosts for BitBuilder's integration tests.
//
// A test host is a Debian trixie system (systemd 257, dbus, systemd-machined, systemd-networkd,
// systemd-resolved, systemd-nspawn, systemd-sysext/confext, varlinkctl, machinectl, networkctl, busybox-static)
// booted with systemd-nspawn on the test machine, following the measured recipe of the test environment spec (testenv.md): a private mount
// namespace (unshare -m), its own cgroup2 hierarchy and cgroup nspawn-<name>, its own network namespace
// (--private-network, so networkd runs), and a copy-on-write overlayfs view of a cached rootfs (the upper dir lives
// in a temporary directory), so every host starts from the same clean state and any number can run at once.
//
// # Preparing a machine
//
// As root, before the tests (CI runs both lines; the first is quick once the rootfs is cached):
//
//	bash integration/testhost/prepare.sh
//	BITBUILDER_TESTHOST_REQUIRE=1 go test ./...
//
// prepare.sh installs the host packages (debootstrap, systemd-container, zstd, busybox-static) when missing and
// builds the rootfs into /var/cache/bitbuilder-test/rootfs-<key>/ (plus rootfs-<key>.tar.zst), keyed by a hash of
// its suite, package list and preparation steps; later and concurrent runs reuse it, an interrupted build is
// cleaned up by the next run. CI can cache the tarball under the key `prepare.sh --key` prints: with the tarball in
// place, prepare.sh unpacks it instead of running debootstrap.
//
// The "vm" variant (see below) has its own script, which runs prepare.sh first: `bash
// integration/testhost/prepare-vm.sh` builds vm-rootfs-<key>/ (plus vm-rootfs-<key>.tar.zst, for CI's cache under
// `prepare-vm.sh --key`) and the guest machine-<key>/ in the same cache directory, in the same way, reading the
// Debian mirror from the machine's apt configuration (or BITBUILDER_MIRROR).
//
// Start does not build the rootfs by itself (that takes a minute and the network): without it, Start skips the
// test, saying to run prepare.sh. BITBUILDER_TESTHOST_REQUIRE=1 turns that skip (and the one for not being root)
// into a failure, which CI wants; BITBUILDER_TESTHOST_BUILD=1 lets Start run prepare.sh (embedded in this package)
// itself.
//
// # Using it
//
//	func TestBridge(t *testing.T) {
//		bin := testhost.GoBuild(t, "./cmd/bitbuilderd", "./cmd/bbctl") // static binaries in a temp dir
//		h := testhost.Start(t, testhost.Options{
//			Name:  "bridge",
//			Binds: []testhost.Bind{{Host: bin, Guest: "/opt/bitbuilder/bin", ReadOnly: true}},
//		})
//		ctx := t.Context()
//		if err := h.WriteFile("/run/systemd/network/50-br0.netdev", []byte("[NetDev]\nName=br0\nKind=bridge\n"), 0o644); err != nil {
//			t.Fatal(err)
//		}
//		if _, _, err := h.Run(ctx, "networkctl", "reload"); err != nil {
//			t.Fatal(err) // an *ExitError: exit code and stderr
//		}
//		// A daemon in the background, as a transient unit inside the host:
//		if err := h.RunUnit(ctx, "bitbuilderd", "/opt/bitbuilder/bin/bitbuilderd"); err != nil {
//			t.Fatal(err)
//		}
//		out, err := h.Shell(ctx, "varlinkctl call /run/bitbuilder/io.bitbuilder io.bitbuilder.Tenant.List '{}' --more")
//		...
//	}
//
// Start returns when `systemctl is-system-running` says running or degraded and stops the host in t.Cleanup.
// Run, RunInput, Shell and Command execute commands inside (nsenter -t LEADER -a, clean environment, killed with
// their context); ReadFile, WriteFile and MkdirAll resolve paths inside the host's root (openat2 RESOLVE_IN_ROOT
// on /proc/LEADER/root, so symlinks cannot escape). RunUnit starts a long-running process as a transient service
// (systemd-run --unit=NAME --collect --service-type=exec); StopUnit stops it; its output is in the host's journal
// (JournalTail(ctx, n, "-u", NAME)). ConsoleTail shows the console. Reboot shuts the host down and boots it again
// on the same root (files survive, /run does not, enabled units start at boot): the way to test what comes back
// after a reboot, such as generators and tenants. For one host shared by all tests of a package, see Shared. Stop (and a failed boot) removes everything the host made: processes, mounts, network
// namespace, cgroups and temporary directory; if the test process dies without Stop, systemd-nspawn gets SIGTERM
// (parent-death signal) and halts the container, and the next New sweeps the cgroup and directory left behind.
//
// Things worth knowing about the host:
//   - Processes that talk to machined's or networkd's Varlink sockets must run inside the host: those services
//     drop clients from outside its PID namespace. Bind the binaries in and run them with Run or RunUnit.
//   - systemd-machined is started on demand (D-Bus activation, or by the first machine), so
//     /run/systemd/machine/io.systemd.Machine does not exist in a fresh host until something starts it
//     (`systemctl start systemd-machined`, or After=/Wants=systemd-machined.service in a daemon's unit).
//   - The host has its own network namespace with only lo (networkd manages what you add); no outside network.
//   - Each host starts from the same clean rootfs; its hostname is its Name(). Writes never reach the cache.
//
// # Booting VMs: the "vm" variant
//
// Options{Variant: VariantVM} boots the host on the tree prepare-vm.sh builds (as root; scripts/install-test-deps.sh
// runs it, and BITBUILDER_TESTHOST_BUILD=1 lets Start do it): prepare.sh's tree plus qemu-system-x86, virtiofsd and
// seabios from trixie, systemd-vmspawn 262 from Debian sid (trixie has none) as /usr/local/bin/systemd-vmspawn (a
// wrapper giving it its own libsystemd-shared from /opt/sd-vmspawn), and a small guest at VMGuestDir laid out as a
// machine template. Without that tree Start skips or fails exactly as for the default one. These machines have no
// usable KVM and no /dev/vhost-vsock, so VMs run under QEMU's software emulation (TCG). TestVMSpawnBoots boots the
// guest with the command line of vmSpawnArgs and shows what it takes:
//   - vmspawn runs as a unit (systemd-run) with --kvm=no --tpm=no --firmware=bios --secure-boot=no
//     --pass-ssh-key=no, --linux= and --initrd= (direct kernel boot) and --directory= (the root over virtiofs).
//   - --notify-ready=no: without vsock the guest cannot send READY=1, and vmspawn's default makes a Type=notify
//     unit wait for it until its start timeout. With --notify-ready=no, Type=notify is ready as soon as QEMU runs.
//   - TemporaryFileSystem=/run/systemd/machine:ro on the unit: vmspawn 262 registers through machined's Varlink
//     socket first, machined 257 refuses the call (org.varlink.service.InvalidParameter for "controlAddress"), and
//     vmspawn then runs unregistered ("Failed to register machine in system context, ignoring: Invalid
//     argument"). With the socket hidden it falls back to D-Bus (RegisterMachineWithNetwork), which 257 accepts.
//   - --network-tap makes a tap named vt-MACHINE. networkd's stock 80-vm-vt.network claims vt-* (an address, a
//     DHCP server and masquerading of its own); a .network file that sorts before it, matching the tap by name
//     with [Network] Bridge=BRIDGE, puts it on a bridge instead.
//   - networkd 257 keeps its DHCP server's leases in /var/lib/systemd/network/dhcp-server-lease/BRIDGE, even
//     across deleting and re-creating the bridge.
//   - The guest (Debian trixie minbase, systemd-networkd with DHCP on en*/eth*) boots Debian's kernel, which has
//     virtio-pci, FUSE and virtiofs built in, with a 1 MB busybox initrd that mounts the virtiofs root and
//     switches to it (Debian's initramfs-tools initrd cannot mount a virtiofs root; dracut's can but is much
//     larger). Most units, all generators and most udev rules are masked: under TCG every process costs a second.
//
// # Measured (2 vCPU Debian 12 VM shared with other test runs, 2026-11)
//
//   - Building the rootfs from nothing with prepare.sh: 44 s and 107 s on two runs (network bound; debootstrap is
//     most of it), giving a 179 MB tree and a 61 MB .tar.zst. A re-run finds it cached and returns at once; with
//     only the tarball present (a CI cache) it unpacks in 0.5 s (warm) to 7 s (busy disk).
//   - BenchmarkStartStop: boot to `running` 1.4 s (load average 4; 2-3 s at load average 12), Stop with
//     cleanup 0.2-0.5 s; Reboot 1.5 s. A booted host has 9 processes, about 70 MB RSS and an 8 MB upper dir.
//     BenchmarkRun: a command inside costs about 3 ms (nsenter and exec); BenchmarkWriteFile: 35 µs for 4 KiB.
//   - The per-host root is an overlayfs mount: nothing is copied, and only the upper dir is removed at Stop.
//     Unpacking the tarball per host instead would cost 0.5 s or more plus the removal of 179 MB.
//   - This package's own tests: about 35 s on a quiet machine, 70 s at load average 13.
//   - The "vm" variant (2026-12), from an empty cache through BITBUILDER_TESTHOST_BUILD=1: about 3 min (prepare.sh
//     50 s, the guest's debootstrap and trimming 65-100 s, the vm tree and its tarball 30-85 s), giving a 461 MB
//     tree (158 MB of it the guest, whose files machine-<key>/ shares as hard links), a 165 MB .tar.zst;
//     from the two tarballs alone, 3.6 s. A vm host boots like any other (1.4-1.8 s).
//   - TestVMSpawnBoots: vmspawn is READY and machined lists the VM within 0.2-0.4 s; the guest's DHCP lease
//     comes 40-45 s after systemd-run at load average 3-4 (100 s at load average 10); stopping the unit removes
//     the machine and the tap in 0.15-0.2 s.
package testhost
