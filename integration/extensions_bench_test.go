package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkExtensionPinChange: a running tenant with 10 containers and one sysext; each run changes the sysext's
// pin (Tenant.Update) and waits until every container merged the new commit, against the bare work the change
// needs done by a script in the same host, alternating: for each container, the new tree hard-linked beside the
// old, swapped into its /run/extensions, the container's own systemd-sysext refresh (unmerge and merge), the old
// tree removed, one container after the other. The script swaps to a third content, so every run of both really
// changes what is merged. The daemon's run includes what the script has ready: the checkout of the new commit,
// the compatibility check, its state; it has up to four containers merge at once.
// min/median/max of each and the ratio of the medians are reported (goal: at most 1.5x); no container may be
// restarted (their units' InvocationID and leaders are compared before and after).
func BenchmarkExtensionPinChange(b *testing.B) {
	const n = 10
	d := startDaemon(b, "extbench", "--no-host=false")
	h := d.h
	addContainerTemplate(b, d)
	rel := "usr/lib/extension-release.d/extension-release.bbx"
	version := func(v string) []repoFile {
		return []repoFile{{path: rel, content: "ID=debian\nVERSION_ID=13\n"}, {path: "usr/bin/bbx-hello", content: "#!/bin/sh\necho bbx " + v + "\n", exec: true}, {path: "opt/bbx/VERSION", content: v + "\n"}}
	}
	repo, commits := extensionRepo(b, "sysext", "bbx", version("v1"), version("v2"))
	addTemplateRepo(b, d, repo, "bbx", "sysext")
	var ms []string
	for i := range n {
		ms = append(ms, fmt.Sprintf(`{"name":"m%d","kind":"container","template":"deb"}`, i))
	}
	spec := func(commit string) string {
		return fmt.Sprintf(`"templates":[{"role":"container","name":"deb","template":"deb"},{"role":"sysext","name":"tools","template":"bbx","commit":%q}]`, commit)
	}
	d.create(b, fmt.Sprintf(`{"name":"bp","resources":{"cpus":2,"memoryBytes":8589934592,"storageBytes":107374182400},%s,"machines":[%s]}`, spec(commits[0]), strings.Join(ms, ",")))
	// Running, not waiting for addresses (what DHCP does under load is not what is measured here).
	var tn tenant
	eventually(b, machineBootTimeout, func() (bool, string) {
		tn = d.tenantCall(b, asRoot, "Get", `{"name":"bp"}`)
		up := 0
		for _, m := range tn.Machines {
			if m.Status != nil && m.Status.State == "running" && m.Status.Leader > 0 {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d of %d running", up, n)
	})
	machinesDir := d.stateDir + "/tenants/bp/machines"
	// merged counts the containers whose last merge is the sysext at commit.
	merged := func(commit string) int {
		out := mustRun(b, h, "sh", "-c", fmt.Sprintf(`grep -l '"sysext":"bbx@%s"' %s/*/extensions/state.json 2>/dev/null | wc -l`, commit, machinesDir))
		var k int
		fmt.Sscan(out, &k)
		return k
	}
	eventually(b, 2*time.Minute, func() (bool, string) { k := merged(commits[0]); return k == n, fmt.Sprintf("%d of %d merged", k, n) })

	leaders := map[string]int{}
	invocations := map[string]string{}
	var script, check strings.Builder
	// The third content the script swaps to, and the script's per-container work.
	script.WriteString("set -e\nV=/var/lib/extbench/v3\nif [ ! -d $V ]; then mkdir -p $V/usr/lib/extension-release.d $V/usr/bin $V/opt/bbx\n" +
		"printf 'ID=debian\\nVERSION_ID=13\\n' >$V/" + rel + "; printf '#!/bin/sh\\necho bbx v3\\n' >$V/usr/bin/bbx-hello; chmod 755 $V/usr/bin/bbx-hello; echo v3 >$V/opt/bbx/VERSION; fi\n")
	for _, m := range tn.Machines {
		leaders[m.Name] = m.Status.Leader
		invocations[m.Name] = showUnit(b, h, m.Status.Unit, "InvocationID")["InvocationID"]
		x := machinesDir + "/" + m.Name + "/extensions"
		fmt.Fprintf(&script, "rm -rf %[1]s/.bench-new %[1]s/.bench-old; mkdir %[1]s/.bench-new; cp -al $V/usr $V/opt %[1]s/.bench-new/\n", x)
		fmt.Fprintf(&script, "mv %[1]s/sysext/bbx %[1]s/.bench-old; mv %[1]s/.bench-new %[1]s/sysext/bbx\n", x)
		fmt.Fprintf(&script, "nsenter -t %d -a systemd-sysext refresh >/dev/null\nrm -rf %s/.bench-old\n", m.Status.Leader, x)
		fmt.Fprintf(&check, "echo %s $(nsenter -t %d -a bbx-hello)\n", m.Name, m.Status.Leader)
	}

	// quiet waits until the daemon is done with the tenant (its revision holds still for a second), so that
	// neither run meets a pass of the other's change still going on (the daemon would put back a directory the
	// script is swapping).
	quiet := func() {
		last := int64(-1)
		eventuallyEvery(b, time.Minute, time.Second, func() (bool, string) {
			rev := d.tenantCall(b, asRoot, "Get", `{"name":"bp"}`).Revision
			settled := rev == last
			last = rev
			return settled, fmt.Sprintf("revision %d still moving", rev)
		})
	}
	var ours, bare []time.Duration
	for i := range b.N {
		quiet()
		target := commits[(i+1)%2]
		start := time.Now()
		d.tenantCall(b, asRoot, "Update", fmt.Sprintf(`{"name":"bp",%s}`, spec(target)))
		eventuallyEvery(b, 2*time.Minute, 10*time.Millisecond, func() (bool, string) {
			k := merged(target)
			return k == n, fmt.Sprintf("%d of %d merged", k, n)
		})
		ours = append(ours, time.Since(start))
		want := "bbx v" + strconv.Itoa((i+1)%2+1)
		if out := mustRun(b, h, "sh", "-c", check.String()); strings.Count(out, want+"\n") != n {
			b.Errorf("run %d: after the pin change, want %q everywhere:\n%s", i, want, out)
		}

		quiet()
		start = time.Now()
		mustRun(b, h, "sh", "-c", script.String())
		bare = append(bare, time.Since(start))
		if out := mustRun(b, h, "sh", "-c", check.String()); strings.Count(out, "bbx v3") != n {
			b.Errorf("run %d: after the script's swap:\n%s", i, out)
		}
	}
	b.StopTimer()
	// What the last run merged is what each container shows; none was restarted.
	last := d.tenantCall(b, asRoot, "Get", `{"name":"bp"}`)
	for _, m := range last.Machines {
		if m.Status.Leader != leaders[m.Name] || showUnit(b, h, m.Status.Unit, "InvocationID")["InvocationID"] != invocations[m.Name] {
			b.Errorf("container %s was restarted (leader %d -> %d)", m.Name, leaders[m.Name], m.Status.Leader)
		}
		if r := inMachine(b, d, m.Status.Leader, "bbx-hello"); r.stdout != "bbx v3\n" {
			b.Errorf("container %s: bbx-hello says %q after the script's swap", m.Name, r.stdout)
		}
	}
	// The next call of this benchmark (go test calls it with b.N=1 first) starts from nothing.
	d.call(b, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"bp"}`)
	eventually(b, 5*time.Minute, func() (bool, string) {
		r := d.call(b, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"bp"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	olo, omed, ohi := summary(ours)
	slo, smed, shi := summary(bare)
	b.ReportMetric(float64(omed.Milliseconds()), "bitbuilderd-median-ms")
	b.ReportMetric(float64(smed.Milliseconds()), "bare-median-ms")
	b.ReportMetric(float64(omed)/float64(smed), "ratio")
	fmt.Fprintf(os.Stderr, "sysext pin change on %d running containers, %d runs: bitbuilderd min/median/max %v/%v/%v; bare work %v/%v/%v; ratio of medians %.2f\n",
		n, b.N, olo, omed, ohi, slo, smed, shi, float64(omed)/float64(smed))
}
