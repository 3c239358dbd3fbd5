package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// machineBootTimeout bounds the wait for containers to boot in the test host (a few seconds each when idle).
const machineBootTimeout = 3 * time.Minute

// addContainerTemplate copies the container template repository into the host and adds it to d's registry as deb.
func addContainerTemplate(t testing.TB, d *daemon) {
	t.Helper()
	addTemplateRepo(t, d, containerTemplate(t), "deb", "container")
}

// containerTenant is the Create parameters of a tenant with the given containers of template deb.
func containerTenant(name string, machines ...string) string {
	var ms []string
	for _, m := range machines {
		ms = append(ms, fmt.Sprintf(`{"name":%q,"kind":"container","template":"deb"}`, m))
	}
	return fmt.Sprintf(`{"name":%q,"resources":{"cpus":2,"memoryBytes":2147483648,"storageBytes":10737418240},`+
		`"templates":[{"role":"container","name":"deb","template":"deb"}],"machines":[%s]}`, name, strings.Join(ms, ","))
}

// waitRunning waits until every machine of tenant name runs with an address and the tenant is ready.
func waitRunning(t testing.TB, d *daemon, name string) tenant {
	t.Helper()
	var got tenant
	eventuallyExplained(t, machineBootTimeout, func() (bool, string) {
		got = d.tenantCall(t, asRoot, "Get", fmt.Sprintf(`{"name":%q}`, name))
		var states []string
		ok := got.Phase == "ready"
		for _, m := range got.Machines {
			if m.Status == nil {
				states = append(states, m.Name+"=none")
				ok = false
				continue
			}
			states = append(states, fmt.Sprintf("%s=%s (unit %s %s, leader %d) %v %s", m.Name, m.Status.State, m.Status.Unit, m.Status.UnitState, m.Status.Leader, m.Status.Addresses, m.Status.Message))
			if m.Status.State != "running" || len(m.Status.Addresses) == 0 {
				ok = false
			}
		}
		return ok, fmt.Sprintf("phase %s, machines %v, conditions %v", got.Phase, states, conditions(t, got))
	}, func() string {
		// What systemd and machined say, for the failure message.
		out, _, _ := d.h.Run(context.Background(), "sh", "-c", "machinectl list --no-legend; systemctl status --no-pager -n 20 'tenant-machine@"+name+"*' 2>&1 | tail -n 40")
		return string(out)
	})
	return got
}

