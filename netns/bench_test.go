package netns

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// BenchmarkTenants sets up and tears down n tenants (namespace with lo up, bridge with its address, veth pair with
// the namespace side addressed and routed, marks) through the Manager, and the same operations with iproute2, in
// the same run. Reported: ms per tenant for each, and the ratio manager/ip. The Manager does more than the script:
// it observes first, checks conflicts, and installs the isolation filter.
//
// iproute2 cannot address another namespace from inside a batch file (`netns exec` there switches the batch
// itself), so the script is one `ip -batch` file for the host side plus one `ip -n NS -batch` run per tenant for
// the inside of its namespace, as any iproute2 script would do it. The namespaces are added and deleted by a batch
// of their own because the links live in the test's host namespace (`ip -n` runs in a private mount namespace,
// where `netns add` would not be seen).
//
// The machine is shared, so its load changes by the second: the two sides take turns in chunks of 10 tenants
// (one batch file per chunk), setup and teardown alike, so that both see the same conditions. Deleting a namespace
// returns at once and the kernel dismantles it asynchronously, competing with later link changes for the RTNL
// lock; each teardown chunk therefore starts after a pause, so neither side pays for the other's cleanup.
//
// Tenants take their networks from 16.0.0.0/6 (1,024 /16s, inside the test's own host namespace), so that up
// to 1,000 fit. flatness is the Manager's set-up time per tenant at this size over that at 10 tenants, measured
// in the same run (goal: at most 1.3 at 1,000), and ip-flatness the same for ip -batch (the kernel's own
// growth: link and namespace operations slow down with their number), and kernel-flatness the Manager's at 10
// plus ip's growth in ms over the Manager's at 10; setup-ratio's goal at 1,000 is at most 1.2.
//
//	go test -run '^$' -bench BenchmarkTenants -benchtime 1x ./netns
func BenchmarkTenants(b *testing.B) {
	requireRoot(b)
	testpolicy.RequireTool(b, "ip") // iproute2, for the baseline
	const chunk = 10
	var perAt10, ipPerAt10 float64 // set-up ms per tenant at 10 tenants: the Manager's, ip's
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			var mSetup, mDown, ipSetup, ipDown time.Duration
			for b.Loop() {
				e := newTestEnv(b, func(c *Config) {
					c.BasePrefix, c.MaxIndex = netip.MustParsePrefix("16.0.0.0/6"), 1023
				})
				spec := func(i int) Spec { return Spec{Tenant: fmt.Sprintf("m%d", i), Index: i} }
				var ups, downs []func()
				for from := 1; from <= n; from += chunk {
					up, down := ipScripts(b, e, from, min(from+chunk-1, n))
					ups, downs = append(ups, up), append(downs, down)
				}
				for c, from := 0, 1; from <= n; c, from = c+1, from+chunk {
					to := min(from+chunk-1, n)
					ipSetup += measure(0, ups[c])
					mSetup += measure(0, func() {
						for i := from; i <= to; i++ {
							if _, err := e.m.Ensure(b.Context(), spec(i)); err != nil {
								b.Fatal(err)
							}
						}
					})
				}
				for c, from := 0, 1; from <= n; c, from = c+1, from+chunk {
					to := min(from+chunk-1, n)
					mDown += measure(time.Second, func() {
						for i := from; i <= to; i++ {
							if err := e.m.Teardown(b.Context(), spec(i)); err != nil {
								b.Fatal(err)
							}
						}
					})
					ipDown += measure(time.Second, downs[c])
				}
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*n) }
			b.ReportMetric(per(mSetup), "manager-setup-ms/tenant")
			b.ReportMetric(per(ipSetup), "ip-setup-ms/tenant")
			b.ReportMetric(float64(mSetup)/float64(ipSetup), "setup-ratio")
			if n == 10 {
				perAt10, ipPerAt10 = per(mSetup), per(ipSetup)
			} else if perAt10 > 0 {
				b.ReportMetric(per(mSetup)/perAt10, "flatness")
				// The same for ip -batch: what the kernel's own scaling allows.
				b.ReportMetric(per(ipSetup)/ipPerAt10, "ip-flatness")
				// ip's per-tenant cost includes a process per namespace, which does not grow; its growth
				// in ms is the kernel's. kernel-flatness is the Manager's flatness had it grown by that
				// much: the bound the kernel sets on flatness.
				b.ReportMetric((perAt10+per(ipSetup)-ipPerAt10)/perAt10, "kernel-flatness")
			}
			b.ReportMetric(per(mDown), "manager-teardown-ms/tenant")
			b.ReportMetric(per(ipDown), "ip-teardown-ms/tenant")
			b.ReportMetric(float64(mDown)/float64(ipDown), "teardown-ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// measure pauses (letting the kernel finish earlier asynchronous namespace cleanup), then times fn.
func measure(pause time.Duration, fn func()) time.Duration {
	time.Sleep(pause)
	start := time.Now()
	fn()
	return time.Since(start)
}

// ipScripts writes the iproute2 equivalent of tenants from..to (names of their own, and 10.i.1.0/24 next to the
// Manager's bridge network in the tenant's /16) and returns functions running its setup and teardown.
func ipScripts(b *testing.B, e *testEnv, from, to int) (setup, teardown func()) {
	dir := b.TempDir()
	var nsAdd, up, down, nsDel strings.Builder
	for i := from; i <= to; i++ {
		ns := fmt.Sprintf("%sip%d", e.prefix, i)
		blk := e.m.Prefixes(i).Block.Addr().As4()
		net := fmt.Sprintf("%d.%d.1", blk[0], blk[1]) // the tenant's /16, third octet 1
		fmt.Fprintf(&nsAdd, "netns add %s\n", ns)
		fmt.Fprintf(&up, "link add ipbr-%d type bridge\nlink set dev ipbr-%d alias bitbuilder:ip%d\n", i, i, i)
		fmt.Fprintf(&up, "addr add %s.1/24 dev ipbr-%d\nlink set ipbr-%d up\n", net, i, i)
		fmt.Fprintf(&up, "link add ipve-%d type veth peer name eth0 netns %s\n", i, ns)
		fmt.Fprintf(&up, "link set dev ipve-%d alias bitbuilder:ip%d\nlink set ipve-%d master ipbr-%d\nlink set ipve-%d up\n", i, i, i, i, i)
		in := fmt.Sprintf("link set lo up\nlink set dev eth0 alias bitbuilder:ip%d\naddr add %s.2/24 dev eth0\nlink set eth0 up\nroute add default via %s.1\n", i, net, net)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("in%d", i)), []byte(in), 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&down, "link del ipve-%d\nlink del ipbr-%d\n", i, i)
		fmt.Fprintf(&nsDel, "netns del %s\n", ns)
	}
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	batch := func(name, script string, netns string) {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
			b.Fatal(err)
		}
		if netns != "" {
			ip("-n", netns, "-batch", f)
		} else {
			ip("-batch", f)
		}
	}
	setup = func() {
		batch("nsadd", nsAdd.String(), "")
		batch("up", up.String(), e.host)
		for i := from; i <= to; i++ {
			ip("-n", fmt.Sprintf("%sip%d", e.prefix, i), "-batch", filepath.Join(dir, fmt.Sprintf("in%d", i)))
		}
	}
	teardown = func() {
		batch("down", down.String(), e.host)
		batch("nsdel", nsDel.String(), "")
	}
	return setup, teardown
}
