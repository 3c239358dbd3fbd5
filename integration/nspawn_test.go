package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/template/validate"
)

// The bridge the test containers join: networkd creates it, addresses it and serves DHCP on it.
const (
	nspawnBridge  = "br-test"
	nspawnGateway = "10.78.0.1"
	nspawnNetwork = "10.78.0."
)

// nspawnUnitProperties are the properties of the transient service that runs one container. They are the
// stock systemd-nspawn@.service's, which systemd 257 ships for machinectl start:
var nspawnUnitProperties = []string{
	// systemd-nspawn sends READY=1; with --notify-ready=yes only once the container's own systemd is ready, so
	// systemd-run returns (and the unit is active) when the container has booted.
	"Type=notify",
	// A stop sends SIGTERM to systemd-nspawn alone, which shuts the container down in order; SIGKILL to
	// whatever is left at the end.
	"KillMode=mixed",
	// The container's systemd manages its own cgroup subtree; nspawn itself lives in the "supervisor"
	// subgroup and the payload in "payload", so no process sits in an inner cgroup node.
	"Delegate=yes",
	"DelegateSubgroup=supervisor",
	"Slice=machine.slice",
	// A reboot inside the container makes systemd-nspawn exit with 133: systemd starts it again.
	"RestartForceExitStatus=133",
	"SuccessExitStatus=133",
	"TasksMax=16384",
	// systemd-nspawn pings the service watchdog while it supervises the container.
	"WatchdogSec=3min",
	// Devices: only what a booted container needs (nspawn makes its own /dev with the basic nodes).
	"DevicePolicy=closed",
	"DeviceAllow=/dev/net/tun rwm",
	"DeviceAllow=char-pts rw",
}

// nspawnCommand is the systemd-nspawn command line of one container.
func nspawnCommand(name, dir string) []string {
	return []string{"systemd-nspawn",
		"--quiet",
		// Run in the unit's own cgroup (systemd-run made it) instead of asking machined for a scope: without it
		// nspawn tries to create its own unit and the unit we started is not the machine's.
		"--keep-unit",
		"--boot",
		"--machine=" + name,
		"--directory=" + dir,
		// A user namespace with 65536 ids from a free range: root in the container is a high uid on the host.
		"--private-users=pick",
		// map (an idmapped mount of the tree, which stays owned by 0 on disk) where the file system supports it,
		// else chown (the tree is chowned to the picked range on first boot, and that range is picked again).
		"--private-users-ownership=auto",
		// A veth whose host end (vb-<name>, shortened with a hash for long names) joins the bridge.
		"--network-bridge=" + nspawnBridge,
		"--notify-ready=yes",
		// Read /etc/systemd/nspawn/<name>.nspawn or /run/systemd/nspawn/<name>.nspawn (trusted: every setting
		// applies), else <dir>/../<name>.nspawn (untrusted: Bind=, Capability=, network settings ignored).
		// Options on the command line win over the file.
		"--settings=yes",
	}
}

// nspawnContainer is one container of the test.
type nspawnContainer struct {
	name, dir string
	leader    int
	ip        string
}

