package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// summary formats min/median/max of ds.
func summary(ds []time.Duration) (lo, med, hi time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

// daemonCPU returns the daemon's CPU time so far (utime+stime of its main process).
func daemonCPU(t testing.TB, d *daemon) time.Duration {
	out := mustRun(t, d.h, "cat", fmt.Sprintf("/proc/%d/stat", d.mainPID(t)))
	f := strings.Fields(out[strings.LastIndexByte(out, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
}

// BenchmarkCreateToRunning compares bitbuilderd's create-to-running of a tenant with one container (record,
// network namespace, bridge with networkd's DHCP server, units, the machine's own copy of the template tree,
// systemd-nspawn, until machined has the machine with an address from the bridge) with a plain script doing the
// same work in the same host: a networkd bridge with a DHCP server, a namespace with a veth port on it (as every
// tenant has), cp -a of the same tree, systemd-run
// systemd-nspawn with the same options, waiting for the same readiness (registered, with a lease). The two
// alternate; min/median/max of each and the ratio of the medians are reported (goal: at most 1.1x).
func BenchmarkCreateToRunning(b *testing.B) {
	d := startDaemon(b, "bench", "--no-host=false")
	addContainerTemplate(b, d)
	// Warm up: the shared template tree is checked out by the first tenant, not per create.
	d.create(b, containerTenant("warm", "web"))
	waitRunning(b, d, "warm")
	tree := strings.TrimSpace(mustRun(b, d.h, "sh", "-c", "ls -d "+d.stateDir+"/trees/deb/*[0-9a-f] | head -n1")) + "/rootfs"

	var ours, script []time.Duration
	for i := range b.N {
		name := fmt.Sprintf("bench%d", i)
		start := time.Now()
		d.create(b, containerTenant(name, "web"))
		waitRunning(b, d, name)
		ours = append(ours, time.Since(start))
		d.call(b, asRoot, "io.bitbuilder.Tenant.Delete", fmt.Sprintf(`{"name":%q}`, name))

		sh := fmt.Sprintf(`set -e
N=s%[1]d; BR=br-s%[1]d
printf '[NetDev]\nName=%%s\nKind=bridge\n' $BR > /run/systemd/network/40-$BR.netdev
printf '[Match]\nName=%%s\n[Network]\nAddress=10.250.%[1]d.1/24\nDHCPServer=yes\nConfigureWithoutCarrier=yes\n[DHCPServer]\nPoolOffset=100\nPoolSize=100\n' $BR > /run/systemd/network/40-$BR.network
networkctl reload
# The namespace and veth the daemon gives every tenant (its port on the bridge).
ip netns add ns-$N
ip link add vh-$N type veth peer name eth0 netns ns-$N
until ip link show $BR >/dev/null 2>&1; do sleep 0.01; done
ip link set vh-$N master $BR up
ip -n ns-$N link set eth0 up
ip -n ns-$N link set lo up
mkdir -p /var/lib/bench
cp -a --reflink=auto %[2]s /var/lib/bench/$N
systemd-run --quiet --collect --unit=$N -p Type=notify -p KillMode=mixed -p Delegate=yes -p DelegateSubgroup=supervisor \
  -p DevicePolicy=closed -p 'DeviceAllow=/dev/net/tun rwm' -p 'DeviceAllow=char-pts rw' -- \
  systemd-nspawn --quiet --keep-unit --boot --link-journal=no --machine=$N --directory=/var/lib/bench/$N \
  --private-users=pick --private-users-ownership=auto --network-bridge=$BR --notify-ready=yes --settings=yes
until machinectl list --no-legend | grep -q "^$N .*10\.250\."; do sleep 0.05; done
`, i%200, tree)
		start = time.Now()
		mustRun(b, d.h, "sh", "-c", sh)
		script = append(script, time.Since(start))
		mustRun(b, d.h, "sh", "-c", fmt.Sprintf("systemctl stop s%[1]d; rm -rf /var/lib/bench/s%[1]d /run/systemd/network/40-br-s%[1]d.*; ip link del br-s%[1]d; ip netns del ns-s%[1]d; networkctl reload", i%200))
		eventually(b, 2*time.Minute, func() (bool, string) {
			r := d.call(b, asRoot, "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":%q}`, name))
			return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
		})
	}
	olo, omed, ohi := summary(ours)
	slo, smed, shi := summary(script)
	b.ReportMetric(float64(omed.Milliseconds()), "bitbuilderd-median-ms")
	b.ReportMetric(float64(smed.Milliseconds()), "script-median-ms")
	b.ReportMetric(float64(omed)/float64(smed), "ratio")
	fmt.Fprintf(os.Stderr, "create-to-running, %d runs: bitbuilderd min/median/max %v/%v/%v; script %v/%v/%v; ratio of medians %.2f\n",
		b.N, olo, omed, ohi, slo, smed, shi, float64(omed)/float64(smed))
}

// BenchmarkColdStart50 creates 50 tenants with one container each at once and reports the time until all run
// (with an address), per tenant, and the daemon's CPU time for it.
func BenchmarkColdStart50(b *testing.B) {
	const n = 50
	d := startDaemon(b, "cold", "--no-host=false")
	addContainerTemplate(b, d)
	for it := range b.N {
		cpu0 := daemonCPU(b, d)
		start := time.Now()
		for i := range n {
			d.create(b, containerTenant(fmt.Sprintf("c%d-%d", it, i), "web"))
		}
		for i := range n {
			waitRunning(b, d, fmt.Sprintf("c%d-%d", it, i))
		}
		total := time.Since(start)
		cpu := daemonCPU(b, d) - cpu0
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(total.Seconds()/n, "s/tenant")
		b.ReportMetric(cpu.Seconds(), "daemon-cpu-s")
		fmt.Fprintf(os.Stderr, "cold start of %d container tenants: %v in all, %v per tenant, daemon CPU %v (%v per tenant)\n",
			n, total.Round(time.Millisecond), (total / n).Round(time.Millisecond), cpu, cpu/n)
		for i := range n {
			d.call(b, asRoot, "io.bitbuilder.Tenant.Delete", fmt.Sprintf(`{"name":"c%d-%d"}`, it, i))
		}
		for i := range n {
			name := fmt.Sprintf("c%d-%d", it, i)
			eventually(b, 5*time.Minute, func() (bool, string) {
				r := d.call(b, asRoot, "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":%q}`, name))
				return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
			})
		}
	}
}

// idleCPU creates n tenants (without machines) in d, waits until they settled, and returns the daemon's CPU time
// over window, which with d's --resync of at most window includes one resync of every tenant.
func idleCPU(b *testing.B, d *daemon, n int, window time.Duration) time.Duration {
	var script strings.Builder
	for i := range n {
		fmt.Fprintf(&script, "varlinkctl call --oneway %s io.bitbuilder.Tenant.Create '{\"name\":\"idle%d\"}'\n", d.socket, i)
	}
	mustRun(b, d.h, "sh", "-c", script.String())
	eventually(b, 10*time.Minute, func() (bool, string) {
		ts := d.list(b)
		settled := 0
		for _, tn := range ts {
			if tn.Phase == "ready" {
				settled++
			}
		}
		return settled == n, fmt.Sprintf("%d of %d tenants ready", settled, n)
	})
	time.Sleep(2 * time.Second)
	cpu0 := daemonCPU(b, d)
	time.Sleep(window)
	return daemonCPU(b, d) - cpu0
}

// BenchmarkIdleCPU measures the daemon's CPU while nothing changes: with 1,000 tenant records (records only, so
// each pass is the reconciler's own cost) and with 100 tenants whose network and units are on the host (each
// pass compares namespaces, links, networkd files and units with the host). The resync is set to 60 s so that the
// 70 s window holds one pass of every tenant; the share of a core is then scaled to the default resync of
// 10 min (goal: under 0.5% of one core with 1,000 records).
func BenchmarkIdleCPU(b *testing.B) {
	const window = 70 * time.Second
	for range b.N {
		d := startDaemon(b, "idle", "--resync=60s", "--index-range=1-2000")
		cpu := idleCPU(b, d, 1000, window)
		share := cpu.Seconds() / window.Seconds()
		perPass := cpu / 1000
		scaled := perPass.Seconds() * 1000 / (10 * time.Minute).Seconds()
		b.ReportMetric(share*100, "records-1000-%core@60s")
		b.ReportMetric(scaled*100, "records-1000-%core@10m")
		fmt.Fprintf(os.Stderr, "idle, 1000 records: %v CPU in %v (%.3f%% of a core with a 60 s resync; %.4f%% with the default 10 min), %v per pass\n",
			cpu, window, share*100, scaled*100, perPass)

		h := startDaemon(b, "idlehost", "--no-host=false", "--resync=60s")
		cpu = idleCPU(b, h, 100, window)
		perPass = cpu / 100
		scaled = perPass.Seconds() * 1000 / (10 * time.Minute).Seconds()
		b.ReportMetric(float64(perPass.Microseconds()), "host-us/pass")
		b.ReportMetric(scaled*100, "host-1000-%core@10m")
		fmt.Fprintf(os.Stderr, "idle, 100 host tenants: %v CPU in %v, %v per pass; 1000 such tenants at the default 10 min resync: %.3f%% of a core\n",
			cpu, window, perPass, scaled*100)
	}
}
