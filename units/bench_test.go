package units

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchRegistry returns n tenants with every kind of unit: all have an infrastructure VM, a sysext and a confext,
// and are running, so each gives 6 unit files and a wants link.
func benchRegistry(n int) Registry {
	r := Registry{Version: RegistryVersion}
	for i := range n {
		r.Tenants = append(r.Tenants, RegistryTenant{
			Name: fmt.Sprintf("tenant-%05d", i), NetworkIndex: i + 1, Infra: true,
			Sysext: []string{"base-tools"}, Confext: []string{"net"}, Running: true,
		})
	}
	return r
}

// BenchmarkGenerate measures the generator's work (read and parse the registry file, render, write the units and
// links into an empty directory) against a baseline in the same run: a tight loop that writes the very same files
// and links from memory. x-baseline is generator time / baseline time (the goal is at most 2).
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			root := benchDir(b)
			regPath := filepath.Join(root, "boot-registry.json")
			reg := benchRegistry(n)
			if err := WriteRegistry(regPath, reg); err != nil {
				b.Fatal(err)
			}
			// The baseline's input: every file's name and content, rendered beforehand.
			type file struct {
				name    string
				content []byte
			}
			var files []file
			var links []string
			for _, rt := range reg.Tenants {
				us, err := Render(rt.Tenant(), Config{})
				if err != nil {
					b.Fatal(err)
				}
				for _, u := range us {
					files = append(files, file{u.Name, u.Content})
				}
				links = append(links, us[0].Name)
			}
			baseline := func(dir string) {
				if err := os.Mkdir(filepath.Join(dir, "multi-user.target.wants"), 0o755); err != nil {
					b.Fatal(err)
				}
				for _, f := range files {
					if err := os.WriteFile(filepath.Join(dir, f.name), f.content, 0o644); err != nil {
						b.Fatal(err)
					}
				}
				for _, l := range links {
					if err := os.Symlink("../"+l, filepath.Join(dir, "multi-user.target.wants", l)); err != nil {
						b.Fatal(err)
					}
				}
			}
			generate := func(dir string) {
				r, skipped, err := ReadRegistry(regPath)
				if err != nil || len(skipped) > 0 {
					b.Fatal(err, skipped)
				}
				rep, err := Generate(dir, r.Tenants, Config{})
				if err != nil || rep.Units != len(files) {
					b.Fatal(err, rep.Units, len(files))
				}
			}
			var genTime, baseTime time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				genDir, baseDir := filepath.Join(root, "gen"), filepath.Join(root, "base")
				for _, d := range []string{genDir, baseDir} {
					if err := os.Mkdir(d, 0o755); err != nil {
						b.Fatal(err)
					}
				}
				// Alternate which goes first, so neither always meets a warmer or fuller page cache.
				steps := []func(){
					func() { t := time.Now(); generate(genDir); genTime += time.Since(t) },
					func() { t := time.Now(); baseline(baseDir); baseTime += time.Since(t) },
				}
				if i%2 == 1 {
					steps[0], steps[1] = steps[1], steps[0]
				}
				b.StartTimer()
				steps[0]()
				steps[1]()
				b.StopTimer()
				os.RemoveAll(genDir)
				os.RemoveAll(baseDir)
				b.StartTimer()
				i++
			}
			b.ReportMetric(float64(genTime)/float64(baseTime), "x-baseline")
			b.ReportMetric(float64(genTime.Nanoseconds())/float64(i*n), "gen-ns/tenant")
			b.ReportMetric(float64(baseTime.Nanoseconds())/float64(i*n), "base-ns/tenant")
		})
	}
}

// BenchmarkRender is the rendering alone, per tenant.
func BenchmarkRender(b *testing.B) {
	t := Tenant{Name: "acme-prod", NetworkIndex: 7, Infra: true, Sysext: []string{"a", "b"}, Confext: []string{"c"}}
	for b.Loop() {
		if _, err := Render(t, Config{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDir is a temporary directory on the file system generators really write to: systemd's generator
// directories are under /run, a tmpfs, so the default is /dev/shm (a tmpfs too) when it exists, else the default
// temporary directory. $BITBUILDER_BENCH_DIR overrides it (to measure a disk file system, say).
func benchDir(b *testing.B) string {
	base := os.Getenv("BITBUILDER_BENCH_DIR")
	if base == "" {
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			base = "/dev/shm"
		} else {
			return b.TempDir()
		}
	}
	d, err := os.MkdirTemp(base, "bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}