func machineOf(t testing.TB, tn tenant, name string) machine {
	t.Helper()
	for _, m := range tn.Machines {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("tenant %s has no machine %s", tn.Name, name)
	return machine{}
}

// ipv4 returns the machine's address in the tenant's network.
func ipv4(t testing.TB, tn tenant, m machine) string {
	t.Helper()
	prefix := fmt.Sprintf("10.%d.", tn.NetworkIndex)
	for _, a := range m.Status.Addresses {
		if strings.HasPrefix(a, prefix) {
			return a
		}
	}
	t.Fatalf("machine %s has no address in %s0.0/16: %v", m.Name, prefix, m.Status.Addresses)
	return ""
}

// pingFrom pings target from inside machine m (in its network namespace) and reports whether it answered.
func pingFrom(t testing.TB, d *daemon, m machine, target string) bool {
	t.Helper()
	r := run(t, d.h, "", "nsenter", "-t", strconv.Itoa(m.Status.Leader), "-n", "busybox", "ping", "-c1", "-W2", target)
	return r.exit == 0
}

// TestMachinesContainers runs two container tenants through bitbuilderd in the systemd 257 test host: each
// container boots a real systemd userland in nspawn, registers with machined as class container under a
// deterministic name, runs in its own user namespace, gets a DHCP lease from its tenant's bridge, reaches its
// sibling and the gateway but not the other tenant; drift is repaired; stop, start and restart act on the host; and
// Delete leaves nothing behind.
func TestMachinesContainers(t *testing.T) {
	d := startDaemon(t, "machines", "--no-host=false", "--resync=5s")
	h := d.h
	addContainerTemplate(t, d)

	// bbctl's --wait returns once both containers booted and the tenant is ready.
	start := time.Now()
	r := run(t, h, "", guestBin+"/bbctl", "--address", "unix:"+d.socket, "--timeout", "3m", "tenant", "create", "ma",
		"--cpus", "2", "--memory", "2G", "--template", "container:deb:deb",
		"--machine", "web:container:deb", "--machine", "db:container:deb", "--wait")
	if r.exit != 0 {
		t.Fatalf("bbctl tenant create --wait: %v", r)
	}
	t.Logf("bbctl tenant create --wait with two containers returned after %v; it printed:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"ma"}`); got.Phase != "ready" || len(got.Machines) != 2 ||
		got.Machines[0].Status == nil || got.Machines[0].Status.State != "running" || got.Machines[1].Status == nil || got.Machines[1].Status.State != "running" {
		t.Fatalf("after create --wait returned: phase %s, machines %+v", got.Phase, got.Machines)
	}
	d.create(t, containerTenant("mb", "app"))
	a := waitRunning(t, d, "ma")
	b := waitRunning(t, d, "mb")
	web, db, app := machineOf(t, a, "web"), machineOf(t, a, "db"), machineOf(t, b, "app")

	// machined lists them under their names, as containers.
	out := mustRun(t, h, "machinectl", "list", "--no-legend", "--no-pager")
	classes := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			classes[f[0]] = f[1]
		}
	}
	for _, n := range []string{"ma-web", "ma-db", "mb-app"} {
		if classes[n] != "container" {
			t.Errorf("machinectl list has no container %s:\n%s", n, out)
		}
	}
	if web.Status.Class != "container" || web.MachineName != "ma-web" {
		t.Errorf("web: %+v", web)
	}

	// Root inside is not root outside, and two containers never share a uid range.
	bases := map[string]string{}
	for _, m := range []machine{web, db, app} {
		uidmap := strings.Fields(mustRun(t, h, "cat", fmt.Sprintf("/proc/%d/uid_map", m.Status.Leader)))
		if len(uidmap) < 3 || uidmap[0] != "0" || uidmap[1] == "0" {
			t.Fatalf("%s: uid_map %v: root in the container is root on the host", m.MachineName, uidmap)
		}
		if other, dup := bases[uidmap[1]]; dup {
			t.Errorf("%s and %s share the uid range at %s", m.MachineName, other, uidmap[1])
		}
		bases[uidmap[1]] = m.MachineName
	}

	// The containers run in the tenant's slice, with its limits.
	unit := web.Status.Unit
	props := showUnit(t, h, unit, "Slice", "ActiveState")
	if props["Slice"] != "bitbuilder-ma.slice" || props["ActiveState"] != "active" {
		t.Errorf("%s: %v", unit, props)
	}
	if sl := showUnit(t, h, "bitbuilder-ma.slice", "CPUQuotaPerSecUSec", "MemoryMax"); sl["MemoryMax"] != "2147483648" || sl["CPUQuotaPerSecUSec"] != "2s" {
		t.Errorf("slice limits: %v", sl)
	}

	// Leases from the tenant's bridge: the addresses are in the tenant's network; siblings and the gateway answer,
	// the other tenant does not.
	gwA := fmt.Sprintf("10.%d.0.1", a.NetworkIndex)
	if !pingFrom(t, d, web, ipv4(t, a, db)) {
		t.Errorf("web cannot reach its sibling db at %s", ipv4(t, a, db))
	}
	if !pingFrom(t, d, web, gwA) {
		t.Errorf("web cannot reach its gateway %s", gwA)
	}
	if pingFrom(t, d, web, ipv4(t, b, app)) {
		t.Errorf("web of tenant ma reached app of tenant mb at %s", ipv4(t, b, app))
	}
	if pingFrom(t, d, app, ipv4(t, a, web)) {
		t.Errorf("app of tenant mb reached web of tenant ma at %s", ipv4(t, a, web))
	}

	// Drift: a container terminated behind the daemon's back comes back.
	mustRun(t, h, "machinectl", "terminate", "ma-web")
	eventually(t, machineBootTimeout, func() (bool, string) {
		got := d.tenantCall(t, asRoot, "Get", `{"name":"ma"}`)
		m := machineOf(t, got, "web")
		return m.Status != nil && m.Status.State == "running" && m.Status.Leader != web.Status.Leader, fmt.Sprintf("%+v", m.Status)
	})
	// A unit stopped behind its back too.
	mustRun(t, h, "systemctl", "stop", db.Status.Unit)
	eventually(t, machineBootTimeout, func() (bool, string) {
		got := d.tenantCall(t, asRoot, "Get", `{"name":"ma"}`)
		m := machineOf(t, got, "db")
		return m.Status != nil && m.Status.State == "running" && m.Status.Leader != db.Status.Leader, fmt.Sprintf("%+v", m.Status)
	})
	// And the bridge deleted behind its back is put back within a resync, with the containers' ports.
	mustRun(t, h, "ip", "link", "del", fmt.Sprintf("br-tenant-%d", b.NetworkIndex))
	eventually(t, time.Minute, func() (bool, string) {
		r := run(t, h, "", "ip", "link", "show", fmt.Sprintf("br-tenant-%d", b.NetworkIndex))
		return r.exit == 0, r.String()
	})
	if j := h.JournalTail(t.Context(), 400, "-u", d.unit); !strings.Contains(j, "ma") {
		t.Logf("daemon journal:\n%s", j)
	}

	// Stop and start one machine; restart another.
	d.call(t, asRoot, "io.bitbuilder.Tenant.StopMachine", `{"name":"ma","machine":"db"}`)
	eventually(t, machineBootTimeout, func() (bool, string) {
		r := run(t, h, "", "machinectl", "show", "ma-db")
		got := d.tenantCall(t, asRoot, "Get", `{"name":"ma"}`)
		m := machineOf(t, got, "db")
		return r.exit != 0 && m.Status != nil && m.Status.State == "stopped", fmt.Sprintf("%+v %s", m.Status, r.stdout)
	})
	d.call(t, asRoot, "io.bitbuilder.Tenant.StartMachine", `{"name":"ma","machine":"db"}`)
	d.call(t, asRoot, "io.bitbuilder.Tenant.RestartMachine", `{"name":"ma","machine":"web"}`)
	a = waitRunning(t, d, "ma")
	if m := machineOf(t, a, "web"); m.Status.RestartGeneration != 1 {
		t.Errorf("web after restart: %+v", m.Status)
	}

	// Stop the tenant: every machine stops and the phase says stopped.
	d.call(t, asRoot, "io.bitbuilder.Tenant.Stop", `{"name":"mb"}`)
	eventually(t, machineBootTimeout, func() (bool, string) {
		got := d.tenantCall(t, asRoot, "Get", `{"name":"mb"}`)
		m := machineOf(t, got, "app")
		return got.Phase == "stopped" && m.Status != nil && m.Status.State == "stopped", fmt.Sprintf("phase %s %+v", got.Phase, m.Status)
	})

	// Delete both: no machine, unit, slice, tree, namespace or link left.
	for _, n := range []string{"ma", "mb"} {
		d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", fmt.Sprintf(`{"name":%q}`, n))
	}
	for _, n := range []string{"ma", "mb"} {
		eventually(t, machineBootTimeout, func() (bool, string) {
			r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":%q}`, n))
			return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
		})
	}
	if out := mustRun(t, h, "machinectl", "list", "--no-legend", "--no-pager"); strings.Contains(out, "ma-") || strings.Contains(out, "mb-") {
		t.Errorf("machines left: %s", out)
	}
	if out := mustRun(t, h, "sh", "-c", "ls /run/systemd/system/ | grep -E 'tenant-machine@m[ab]|bitbuilder-m[ab]' || true"); strings.TrimSpace(out) != "" {
		t.Errorf("unit files left: %s", out)
	}
	if out := mustRun(t, h, "sh", "-c", "systemctl list-units --all --no-legend --plain 'tenant-machine@m*' 'bitbuilder-m*.slice' | grep -v not-found || true"); strings.TrimSpace(out) != "" {
		t.Errorf("units left: %s", out)
	}
	if out := mustRun(t, h, "sh", "-c", "ls "+d.stateDir+"/tenants/"); strings.TrimSpace(out) != "" {
		t.Errorf("tenant trees left: %s", out)
	}
	if out := mustRun(t, h, "sh", "-c", "grep "+d.stateDir+" /proc/self/mountinfo || true"); strings.TrimSpace(out) != "" {
		t.Errorf("mounts left: %s", out)
	}
}

