package template

import (
	"context"
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
	"github.com/bitbuilder/bitbuilder/template/validate"
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

// BenchmarkAddRootFS compares Add of a real-sized rootfs template, validated by the daemon's validator
// (validate.Tree, as bitbuilderd runs it), with `git clone --bare --no-local` plus `git checkout` of the same
// repository, then Update to a second commit on top (a few files changed) with `git fetch` plus `git reset --hard`
// of git's work tree, then Pin back to the first commit without the kept tree (a whole checkout) with a git
// checkout into a new directory (benchAddVsGit), alternating the order in the same run. It reports the ratios of
// wall-clock and CPU time (add/git-ratio: goal at most 1.5), the time of Add's phases (fetch, checkout, validate),
// and the process's peak resident memory (VmHWM, reset before each Add, Update and Pin) against its bound: at
// most twice the template's largest file plus rssFixedBound (rss-over-bound: goal at most 1).
func BenchmarkAddRootFS(b *testing.B) {
	src, largest := rootfsRepo(b)
	upd := updatableRepo(b, src)
	validator := func(ctx context.Context, dir, kind string) ([]string, error) {
		rep, err := validate.Tree(ctx, dir, validate.Kind(kind), validate.Options{})
		var out []string
		for _, f := range rep.Errors() {
			out = append(out, f.String())
		}
		return out, err
	}
	res := benchAddVsGit(b, "rootfs", upd.url, addBench{validate: validator, update: upd.moveMain, reset: upd.reset})
	bound := 2*largest + rssFixedBound
	b.ReportMetric(float64(res.addPeak)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(res.updatePeak)/(1<<20), "update-peak-rss-MiB")
	b.ReportMetric(float64(largest)/(1<<20), "largest-file-MiB")
	b.ReportMetric(float64(max(res.addPeak, res.updatePeak))/float64(bound), "rss-over-bound-ratio")
}

// rssFixedBound is the part of the bound on the peak resident memory of Add and Update that does not grow with
// the template's largest file (see ARCHITECTURE.md, "Template fetch"): the Go runtime and this test binary,
// go-git's object cache and the checkout's objectReader cache (objectCacheSize each), the indexer's delta bases
// (deltaBaseCacheSize), the checkout's queue (maxQueuedBytes) and buffers, and the garbage collector's headroom
// over all of them.
const rssFixedBound = 128 << 20

// updatable is a repository that borrows the objects of a bench repository (git alternates) and holds, besides
// its commit, a second one on top changing a few files; moveMain points main at the second, reset at the first.
type updatable struct {
	url             string
	moveMain, reset func()
}

func updatableRepo(b *testing.B, src string) updatable {
	dir := filepath.Join(b.TempDir(), "updatable.git")
	gitCmd(b, b.TempDir(), "init", "-q", "--bare", "-b", "main", dir)
	os.WriteFile(filepath.Join(dir, "objects", "info", "alternates"), []byte(filepath.Join(src, "objects")+"\n"), 0o644)
	first := gitCmd(b, src, "rev-parse", "refs/heads/main")
	work := b.TempDir()
	env := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = append(gitEnv(work), "GIT_DIR="+dir, "GIT_INDEX_FILE="+filepath.Join(work, "index"), "GIT_WORK_TREE="+work)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("git %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	env("read-tree", first)
	for name, content := range map[string]string{
		"metadata.json":           metaJSON("container", "1.0.1"),
		"rootfs/etc/motd":         "updated by the benchmark\n",
		"rootfs/etc/bench-update": strings.Repeat("a new file\n", 1000),
	} {
		p := filepath.Join(work, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
		env("update-index", "--add", name)
	}
	second := env("commit-tree", env("write-tree"), "-p", first, "-m", "second")
	set := func(c string) func() { return func() { env("update-ref", "refs/heads/main", c) } }
	set(first)()
	return updatable{url: dir, moveMain: set(second), reset: set(first)}
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

// resetPeakRSS starts VmHWM again from the current resident memory (proc(5), clear_refs).
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatal(err)
	}
}
