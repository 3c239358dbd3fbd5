package validate

import (
	"io/fs"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRootFS50k validates a root file system of 50,000 files and, in the same loop, walks the same tree
// with filepath.WalkDir, reading each directory and each entry's type as the validator's walk does (neither
// stats an entry it only classifies by type). It reports the validation's time per op and its ratio to the
// walk ("x-walk"; goal: at most 3).
func BenchmarkRootFS50k(b *testing.B) {
	dir := memTempDir(b)
	build(b, dir, goodRoot()...)
	makeFiles(b, filepath.Join(dir, "usr/share/many"), 50_000)
	opts := testOptions()
	opts.Bootable = true
	var walk, validate time.Duration
	entries := 0
	for b.Loop() {
		start := time.Now()
		entries = 0
		err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			_ = d.Type()
			entries++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		walk += time.Since(start)
		start = time.Now()
		rep, err := RootFS(b.Context(), dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		validate += time.Since(start)
		if len(rep.Findings) != 0 {
			b.Fatalf("findings:\n%s", dump(rep))
		}
	}
	if entries < 50_000 {
		b.Fatalf("walked %d entries", entries)
	}
	b.ReportMetric(float64(walk.Nanoseconds())/float64(b.N), "walk-ns/op")
	b.ReportMetric(float64(validate.Nanoseconds())/float64(b.N), "validate-ns/op")
	b.ReportMetric(float64(validate)/float64(walk), "x-walk")
}