// TestContainerTemplateBoots boots the container template of testdata/container-template.sh (a real Debian
// systemd 257 userland) twice with systemd-nspawn as transient services inside the test host, on a networkd
// bridge with a DHCP server, the way bitbuilderd runs a tenant's containers, and checks what the containers
// must be: registered with machined as containers, units active only once booted, a DHCP lease on host0, each
// reaching the other and the gateway, the host end of each veth (vb-*) a port of the bridge that networkd's
// stock 80-container-vb.network leaves there, root mapped to a high uid on the host, a reboot from inside that
// brings the container back and a poweroff that ends the unit cleanly. One tree lives on the host's root
// (overlayfs: no idmapped mounts, so nspawn chowns it), the other on a tmpfs (idmapped). It logs the times to
// active and to the lease: the first container on a bridge that has no port yet often leases only after about
// 4 s (its first DHCPDISCOVER goes out before the bridge forwards, and the client retries after 4 s); the next
// ones lease within 0.3-1 s.
func TestContainerTemplateBoots(t *testing.T) {
	h := host(t)
	repo := containerTemplate(t)

	setUpBridge(t, h)
	settings, err := exec.Command("git", "--git-dir="+repo, "show", "main:config/nspawn-settings.conf").Output()
	if err != nil {
		t.Fatalf("config/nspawn-settings.conf of %s: %v", repo, err)
	}
	const idmapDir = "/var/lib/bbtest-idmap"
	mustRun(t, h, "mkdir", "-p", idmapDir)
	mustRun(t, h, "mount", "-t", "tmpfs", "-o", "mode=0700", "bbtest-idmap", idmapDir)
	t.Cleanup(func() { _, _, _ = h.Run(context.Background(), "umount", "-l", idmapDir) })

	web := &nspawnContainer{name: "t1-web", dir: "/var/lib/machines/t1-web"}
	db := &nspawnContainer{name: "t1-db", dir: idmapDir + "/t1-db"}
	for _, c := range []*nspawnContainer{web, db} {
		extractRootfs(t, h, repo, c.dir)
		// The template's settings in the trusted place nspawn looks at, with a marker to see it was read.
		marked := string(settings) + "\n[Exec]\nEnvironment=BITBUILDER_SETTINGS=" + c.name + "\n"
		if err := h.WriteFile("/run/systemd/nspawn/"+c.name+".nspawn", []byte(marked), 0o644); err != nil {
			t.Fatal(err)
		}
		startNspawn(t, h, c)
	}

	// Ownership: auto maps where it can and chowns elsewhere.
	for _, c := range []*nspawnContainer{web, db} {
		base := uidBase(t, h, c)
		owner := strings.TrimSpace(mustRun(t, h, "stat", "-c", "%u", c.dir))
		opts := strings.TrimSpace(mustRun(t, h, "findmnt", "-N", strconv.Itoa(c.leader), "-n", "-o", "FSTYPE,OPTIONS", "/"))
		switch {
		case strings.Contains(opts, "idmapped") && owner == "0":
			t.Logf("%s: --private-users-ownership=auto mapped the tree (idmapped mount: %s); uid base %d", c.name, opts, base)
		case !strings.Contains(opts, "idmapped") && owner == strconv.Itoa(base):
			t.Logf("%s: --private-users-ownership=auto chowned the tree to the uid base %d (root is %s)", c.name, base, opts)
		default:
			t.Errorf("%s: tree owned by %s with uid base %d and root mount %q: neither mapped nor chowned", c.name, owner, base, opts)
		}
	}
	if opts := mustRun(t, h, "findmnt", "-N", strconv.Itoa(web.leader), "-n", "-o", "OPTIONS", "/"); strings.Contains(opts, "idmapped") {
		t.Logf("note: %s is idmapped on the host's overlayfs root: this kernel supports idmapped overlayfs mounts", web.name)
	}

	// Both on one bridge: each reaches the gateway and the other.
	for _, pair := range [][2]*nspawnContainer{{web, db}, {db, web}} {
		from, to := pair[0], pair[1]
		for _, ip := range []string{nspawnGateway, to.ip} {
			if r := run(t, h, "", "nsenter", "-t", strconv.Itoa(from.leader), "-a", "busybox", "ping", "-c", "1", "-W", "2", ip); r.exit != 0 {
				t.Errorf("%s cannot ping %s: %v", from.name, ip, r)
			}
		}
	}

	// networkd's stock 80-container-vb.network (KeepMaster=yes) manages the host ends and leaves them in the
	// bridge, also across a reload.
	mustRun(t, h, "networkctl", "reload")
	time.Sleep(500 * time.Millisecond)
	for _, c := range []*nspawnContainer{web, db} {
		checkBridgePort(t, h, c)
	}

	// A command run by the container's own systemd, through machined. (Not machinectl shell: with stdin a
	// pipe that is at its end, as here, its pty forwarder hangs up at once and it exits 0 having printed nothing.)
	if out := mustRun(t, h, "systemd-run", "--machine="+web.name, "--quiet", "--wait", "--pipe", "--",
		"networkctl", "--no-pager", "status", "host0"); !strings.Contains(out, "DHCPv4 via "+nspawnGateway) {
		t.Errorf("networkctl status host0 through systemd-run --machine:\n%s", out)
	}

	// A reboot inside the container: nspawn exits 133, systemd starts the unit again, the container boots.
	old := db.leader
	mustRun(t, h, "machinectl", "reboot", db.name)
	eventually(t, 30*time.Second, func() (bool, string) {
		out, _, err := h.Run(t.Context(), "machinectl", "show", "--property=Leader", "--value", db.name)
		l, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || l == 0 || l == old {
			return false, fmt.Sprintf("%s has leader %q (was %d) %v", db.name, out, old, err)
		}
		db.leader = l
		r := run(t, h, "", "nsenter", "-t", strconv.Itoa(l), "-a", "systemctl", "is-system-running")
		return strings.TrimSpace(r.stdout) == "running", "after the reboot: " + r.stdout
	})
	if got := showUnit(t, h, db.name+".service", "ActiveState", "NRestarts"); got["ActiveState"] != "active" || got["NRestarts"] != "1" {
		t.Errorf("%s after a reboot inside: %v", db.name, got)
	}

	// A poweroff inside ends the unit with success; so does systemctl stop.
	mustRun(t, h, "machinectl", "poweroff", web.name)
	eventually(t, 30*time.Second, func() (bool, string) {
		got := showUnit(t, h, web.name+".service", "ActiveState", "Result")
		return got["ActiveState"] == "inactive" && got["Result"] == "success", fmt.Sprintf("%s after poweroff: %v", web.name, got)
	})
	mustRun(t, h, "systemctl", "stop", db.name+".service")
	if got := showUnit(t, h, db.name+".service", "ActiveState", "Result"); got["ActiveState"] != "inactive" || got["Result"] != "success" {
		t.Errorf("%s after stop: %v", db.name, got)
	}
	if out := mustRun(t, h, "machinectl", "list", "--no-legend"); strings.Contains(out, "t1-") {
		t.Errorf("machines left after the containers stopped:\n%s", out)
	}
}

