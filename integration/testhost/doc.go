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
package testhost
