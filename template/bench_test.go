package template

import (
	"context"
	"fmt"
	"golang.org/x/sys/unix"
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
// into a fresh directory, then a syncfs (Add's reply means durable). Both run in each iteration, in alternating order;
// the ratio Add/git is reported as add/git-ratio.
func BenchmarkAdd(b *testing.B) {
	benchAddVsGit(b, "many", manyFileRepo(b, 10_000), addBench{})
}

// addBench says what benchAddVsGit does besides Add: the registry's validator, and an Update after each Add.
type addBench struct {
	validate func(ctx context.Context, dir, kind string) ([]string, error)
	// update, when set, moves the source's main to a new commit; reset moves it back before each Add.
	update, reset func()
}

// addResult is what benchAddVsGit measured besides its metrics: the peak resident memory of the process during
// Add and during Update or Pin (the most over the iterations).
type addResult struct {
	addPeak, updatePeak int64
}

// benchAddVsGit runs Registry.Add of the repository src as template name against `git clone --bare --no-local`
// plus `git --work-tree=DIR checkout -f` of the same URL and a syncfs (syncWork), both in each iteration in
// alternating order, and reports
// their times, add/git-ratio and add/git-cpu-ratio, and the time of Add's phases. With opt.update it then runs
// Registry.Update, which starts from the tree Add kept, against `git fetch` plus `git reset --hard` of the clone's
// work tree (git's own update, which also writes only what changed) and a syncfs, and reports update/git-ratio and
// update/git-cpu-ratio; then Pin back to Add's commit with no kept tree (a whole verification checkout, as an
// Update after a tenant took the kept tree does) against a git checkout of that commit into a new directory, and
// reports pin-cold/git-ratio and pin-cold/git-cpu-ratio.
func benchAddVsGit(b *testing.B, name, src string, opt addBench) addResult {
	url := "file://" + src
	var addTotal, gitTotal, addCPU, gitCPU, updTotal, gitUpdTotal, updCPU, gitUpdCPU, gitSync time.Duration
	var pinTotal, gitPinTotal, pinCPU, gitPinCPU time.Duration
	phases := map[Phase]time.Duration{}
	var res addResult
	i := 0
	for b.Loop() {
		i++
		work := b.TempDir()
		bare := filepath.Join(work, "clone.git")
		runGit := func() {
			cpu := cpuTime()
			start := time.Now()
			gitCmd(b, work, "clone", "-q", "--bare", "--no-local", url, bare)
			tree := filepath.Join(work, "tree")
			os.MkdirAll(tree, 0o755)
			gitCmd(b, work, "--git-dir="+bare, "--work-tree="+tree, "checkout", "-q", "-f", "main", "--", ".")
			gitSync += syncWork(b, work)
			gitTotal += time.Since(start)
			gitCPU += cpuTime() - cpu
		}
		runGitUpdate := func() {
			cpu := cpuTime()
			start := time.Now()
			gitCmd(b, work, "--git-dir="+bare, "fetch", "-q", url, "+refs/heads/*:refs/heads/*")
			gitCmd(b, work, "--git-dir="+bare, "--work-tree="+filepath.Join(work, "tree"), "reset", "-q", "--hard", "main")
			syncWork(b, work)
			gitUpdTotal += time.Since(start)
			gitUpdCPU += cpuTime() - cpu
		}
		var r *Registry
		var added string // Add's commit
		runAdd := func() {
			var err error
			r, err = New(Config{Dir: filepath.Join(work, "cache"), Validate: opt.validate})
			if err != nil {
				b.Fatal(err)
			}
			resetPeakRSS(b)
			cpu := cpuTime()
			start := time.Now()
			phase, since := Phase(""), start
			progress := func(p Progress) {
				if p.Phase != phase {
					now := time.Now()
					phases[phase] += now.Sub(since)
					phase, since = p.Phase, now
				}
			}
			tm, err := r.Add(b.Context(), name, url, "", progress)
			if err != nil {
				b.Fatal(err)
			}
			added = tm.Commit
			phases[phase] += time.Since(since)
			addTotal += time.Since(start)
			r.cleanup.Wait() // the background removal of the scratch tree
			addCPU += cpuTime() - cpu
			res.addPeak = max(res.addPeak, peakRSS(b))
		}
		runUpdate := func() {
			resetPeakRSS(b)
			cpu := cpuTime()
			start := time.Now()
			if _, err := r.Update(b.Context(), name, nil); err != nil {
				b.Fatal(err)
			}
			updTotal += time.Since(start)
			r.cleanup.Wait()
			updCPU += cpuTime() - cpu
			res.updatePeak = max(res.updatePeak, peakRSS(b))
		}
		runPinCold := func() {
			r.dropKept(name)
			r.cleanup.Wait()
			resetPeakRSS(b)
			cpu := cpuTime()
			start := time.Now()
			if _, err := r.Pin(b.Context(), name, added); err != nil {
				b.Fatal(err)
			}
			pinTotal += time.Since(start)
			r.cleanup.Wait()
			pinCPU += cpuTime() - cpu
			res.updatePeak = max(res.updatePeak, peakRSS(b))
		}
		runGitPin := func() {
			cpu := cpuTime()
			start := time.Now()
			gitCheckout(b, bare, added, filepath.Join(work, "tree3"), filepath.Join(work, "index3"))
			gitPinTotal += time.Since(start)
			gitPinCPU += cpuTime() - cpu
		}
		if opt.reset != nil {
			opt.reset()
		}
		// Alternate the order so that neither side always runs first.
		if i%2 == 0 {
			runGit()
			runAdd()
		} else {
			runAdd()
			runGit()
		}
		if opt.update != nil {
			opt.update()
			if i%2 == 0 {
				runGitUpdate()
				runUpdate()
				runGitPin()
				runPinCold()
			} else {
				runUpdate()
				runGitUpdate()
				runPinCold()
				runGitPin()
			}
		}
		r.Close()
	}
	b.ReportMetric(float64(addTotal.Milliseconds())/float64(i), "add-ms/op")
	b.ReportMetric(float64(gitTotal.Milliseconds())/float64(i), "git-ms/op")
	b.ReportMetric(float64(gitSync.Milliseconds())/float64(i), "git-syncfs-ms/op")
	b.ReportMetric(float64(addTotal)/float64(gitTotal), "add/git-ratio")
	b.ReportMetric(float64(addCPU)/float64(gitCPU), "add/git-cpu-ratio")
	for ph, unit := range map[Phase]string{PhaseFetching: "fetch-ms/op", PhaseCheckout: "checkout-ms/op", PhaseValidating: "validate-ms/op"} {
		if d, ok := phases[ph]; ok {
			b.ReportMetric(float64(d.Milliseconds())/float64(i), unit)
		}
	}
	if opt.update != nil {
		b.ReportMetric(float64(updTotal.Milliseconds())/float64(i), "update-ms/op")
		b.ReportMetric(float64(updTotal)/float64(gitUpdTotal), "update/git-ratio")
		b.ReportMetric(float64(updCPU)/float64(gitUpdCPU), "update/git-cpu-ratio")
		b.ReportMetric(float64(pinTotal.Milliseconds())/float64(i), "pin-cold-ms/op")
		b.ReportMetric(float64(pinTotal)/float64(gitPinTotal), "pin-cold/git-ratio")
		b.ReportMetric(float64(pinCPU)/float64(gitPinCPU), "pin-cold/git-cpu-ratio")
	}
	return res
}

// gitCheckout checks commit of the bare repository out into the new directory tree with an index of its own,
// then flushes the file system (syncWork).
func gitCheckout(b *testing.B, bare, commit, tree, index string) {
	os.MkdirAll(tree, 0o755)
	cmd := exec.Command("git", "--git-dir="+bare, "--work-tree="+tree, "checkout", "-q", "-f", commit, "--", ".")
	cmd.Env = append(gitEnv(filepath.Dir(index)), "GIT_INDEX_FILE="+index)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git checkout: %v\n%s", err, out)
	}
	syncWork(b, tree)
}

// syncWork flushes the file system holding dir (syncfs) and returns how long that took. The git
// baselines end with it: Add, Update and Materialize answer only once what they wrote is on
// disk (one syncfs each), git makes nothing durable, and a baseline does the same work.
func syncWork(b *testing.B, dir string) time.Duration {
	start := time.Now()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
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
	r.dropKept("many") // every iteration checks out: none takes the tree verified by Add
	bare := r.repoPath("many")
	var matTotal, gitTotal, matCPU, gitCPU time.Duration
	i := 0
	for b.Loop() {
		i++
		work := b.TempDir()
		cpu := cpuTime()
		start := time.Now()
		gitCheckout(b, bare, tm.Commit, filepath.Join(work, "git-tree"), filepath.Join(work, "index"))
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