// hostCounts counts what tenants leave on the test host: namespaces, links, unit files, loaded units and slices,
// machines and mounts below the daemon's state directory.
func hostCounts(t testing.TB, d *daemon) map[string]int {
	t.Helper()
	count := func(script string) int {
		out := mustRun(t, d.h, "sh", "-c", "( "+script+" ) | wc -l")
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("%s: %q", script, out)
		}
		return n
	}
	return map[string]int{
		"namespaces": count("ip netns list | grep '^tenant-' || true"),
		"links":      count("ip -o link show | grep -E 'br-tenant-|vh-tenant-|vx-tenant-|vb-' || true"),
		"unit files": count("ls /run/systemd/system | grep -E '^(tenant|netns-tenant|bitbuilder-)' || true"),
		"units":      count("systemctl list-units --all --no-legend --plain 'tenant*' 'netns-tenant*' 'bitbuilder-*.slice' | grep -v not-found || true"),
		"machines":   count("machinectl list --no-legend --no-pager | grep . || true"),
		"mounts":     count("grep -F ' " + d.stateDir + "' /proc/self/mountinfo || true"),
		"trees":      count("ls " + d.stateDir + "/tenants 2>/dev/null || true"),
	}
}

// TestMachinesCrash kills the daemon with SIGKILL while five container tenants are coming up, starts it again, and
// checks that all five converge; then deletes them all and counts what is left on the host: nothing.
func TestMachinesCrash(t *testing.T) {
	d := startDaemon(t, "mcrash", "--no-host=false", "--resync=5s")
	addContainerTemplate(t, d)
	before := hostCounts(t, d)
	names := []string{"cr1", "cr2", "cr3", "cr4", "cr5"}
	for _, n := range names {
		d.create(t, containerTenant(n, "web"))
	}
	time.Sleep(500 * time.Millisecond) // mid-way: roots being copied, units starting
	d.crash(t)
	d.start(t)
	for _, n := range names {
		waitRunning(t, d, n)
	}
	// The counts see what the tenants have (so that zero afterwards means something).
	during := hostCounts(t, d)
	for k, min := range map[string]int{"namespaces": 5, "machines": 5, "trees": 5, "unit files": 5 * 5, "links": 5 * 3} {
		if during[k] < before[k]+min {
			t.Errorf("with five running tenants %s counts %d, want at least %d more than the %d before", k, during[k], min, before[k])
		}
	}
	for _, n := range names {
		d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", fmt.Sprintf(`{"name":%q}`, n))
	}
	for _, n := range names {
		eventually(t, machineBootTimeout, func() (bool, string) {
			r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":%q}`, n))
			return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
		})
	}
	after := hostCounts(t, d)
	for k, v := range after {
		if v != before[k] {
			t.Errorf("%s: %d before the tenants, %d after deleting them", k, before[k], v)
		}
	}
	t.Logf("host before and after: %v", after)
}

