package template

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// manyFileRepo makes a repository with n small distinct files in 100 files
// per directory, using git fast-import for speed, and returns its path.
func manyFileRepo(t testing.TB, n int) string {
	t.Helper()
	return manyFileRepoIn(t, filepath.Join(t.TempDir(), "many"), n)
}

// manyFileRepoIn makes that repository in dir.
func manyFileRepoIn(t testing.TB, dir string, n int) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	gitCmd(t, dir, "init", "-q", "-b", "main")
	var b strings.Builder
	fmt.Fprintf(&b, "commit refs/heads/main\ncommitter Test <test@example.invalid> 1767225600 +0000\ndata 4\nmany\n")
	meta := metaJSON("container", "1.0.0")
	fmt.Fprintf(&b, "M 100644 inline metadata.json\ndata %d\n%s\n", len(meta), meta)
	for i := range n {
		content := fmt.Sprintf("file %d\n%s\n", i, strings.Repeat("content line of a template file\n", i%20))
		mode := "100644"
		if i%10 == 0 {
			mode = "100755"
		}
		fmt.Fprintf(&b, "M %s inline rootfs/usr/share/d%04d/f%05d\ndata %d\n%s\n", mode, i/100, i, len(content), content)
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, out)
	}
	gitCmd(t, dir, "repack", "-adq")
	return dir
}

// BenchmarkAdd compares Add (go-git fetch into a bare repository, resolve,
// metadata.json, checkout into scratch space) of a 10,000-file repository
// with the git CLI doing the same work: `git clone --bare` of the same local
// URL (no hardlinks: --no-local) plus `git --work-tree=DIR checkout -f`
// into a fresh directory. Both run in each iteration, in alternating order;
// the ratio Add/git is reported as add/git-ratio.
func BenchmarkAdd(b *testing.B) {
	benchAddVsGit(b, "many", manyFileRepo(b, 10_000))
}

// benchAddVsGit runs Registry.Add of the repository src as template name against `git clone --bare --no-local`
// plus `git --work-tree=DIR checkout -f` of the same URL, both in each iteration in alternating order, and reports
// their times, add/git-ratio and add/git-cpu-ratio.
func benchAddVsGit(b *testing.B, name, src string) {
	url := "file://" + src
	var addTotal, gitTotal, addCPU, gitCPU time.Duration
	i := 0
	for b.Loop() {
		i++
		work := b.TempDir()
		runGit := func() {
			cpu := cpuTime()
			start := time.Now()
			bare := filepath.Join(work, "clone.git")
			gitCmd(b, work, "clone", "-q", "--bare", "--no-local", url, bare)
			tree := filepath.Join(work, "tree")
			os.MkdirAll(tree, 0o755)
			gitCmd(b, work, "--git-dir="+bare, "--work-tree="+tree, "checkout", "-q", "-f", "main", "--", ".")
			gitTotal += time.Since(start)
			gitCPU += cpuTime() - cpu
		}
		runAdd := func() {
			r, err := New(Config{Dir: filepath.Join(work, "cache")})
			if err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime()
			start := time.Now()
			if _, err := r.Add(b.Context(), name, url, "", nil); err != nil {
				b.Fatal(err)
			}
			addTotal += time.Since(start)
			r.Close() // waits for the background removal of the scratch tree
			addCPU += cpuTime() - cpu
		}
		// Alternate the order so that neither side always runs first.
		if i%2 == 0 {
			runGit()
			runAdd()
		} else {
			runAdd()
			runGit()
		}
	}
	b.ReportMetric(float64(addTotal.Milliseconds())/float64(i), "add-ms/op")
	b.ReportMetric(float64(gitTotal.Milliseconds())/float64(i), "git-ms/op")
	b.ReportMetric(float64(addTotal)/float64(gitTotal), "add/git-ratio")
	b.ReportMetric(float64(addCPU)/float64(gitCPU), "add/git-cpu-ratio")
}

// cpuTime is the CPU time (user and system) used so far by this process
// and its waited-for children (the git commands, and the git-upload-pack
// go-git runs for file:// URLs). Wall-clock ratios on a loaded shared
// machine are noisy; CPU time is not.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	d := func(tv syscall.Timeval) time.Duration { return time.Duration(tv.Nano()) }
	return d(self.Utime) + d(self.Stime) + d(children.Utime) + d(children.Stime)
}

// BenchmarkMaterialize compares Materialize of a 10,000-file commit into a
// new target (checkout from the cache, layout dirs, syncfs, rename) with
// `git --work-tree=DIR checkout -f` of the same commit from the same cached
// bare repository, with a fresh index file, in the same run. git does not
// sync the files it writes; Materialize does (one syncfs). The ratio
// Materialize/git is reported as materialize/git-ratio.
func BenchmarkMaterialize(b *testing.B) {
	src := manyFileRepo(b, 10_000)
	r := newRegistry(b, Config{})
	tm, err := r.Add(b.Context(), "many", src, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	bare := r.repoPath("many")
	var matTotal, gitTotal, matCPU, gitCPU time.Duration
	i := 0
	for b.Loop() {
		i++
		work := b.TempDir()
		tree := filepath.Join(work, "git-tree")
		os.MkdirAll(tree, 0o755)
		cpu := cpuTime()
		start := time.Now()
		cmd := exec.Command("git", "--git-dir="+bare, "--work-tree="+tree, "checkout", "-q", "-f", tm.Commit, "--", ".")
		cmd.Env = append(gitEnv(work), "GIT_INDEX_FILE="+filepath.Join(work, "index"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git checkout: %v\n%s", err, out)
		}
		gitTotal += time.Since(start)
		gitCPU += cpuTime() - cpu

		cpu = cpuTime()
		start = time.Now()
		if err := r.Materialize(b.Context(), "many", tm.Commit, "", filepath.Join(work, "tree"), layoutDirs); err != nil {
			b.Fatal(err)
		}
		matTotal += time.Since(start)
		matCPU += cpuTime() - cpu
	}
	b.ReportMetric(float64(matTotal.Milliseconds())/float64(i), "materialize-ms/op")
	b.ReportMetric(float64(gitTotal.Milliseconds())/float64(i), "git-ms/op")
	b.ReportMetric(float64(matTotal)/float64(gitTotal), "materialize/git-ratio")
	b.ReportMetric(float64(matCPU)/float64(gitCPU), "materialize/git-cpu-ratio")
}
