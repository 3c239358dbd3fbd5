package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/units"
)

// tmpfsDir is a temporary directory on a tmpfs when /dev/shm exists (generators write to /run, a tmpfs).
func tmpfsDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		return b.TempDir()
	}
	d, err := os.MkdirTemp("/dev/shm", "bitbuilder-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// BenchmarkVsSeed runs the built generator and the seed's two bash generators (tenant-generator, then
// mount-generator) on equivalent 1,000-tenant inputs, as processes, in the same run. The seed needs
// $BITBUILDER_SEED_DIR (the directory holding its scripts) and jq; the benchmark skips without them.
//
// Inputs: our registry gives every tenant an infrastructure VM, a sysext and a confext (4 units and a wants link:
// the extensions are handed to the machines, no mount unit);
// the seed gets {"tenants":[{"id":...}]} (3 units each) and a TENANT_BASE with one directory per tenant (2 mount
// units each). x-seed is seed time / our time.
func BenchmarkVsSeed(b *testing.B) {
	seed := os.Getenv("BITBUILDER_SEED_DIR")
	testpolicy.Require(b, seed != "", "BITBUILDER_SEED_DIR is not set: no seed generators to compare with")
	for _, tool := range []string{"bash", "jq", "base64"} {
		testpolicy.RequireTool(b, tool) // the seed generators need it
	}
	const n = 1000
	root := tmpfsDir(b)
	reg := units.Registry{Version: units.RegistryVersion}
	var ids []string
	tenantBase := filepath.Join(root, "tenant-base")
	for i := range n {
		name := fmt.Sprintf("tenant-%05d", i)
		reg.Tenants = append(reg.Tenants, units.RegistryTenant{Name: name, NetworkIndex: i + 1, Infra: true,
			Sysext: []string{"tools"}, Confext: []string{"net"}, Running: true})
		ids = append(ids, fmt.Sprintf(`{"id":%q}`, name))
		if err := os.MkdirAll(filepath.Join(tenantBase, name), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	ourReg := filepath.Join(root, "boot-registry.json")
	if err := units.WriteRegistry(ourReg, reg); err != nil {
		b.Fatal(err)
	}
	seedReg := filepath.Join(root, "tenants.json")
	if err := os.WriteFile(seedReg, []byte(`{"tenants":[`+strings.Join(ids, ",")+"]}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	runIn := func(dir string, env []string, args ...string) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(env, "PATH="+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%q: %v\n%s", args, err, out)
		}
	}
	count := func(dir string) int {
		entries, err := os.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		return len(entries)
	}
	var ours, theirs time.Duration
	var ourFiles, seedFiles int
	for b.Loop() {
		b.StopTimer()
		ourDir, seedDir := filepath.Join(root, "ours"), filepath.Join(root, "seed")
		for _, d := range []string{ourDir, seedDir} {
			if err := os.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		t := time.Now()
		runIn(ourDir, []string{"BITBUILDER_REGISTRY=" + ourReg, "SYSTEMD_LOG_TARGET=console"}, generatorBin, ourDir)
		ours += time.Since(t)
		t = time.Now()
		runIn(seedDir, []string{"TENANT_REGISTRY=" + seedReg}, "bash", filepath.Join(seed, "tenant-generator"), seedDir)
		runIn(seedDir, []string{"TENANT_BASE=" + tenantBase}, "bash", filepath.Join(seed, "mount-generator"), seedDir)
		theirs += time.Since(t)
		b.StopTimer()
		ourFiles, seedFiles = count(ourDir)-1+count(filepath.Join(ourDir, "multi-user.target.wants")), count(seedDir)
		os.RemoveAll(ourDir)
		os.RemoveAll(seedDir)
		b.StartTimer()
	}
	if seedFiles != 5*n || ourFiles != 7*n {
		b.Fatalf("seed wrote %d files (want %d), ours %d (want %d)", seedFiles, 5*n, ourFiles, 7*n)
	}
	b.ReportMetric(float64(theirs)/float64(ours), "x-seed")
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ours-ms")
	b.ReportMetric(float64(theirs.Milliseconds())/float64(b.N), "seed-ms")
}