// TestMachinesNoBus runs the daemon without a system bus: a tenant with a machine shows, before and after a
// restart of the daemon, conditions that say why nothing runs, instead of claiming success.
func TestMachinesNoBus(t *testing.T) {
	d := startDaemon(t, "mnobus", "--no-host=false")
	d.env = []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/bitbuilder-test-no-bus"}
	d.stop(t)
	d.start(t)
	// No registry is reachable without templates; a tenant with a container needs one, so add the template first.
	addContainerTemplate(t, d)
	d.create(t, containerTenant("nb", "web"))
	check := func() {
		eventually(t, time.Minute, func() (bool, string) {
			got := d.tenantCall(t, asRoot, "Get", `{"name":"nb"}`)
			cs := conditions(t, got)
			ok := cs["MachinesReady"].Status == "false" && cs["MachinesReady"].Reason == "NoSystemBus" &&
				cs["UnitsInstalled"].Status == "false" && cs["NetworkdConfigured"].Status == "false"
			return ok, fmt.Sprintf("phase %s, conditions %v", got.Phase, cs)
		})
	}
	check()
	d.stop(t)
	d.start(t)
	check()
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"nb"}`)
	eventually(t, time.Minute, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"nb"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
}

// eventuallyExplained is eventually with explain's text added to the failure.
func eventuallyExplained(t testing.TB, timeout time.Duration, cond func() (bool, string), explain func() string) {
	t.Helper()
	poll(t, timeout, 50*time.Millisecond, cond, explain)
}