// setUpBridge makes the bridge with networkd: 10.78.0.1/24 and a DHCP server, addressed while no port is up.
func setUpBridge(t *testing.T, h *testhost.Host) {
	t.Helper()
	files := map[string]string{
		"/run/systemd/network/50-" + nspawnBridge + ".netdev": "[NetDev]\nName=" + nspawnBridge + "\nKind=bridge\n",
		"/run/systemd/network/50-" + nspawnBridge + ".network": "[Match]\nName=" + nspawnBridge + "\n\n[Network]\nAddress=" +
			nspawnGateway + "/24\nDHCPServer=yes\nConfigureWithoutCarrier=yes\n\n[DHCPServer]\nPoolOffset=100\nPoolSize=100\n",
	}
	for p, content := range files {
		if err := h.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		for p := range files {
			_, _, _ = h.Run(ctx, "rm", "-f", p)
		}
		_, _, _ = h.Run(ctx, "networkctl", "reload")
		// networkd does not delete a netdev whose file went away.
		_, _, _ = h.Run(ctx, "ip", "link", "del", nspawnBridge)
	})
	mustRun(t, h, "networkctl", "reload")
	eventually(t, 10*time.Second, func() (bool, string) {
		r := run(t, h, "", "ip", "-4", "-o", "addr", "show", "dev", nspawnBridge)
		return strings.Contains(r.stdout, "inet "+nspawnGateway+"/24"), fmt.Sprintf("%s has no %s: %v", nspawnBridge, nspawnGateway, r)
	})
}

// extractRootfs writes the template's rootfs/ into dir inside the host as the registry would: the
// commit's tree (git archive, files 0644/0755) plus the directories Git cannot carry (validate.RequiredDirs).
func extractRootfs(t *testing.T, h *testhost.Host, repo, dir string) {
	t.Helper()
	mustRun(t, h, "rm", "-rf", dir)
	mustRun(t, h, "mkdir", "-p", dir)
	t.Cleanup(func() { _, _, _ = h.Run(context.Background(), "rm", "-rf", dir) })
	start := time.Now()
	pipeInto(t, h, exec.Command("git", "--git-dir="+repo, "-c", "tar.umask=0022", "archive", "main", "rootfs"),
		"tar", "-x", "-C", dir, "--strip-components=1")
	var script strings.Builder
	for _, d := range validate.RequiredDirs(validate.KindContainer) {
		rel, ok := strings.CutPrefix(d.Path, "rootfs/")
		if !ok {
			t.Fatalf("required directory %q is not below rootfs/", d.Path)
		}
		mode := uint32(d.Mode.Perm())
		if d.Mode&fs.ModeSticky != 0 {
			mode |= 0o1000
		}
		fmt.Fprintf(&script, "mkdir -p %[1]s && chmod %04[2]o %[1]s\n", path.Join(dir, rel), mode)
	}
	if out, err := h.Shell(t.Context(), script.String()); err != nil {
		t.Fatalf("required directories: %v\n%s", err, out)
	}
	t.Logf("extracted the template's rootfs into %s in %v", dir, time.Since(start).Round(time.Millisecond))
}

