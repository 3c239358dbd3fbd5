package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkTenants sets up and tears down n tenants (namespace, bridge with address, veth pair with the namespace
// side addressed and routed, marks) through the Manager, and the same operations as one `ip -batch` file, in the same
// run. The Manager does more than the batch (it observes first, checks conflicts, and installs the isolation filter);
// iproute2 cannot address another namespace from inside a batch file (`netns exec` there switches the batch itself),
// so the inside of each namespace is one `ip -n NS -batch` run per tenant, as any iproute2 script would do it. The
// namespaces are added and deleted by a batch of their own because the links live in the test's host namespace
// (`ip -n` runs in a private mount namespace, where `netns add` would not be seen).
// Reported: ms per tenant for each, and the ratio manager/ip.
//
//	go test -run '^$' -bench BenchmarkTenants -benchtime 1x ./netns
func BenchmarkTenants(b *testing.B) {
	requireRoot(b)
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("iproute2's ip is needed for the baseline")
	}
	for _, n := range []int{10, 50, 200} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			var mSetup, mDown, ipSetup, ipDown time.Duration
			for b.Loop() {
				e := newTestEnv(b, nil)
				ctx := b.Context()
				specs := make([]Spec, n)
				for i := range specs {
					specs[i] = Spec{Tenant: fmt.Sprintf("m%d", i), Index: i + 1}
				}
				start := time.Now()
				for _, s := range specs {
					if _, err := e.m.Ensure(ctx, s); err != nil {
						b.Fatal(err)
					}
				}
				mSetup += time.Since(start)
				start = time.Now()
				for _, s := range specs {
					if err := e.m.Teardown(ctx, s); err != nil {
						b.Fatal(err)
					}
				}
				mDown += time.Since(start)

				dir := b.TempDir()
				var nsAdd, up, down, nsDel strings.Builder
				for i := 1; i <= n; i++ {
					ns := fmt.Sprintf("%sip%d", e.prefix, i)
					inside := filepath.Join(dir, fmt.Sprintf("in%d", i))
					fmt.Fprintf(&nsAdd, "netns add %s\n", ns)
					fmt.Fprintf(&up, "link add ipbr-%d type bridge\nlink set dev ipbr-%d alias bitbuilder:ip%d\n", i, i, i)
					fmt.Fprintf(&up, "addr add 10.%d.0.1/24 dev ipbr-%d\nlink set ipbr-%d up\n", i, i, i)
					fmt.Fprintf(&up, "link add ipve-%d type veth peer name eth0 netns %s\n", i, ns)
					fmt.Fprintf(&up, "link set dev ipve-%d alias bitbuilder:ip%d\nlink set ipve-%d master ipbr-%d\nlink set ipve-%d up\n", i, i, i, i, i)
					in := fmt.Sprintf("link set lo up\nlink set dev eth0 alias bitbuilder:ip%d\naddr add 10.%d.0.2/24 dev eth0\nlink set eth0 up\nroute add default via 10.%d.0.1\n", i, i, i)
					if err := os.WriteFile(inside, []byte(in), 0o644); err != nil {
						b.Fatal(err)
					}
					fmt.Fprintf(&down, "link del ipve-%d\nlink del ipbr-%d\n", i, i)
					fmt.Fprintf(&nsDel, "netns del %s\n", ns)
				}
				run := func(script string, host bool) time.Duration {
					f := filepath.Join(dir, "batch")
					if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					args := []string{"-batch", f}
					if host {
						args = append([]string{"-n", e.host}, args...)
					}
					if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
						b.Fatalf("ip -batch: %v: %s", err, out)
					}
					return time.Since(start)
				}
				ipSetup += run(nsAdd.String(), false) + run(up.String(), true)
				start = time.Now()
				for i := 1; i <= n; i++ {
					ns := fmt.Sprintf("%sip%d", e.prefix, i)
					inside := filepath.Join(dir, fmt.Sprintf("in%d", i))
					if out, err := exec.Command("ip", "-n", ns, "-batch", inside).CombinedOutput(); err != nil {
						b.Fatalf("ip -n %s -batch: %v: %s", ns, err, out)
					}
				}
				ipSetup += time.Since(start)
				ipDown += run(down.String(), true) + run(nsDel.String(), false)
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*n) }
			b.ReportMetric(per(mSetup), "manager-setup-ms/tenant")
			b.ReportMetric(per(ipSetup), "ip-setup-ms/tenant")
			b.ReportMetric(float64(mSetup)/float64(ipSetup), "setup-ratio")
			b.ReportMetric(per(mDown), "manager-teardown-ms/tenant")
			b.ReportMetric(per(ipDown), "ip-teardown-ms/tenant")
			b.ReportMetric(float64(mDown)/float64(ipDown), "teardown-ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}
