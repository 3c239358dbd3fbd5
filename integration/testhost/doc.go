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
// Once per machine (CI: before `go test`), as root:
//
//	bash integration/testhost/prepare.sh
//
// It installs the host packages (debootstrap, systemd-container, zstd, busybox-static) and builds the rootfs into
// /var/cache/bitbuilder-test/rootfs-<key>/, keyed by a hash of its package list and preparation steps; later runs
// reuse it. Without it, Start skips the test (BITBUILDER_TESTHOST_REQUIRE=1 makes that a failure, for CI;
// BITBUILDER_TESTHOST_BUILD=1 lets Start run prepare.sh itself; the script is embedded in this package).
//
// # Using it
//
//	func TestBridge(t *testing.T) {
//		bin := t.TempDir() // e.g. `go build -o bin/ ./cmd/bitbuilderd ./cmd/bbctl`
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
//		out, err := h.Shell(ctx, "varlinkctl call /run/systemd/machine/io.systemd.Machine io.systemd.Machine.List '{}' --more")
//		...
//	}
//
// Start returns when `systemctl is-system-running` says running or degraded and stops the host in t.Cleanup.
// Run, Shell and Command execute commands inside (nsenter -t LEADER -a, clean environment); ReadFile, WriteFile and
// MkdirAll resolve paths inside the host's root. Processes that must talk to machined's or networkd's Varlink
// sockets must run inside the host: those services drop clients from outside its PID namespace. RunUnit starts a
// long-running process as a transient service (systemd-run --unit=) whose output is in the host's journal
// (JournalTail). For one host shared by all tests of a package, see Shared. Stop (and a failed boot) removes
// everything the host made: processes, mounts, network namespace, cgroups and temporary directory.
//
// # Measured (2 vCPU Debian 12 VM, 2026-11)
//
// Building the rootfs from nothing: 44 s (debootstrap 37 s, tarball included), 179 MB tree, 61 MB .tar.zst.
// Booting a host to `running`: about 1.4 s (overlay mount is instant; unpacking the tarball per host instead
// would add about 2 s). Orderly stop and cleanup: about 1.5 s.
package testhost