// startNspawn starts c as a transient service and checks that it booted, that machined knows it, that it
// read its settings file, that host0 got a lease and that its veth is a port of the bridge.
func startNspawn(t *testing.T, h *testhost.Host, c *nspawnContainer) {
	t.Helper()
	unit := c.name + ".service"
	args := []string{"systemd-run", "--quiet", "--collect", "--unit=" + unit}
	for _, p := range nspawnUnitProperties {
		args = append(args, "--property="+p)
	}
	args = append(append(args, "--"), nspawnCommand(c.name, c.dir)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if t.Failed() {
			t.Logf("journal of %s:\n%s", unit, h.JournalTail(ctx, 40, "-u", unit))
		}
		_, _, _ = h.Run(ctx, "systemctl", "stop", unit)
		_, _, _ = h.Run(ctx, "systemctl", "reset-failed", unit)
		_, _, _ = h.Run(ctx, "rm", "-f", "/run/systemd/nspawn/"+c.name+".nspawn")
	})
	start := time.Now()
	if r := run(t, h, "", args...); r.exit != 0 {
		t.Fatalf("%v\n%s", r, h.JournalTail(t.Context(), 30, "-u", unit))
	}
	ready := time.Since(start)
	if got := showUnit(t, h, unit, "ActiveState", "SubState"); got["ActiveState"] != "active" || got["SubState"] != "running" {
		t.Fatalf("%s once systemd-run returned: %v", unit, got)
	}

	// machined: a container of this unit, with its leader.
	m := map[string]string{}
	for line := range strings.Lines(mustRun(t, h, "machinectl", "show", c.name)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	if m["Class"] != "container" || m["Unit"] != unit || m["State"] != "running" || m["RootDirectory"] != c.dir {
		t.Errorf("machinectl show %s: %v", c.name, m)
	}
	var err error
	if c.leader, err = strconv.Atoi(m["Leader"]); err != nil || c.leader <= 0 {
		t.Fatalf("machined has no leader for %s: %v", c.name, m)
	}
	obj := mustRun(t, h, "busctl", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
		"org.freedesktop.machine1.Manager", "GetMachine", "s", c.name)
	objPath := strings.Trim(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(obj), "o ")), `"`)
	if class := mustRun(t, h, "busctl", "get-property", "org.freedesktop.machine1", objPath,
		"org.freedesktop.machine1.Machine", "Class"); strings.TrimSpace(class) != `s "container"` {
		t.Errorf("GetMachine %s: %s, Class %s", c.name, obj, class)
	}

	// Booted: --notify-ready=yes held the unit in activating until the container's systemd was ready.
	leader := strconv.Itoa(c.leader)
	if state := run(t, h, "", "nsenter", "-t", leader, "-a", "systemctl", "is-system-running"); strings.TrimSpace(state.stdout) != "running" {
		failed := run(t, h, "", "nsenter", "-t", leader, "-a", "systemctl", "--failed", "--no-legend")
		t.Errorf("%s is %q once its unit is active; failed units:\n%s", c.name, strings.TrimSpace(state.stdout), failed.stdout)
	}
	environ := mustRun(t, h, "cat", "/proc/"+leader+"/environ")
	if !strings.Contains(environ, "BITBUILDER_SETTINGS="+c.name+"\x00") {
		t.Errorf("%s did not read /run/systemd/nspawn/%s.nspawn (environment %q)", c.name, c.name, environ)
	}

	// host0 leased from the bridge's DHCP server.
	eventually(t, 15*time.Second, func() (bool, string) {
		r := run(t, h, "", "nsenter", "-t", leader, "-n", "ip", "-4", "-o", "addr", "show", "dev", "host0")
		f := strings.Fields(r.stdout)
		for i := range f {
			if f[i] == "inet" && i+1 < len(f) && strings.HasPrefix(f[i+1], nspawnNetwork) {
				c.ip, _, _ = strings.Cut(f[i+1], "/")
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s0/24 address on %s's host0: %v", nspawnNetwork, c.name, r)
	})
	status := mustRun(t, h, "nsenter", "-t", leader, "-a", "networkctl", "--no-pager", "status", "host0")
	if !strings.Contains(status, "80-container-host0.network") || !strings.Contains(status, c.ip+" (DHCPv4 via "+nspawnGateway+")") {
		t.Errorf("networkctl status host0 in %s:\n%s", c.name, status)
	}

	base := uidBase(t, h, c)
	t.Logf("%s: active after %v (systemd-run), DHCP lease %s %v after the start; root is uid %d on the host",
		c.name, ready.Round(time.Millisecond), c.ip, leaseDelay(t, h, c), base)
	checkBridgePort(t, h, c)
}

// uidBase reads the container's uid_map: one line, 0 mapped to a high base, 65536 ids.
func uidBase(t *testing.T, h *testhost.Host, c *nspawnContainer) int {
	t.Helper()
	out, err := h.ReadFile("/proc/" + strconv.Itoa(c.leader) + "/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != "0" || f[2] != "65536" {
		t.Fatalf("%s's uid_map %q: want one range of 65536 ids from 0", c.name, out)
	}
	base, err := strconv.Atoi(f[1])
	if err != nil || base < 65536 {
		t.Fatalf("%s's root is uid %q on the host: want a high uid", c.name, f[1])
	}
	return base
}

// leaseDelay is the time from the start of the unit's systemd-nspawn to the lease, as the container's journal
// logged it (both are CLOCK_MONOTONIC: the containers have no time namespace).
func leaseDelay(t *testing.T, h *testhost.Host, c *nspawnContainer) time.Duration {
	t.Helper()
	startUS, err := strconv.ParseInt(showUnit(t, h, c.name+".service", "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"], 10, 64)
	if err != nil {
		t.Fatalf("ExecMainStartTimestampMonotonic of %s: %v", c.name, err)
	}
	out := mustRun(t, h, "nsenter", "-t", strconv.Itoa(c.leader), "-a", "journalctl", "-b", "-u", "systemd-networkd",
		"-o", "json", "--output-fields=MESSAGE", "--no-pager")
	for line := range strings.Lines(out) {
		var e struct {
			Message   string `json:"MESSAGE"`
			Monotonic string `json:"__MONOTONIC_TIMESTAMP"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || !strings.Contains(e.Message, "DHCPv4 address "+c.ip) {
			continue
		}
		us, err := strconv.ParseInt(e.Monotonic, 10, 64)
		if err != nil {
			t.Fatalf("journal entry %s", line)
		}
		return time.Duration(us-startUS) * time.Microsecond
	}
	t.Errorf("no \"DHCPv4 address %s\" in %s's networkd journal:\n%s", c.ip, c.name, out)
	return 0
}

// checkBridgePort checks that the host end of c's veth is a port of the bridge, configured by networkd's
// stock 80-container-vb.network.
func checkBridgePort(t *testing.T, h *testhost.Host, c *nspawnContainer) {
	t.Helper()
	// The host end is the peer of the container's host0: "2: host0@if5: <...".
	link := mustRun(t, h, "nsenter", "-t", strconv.Itoa(c.leader), "-n", "ip", "-o", "link", "show", "dev", "host0")
	_, rest, _ := strings.Cut(link, "host0@if")
	ifindex, _, _ := strings.Cut(rest, ":")
	if _, err := strconv.Atoi(ifindex); err != nil {
		t.Fatalf("no peer index in %q", link)
	}
	name := strings.TrimSpace(mustRun(t, h, "sh", "-c", "grep -lx "+ifindex+" /sys/class/net/*/ifindex | cut -d/ -f5"))
	if !strings.HasPrefix(name, "vb-") {
		t.Errorf("the host end of %s's veth is %q (ifindex %s), want vb-*", c.name, name, ifindex)
		return
	}
	if master := mustRun(t, h, "ip", "-o", "link", "show", "dev", name); !strings.Contains(master, "master "+nspawnBridge+" ") {
		t.Errorf("%s is not a port of %s: %s", name, nspawnBridge, master)
	}
	if st := mustRun(t, h, "networkctl", "--no-pager", "status", name); !strings.Contains(st, "80-container-vb.network") || !strings.Contains(st, "enslaved") {
		t.Errorf("networkctl status %s:\n%s", name, st)
	}
}
