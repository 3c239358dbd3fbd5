package template

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// rootfsRepo returns a bare repository whose one commit holds metadata.json and, under rootfs/,
// the debootstrapped Debian trixie tree the test host is built from (BITBUILDER_TEST_CACHE,
// default /var/cache/bitbuilder-test): a template of real size. It is made once and kept in the
// cache beside that tree (keyed by the tree's directory name), so later runs cost nothing. It
// also returns the size of the tree's largest file.
func rootfsRepo(b *testing.B) (string, int64) {
	cache := os.Getenv("BITBUILDER_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/bitbuilder-test"
	}
	trees, _ := filepath.Glob(filepath.Join(cache, "rootfs-*"))
	tree := ""
	for _, t := range trees {
		if fi, err := os.Stat(t); err == nil && fi.IsDir() {
			tree = t
		}
	}
	testpolicy.Requiref(b, tree != "", "no debootstrapped rootfs in %s (the test host's cache; see integration/testhost)", cache)
	var largest int64
	filepath.WalkDir(tree, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				largest = max(largest, fi.Size())
			}
		}
		return nil
	})
	sum := sha256.Sum256([]byte(filepath.Base(tree) + metaJSON("container", "1.0.0")))
	repo := filepath.Join(cache, "bench-rootfs-template-"+hex.EncodeToString(sum[:8])+".git")
	if _, err := os.Stat(filepath.Join(repo, "HEAD")); err == nil {
		return repo, largest
	}
	// Made under a temporary name, renamed when complete. Device nodes, sockets and fifos
	// cannot be committed and are left out by git; files, symlinks and the executable bit are
	// kept, as in a template repository.
	tmp := repo + ".tmp-" + strconv.Itoa(os.Getpid())
	defer os.RemoveAll(tmp)
	git := func(env []string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = tree
		cmd.Env = append(gitEnv(tmp), append([]string{"GIT_DIR=" + tmp}, env...)...)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("git %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	start := time.Now()
	git(nil, "init", "-q", "--bare", "-b", "main", tmp)
	idx := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "index-rootfs"), "GIT_WORK_TREE=" + tree}
	git(idx, "add", "-A", "-f", ".")
	inner := git(idx, "write-tree")
	top := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "index-top"), "GIT_WORK_TREE=" + tree} // read-tree --prefix wants a work tree; nothing is written to it
	git(top, "read-tree", "--prefix=rootfs/", inner)
	meta := filepath.Join(tmp, "metadata.json")
	if err := os.WriteFile(meta, []byte(metaJSON("container", "1.0.0")), 0o644); err != nil {
		b.Fatal(err)
	}
	blob := git(nil, "hash-object", "-w", meta)
	git(top, "update-index", "--add", "--cacheinfo", "100644,"+blob+",metadata.json")
	commit := git(nil, "commit-tree", git(top, "write-tree"), "-m", "Debian trixie rootfs")
	git(nil, "update-ref", "refs/heads/main", commit)
	git(nil, "repack", "-adq")
	for _, f := range []string{"index-rootfs", "index-top", "metadata.json"} {
		os.Remove(filepath.Join(tmp, f))
	}
	if err := os.Rename(tmp, repo); err != nil {
		b.Fatal(err)
	}
	b.Logf("made %s from %s in %v", repo, tree, time.Since(start).Round(time.Second))
	return repo, largest
}

// BenchmarkAddRootFS compares Add of a real-sized rootfs template with `git clone --bare
// --no-local` plus `git checkout` of the same repository, alternating the two in the same run
// (as BenchmarkAdd does for 10,000 small files). It reports the ratio of wall-clock time (goal
// at most 1.5), of CPU time, and the process's peak resident memory against the template's
// largest file.
func BenchmarkAddRootFS(b *testing.B) {
	src, largest := rootfsRepo(b)
	benchAddVsGit(b, "rootfs", src)
	b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(largest)/(1<<20), "largest-file-MiB")
}

// peakRSS is this process's peak resident memory (VmHWM) in bytes.
func peakRSS(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
