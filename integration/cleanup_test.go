package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCleanup runs bitbuilderd with its host steps in the systemd 257 test host, sets up two
// tenants, stops the daemon as Ctrl-C after make run would, and runs bitbuilderd --cleanup: the
// namespaces, bridges and veths, networkd files, units and their manifest, the tenants' trees
// and the boot registry are gone from the host, the records are kept (a daemon started again
// lists the tenants), and --cleanup refuses to run while a daemon holds the state.
func TestCleanup(t *testing.T) {
	d := startDaemon(t, "cleanup", "--no-host=false")
	h := d.h
	cleanup := []string{bitbuilderd, "--cleanup", "--socket", d.socket, "--state-dir", d.stateDir}
	// Whatever happens below, leave nothing on the host for the next test.
	t.Cleanup(func() {
		_, _, _ = h.Run(context.Background(), "systemctl", "stop", d.unit)
		_, _, _ = h.Run(context.Background(), cleanup...)
	})
	const registry = "/etc/bitbuilder/boot-registry.json"
	a := d.create(t, `{"name":"clean-a"}`)
	b := d.create(t, `{"name":"clean-b","parameters":{"BRIDGE_STP":"yes"}}`)
	for _, name := range []string{"clean-a", "clean-b"} {
		eventually(t, 60*time.Second, func() (bool, string) {
			cs := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"`+name+`"}`))
			return cs["NetworkReady"].Status == "true" && cs["NetworkdConfigured"].Status == "true" && cs["UnitsInstalled"].Status == "true", fmt.Sprint(cs)
		})
	}
	links := func() string {
		return run(t, h, "", "sh", "-c", fmt.Sprintf("ip -o link show | grep -E 'br-tenant-(%d|%d)|vh-tenant-(%d|%d)|vx-tenant-(%d|%d)'",
			a.NetworkIndex, b.NetworkIndex, a.NetworkIndex, b.NetworkIndex, a.NetworkIndex, b.NetworkIndex)).stdout
	}
	netFiles := func() string {
		return run(t, h, "", "sh", "-c", fmt.Sprintf("ls /run/systemd/network/ | grep -E '^50-bitbuilder-(%d|%d)-'", a.NetworkIndex, b.NetworkIndex)).stdout
	}
	unitFiles := func() string {
		return run(t, h, "", "sh", "-c", `ls -a /run/systemd/system/ /run/systemd/system/.bitbuilder 2>/dev/null | grep -E 'clean\\x2d|clean-'`).stdout
	}
	if links() == "" || netFiles() == "" || unitFiles() == "" || !strings.Contains(mustRun(t, h, "ip", "netns", "list"), "tenant-clean-a") {
		t.Fatalf("the tenants are not set up: links %q, files %q, units %q", links(), netFiles(), unitFiles())
	}

	if r := run(t, h, "", cleanup...); r.exit == 0 || !strings.Contains(r.stderr, "stop bitbuilderd first") {
		t.Errorf("--cleanup while the daemon runs: %s", r)
	}
	d.stop(t)
	r := run(t, h, "", cleanup...)
	if r.exit != 0 {
		t.Fatalf("bitbuilderd --cleanup: %s", r)
	}
	t.Logf("bitbuilderd --cleanup:\n%s", r.stderr)
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-clean-") {
		t.Errorf("namespaces after --cleanup: %s", out)
	}
	if l := links(); l != "" {
		t.Errorf("links after --cleanup:\n%s", l)
	}
	if f := netFiles(); f != "" {
		t.Errorf("networkd files after --cleanup:\n%s", f)
	}
	if u := unitFiles(); u != "" {
		t.Errorf("unit files after --cleanup:\n%s", u)
	}
	if r := run(t, h, "", "test", "-e", registry); r.exit == 0 {
		t.Errorf("%s left after --cleanup", registry)
	}
	if r := run(t, h, "", "sh", "-c", "ls -A "+d.stateDir+"/tenants 2>/dev/null"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("tenant trees after --cleanup: %s", r.stdout)
	}
	if r := run(t, h, "", "test", "-e", d.socket); r.exit == 0 {
		t.Errorf("stale socket %s left after --cleanup", d.socket)
	}

	// The records are kept: the daemon (records only now) still lists both tenants.
	d.args = nil
	d.start(t)
	if got := d.list(t); len(got) != 2 {
		t.Errorf("after --cleanup the daemon lists %d tenants, want the 2 records", len(got))
	}
}

// TestCleanupWithoutRecords: the state directory was removed before bitbuilderd --cleanup ran;
// the tenant's namespace, links, networkd files and units are still found, by the marks the
// daemon leaves (link aliases, file headers, unit manifests), and removed.
func TestCleanupWithoutRecords(t *testing.T) {
	d := startDaemon(t, "orphan", "--no-host=false")
	h := d.h
	cleanup := []string{bitbuilderd, "--cleanup", "--socket", d.socket, "--state-dir", d.stateDir}
	t.Cleanup(func() {
		_, _, _ = h.Run(context.Background(), "systemctl", "stop", d.unit)
		_, _, _ = h.Run(context.Background(), cleanup...)
	})
	a := d.create(t, `{"name":"orphan-a"}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		cs := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"orphan-a"}`))
		return cs["NetworkReady"].Status == "true" && cs["NetworkdConfigured"].Status == "true" && cs["UnitsInstalled"].Status == "true", fmt.Sprint(cs)
	})
	d.stop(t)
	mustRun(t, h, "rm", "-rf", d.stateDir)
	r := run(t, h, "", cleanup...)
	if r.exit != 0 {
		t.Fatalf("bitbuilderd --cleanup: %s", r)
	}
	t.Logf("bitbuilderd --cleanup:\n%s", r.stderr)
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-orphan-a") {
		t.Errorf("namespace after --cleanup: %s", out)
	}
	if r := run(t, h, "", "ip", "link", "show", fmt.Sprintf("br-tenant-%d", a.NetworkIndex)); r.exit == 0 {
		t.Errorf("bridge after --cleanup: %s", r.stdout)
	}
	if out := run(t, h, "", "sh", "-c", fmt.Sprintf("ls /run/systemd/network/ | grep '^50-bitbuilder-%d-'", a.NetworkIndex)).stdout; out != "" {
		t.Errorf("networkd files after --cleanup: %s", out)
	}
	if out := run(t, h, "", "sh", "-c", `ls -a /run/systemd/system/ /run/systemd/system/.bitbuilder 2>/dev/null | grep orphan`).stdout; out != "" {
		t.Errorf("units after --cleanup: %s", out)
	}
	if r := run(t, h, "", "test", "-e", d.stateDir); r.exit == 0 {
		t.Errorf("--cleanup made the state directory %s", d.stateDir)
	}
}
