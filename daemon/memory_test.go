package daemon

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// The out-of-process memory bound (ARCHITECTURE.md, "Untrusted templates" and "Limits"): a real bitbuilderd,
// started as a child under `prlimit --as`, refuses each class of hostile template repository and survives 4,096
// hostile connections, and its peak resident memory (VmHWM) while doing so is compared with its idle one.
const (
	// asHeadroom is what the daemon's address space may grow beyond its idle size under prlimit --as: inflating
	// the 1 GiB blob, checking out the 8 GiB tree or holding 64 connections' 8 MiB floods in memory, as before the
	// limits, would need more; what the limits leave costs a few MiB (the connections' worst mix about 190 MiB).
	asHeadroom = 768 << 20
	// repoRSSBound and connRSSBound are the resident memory above idle that refusing a hostile repository and
	// holding 4,096 hostile connections may take (ARCHITECTURE.md; measured: about 11 MiB and 110-136 MiB).
	repoRSSBound = 64 << 20
	connRSSBound = 256 << 20
	// inflateSize is the blob of zeros that compresses to about 1 MiB: four times the default
	// --template-max-object-size.
	inflateSize = 1 << 30
)

// hostileRepo is one class of hostile template repository, made in dir.
type hostileRepo struct {
	class string
	make  func(t testing.TB, dir string)
	want  string // in the refusal's text
}

var hostileRepos = []hostileRepo{
	// 1 MiB of '[' as metadata.json: the schema decoder built a path string per level (gigabytes).
	{"deep-metadata", func(t testing.TB, dir string) {
		writeRepo(t, dir, func(st *filesystem.Storage) []object.TreeEntry {
			return []object.TreeEntry{fileEntry(t, st, "metadata.json", bytes.Repeat([]byte("["), 1<<20-1))}
		})
	}, "nested deeper"},
	// A blob of 1 GiB of zeros, about 1 MiB compressed: fetched, it was held in memory before any limit applied.
	{"inflated-blob", func(t testing.TB, dir string) {
		writeRepo(t, dir, func(st *filesystem.Storage) []object.TreeEntry {
			bomb := zeroBlob(t, dir, inflateSize)
			return []object.TreeEntry{validMetadata(t, st), {Name: "rootfs", Mode: filemode.Regular, Hash: bomb}}
		})
	}, "MaxObjectSize"},
	// One 2 MiB blob named 4,096 times through 64 subtrees of 64 entries: an 8 GiB checkout from a small
	// repository, written on every checkout before.
	{"repeated-blob", func(t testing.TB, dir string) {
		writeRepo(t, dir, func(st *filesystem.Storage) []object.TreeEntry {
			blob := storeBlob(t, st, make([]byte, 2<<20))
			var inner, outer []object.TreeEntry
			for i := range 64 {
				inner = append(inner, object.TreeEntry{Name: fmt.Sprintf("f%02d", i), Mode: filemode.Regular, Hash: blob})
			}
			sub := storeTree(t, st, inner)
			for i := range 64 {
				outer = append(outer, object.TreeEntry{Name: fmt.Sprintf("d%02d", i), Mode: filemode.Dir, Hash: sub})
			}
			return []object.TreeEntry{validMetadata(t, st), {Name: "rootfs", Mode: filemode.Dir, Hash: storeTree(t, st, outer)}}
		})
	}, "MaxTotalSize"},
}

// writeRepo makes a repository in dir whose branch main (HEAD) has one commit of the tree entries returns.
func writeRepo(t testing.TB, dir string, entries func(*filesystem.Storage) []object.TreeEntry) {
	t.Helper()
	repo, err := gogit.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	st := repo.Storer.(*filesystem.Storage)
	tree := storeTree(t, st, entries(st))
	sig := object.Signature{Name: "hostile", Email: "hostile@example.org", When: time.Unix(1700000000, 0)}
	c := &object.Commit{Author: sig, Committer: sig, Message: "hostile\n", TreeHash: tree}
	obj := st.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := st.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	must(t, st.SetReference(plumbing.NewHashReference("refs/heads/main", h)))
	must(t, st.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main")))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func storeBlob(t testing.TB, st *filesystem.Storage, data []byte) plumbing.Hash {
	t.Helper()
	obj := st.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, err := obj.Writer()
	must(t, err)
	_, err = w.Write(data)
	must(t, err)
	must(t, w.Close())
	h, err := st.SetEncodedObject(obj)
	must(t, err)
	return h
}

func storeTree(t testing.TB, st *filesystem.Storage, entries []object.TreeEntry) plumbing.Hash {
	t.Helper()
	slices.SortFunc(entries, func(a, b object.TreeEntry) int { return strings.Compare(a.Name, b.Name) })
	obj := st.NewEncodedObject()
	must(t, (&object.Tree{Entries: entries}).Encode(obj))
	h, err := st.SetEncodedObject(obj)
	must(t, err)
	return h
}

func fileEntry(t testing.TB, st *filesystem.Storage, name string, data []byte) object.TreeEntry {
	return object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: storeBlob(t, st, data)}
}

// validMetadata is the example container template's metadata.json, so that a refusal is for the class's reason.
func validMetadata(t testing.TB, st *filesystem.Storage) object.TreeEntry {
	data, err := os.ReadFile("../examples/templates/container/metadata.json")
	must(t, err)
	return fileEntry(t, st, "metadata.json", data)
}

// zeroBlob writes a loose blob of size zero bytes into the bare repository at dir, streaming (go-git's object
// writer would hold it in memory), and returns its hash.
func zeroBlob(t testing.TB, dir string, size int64) plumbing.Hash {
	t.Helper()
	tmp, err := os.CreateTemp(dir, "blob-")
	must(t, err)
	defer os.Remove(tmp.Name())
	sum := sha1.New()
	zw, err := zlib.NewWriterLevel(tmp, zlib.BestSpeed)
	must(t, err)
	w := io.MultiWriter(zw, sum)
	fmt.Fprintf(w, "blob %d\x00", size)
	zeros := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(zeros)) {
		_, err := w.Write(zeros[:min(int64(len(zeros)), size-n)])
		must(t, err)
	}
	must(t, zw.Close())
	must(t, tmp.Close())
	h := hex.EncodeToString(sum.Sum(nil))
	must(t, os.MkdirAll(filepath.Join(dir, "objects", h[:2]), 0o755))
	must(t, os.Rename(tmp.Name(), filepath.Join(dir, "objects", h[:2], h[2:])))
	return plumbing.NewHash(h)
}

// childDaemon is bitbuilderd running as a child process.
type childDaemon struct {
	cmd    *exec.Cmd
	pid    int // the daemon's (prlimit execs it)
	socket string
	log    *bytes.Buffer
}

// buildDaemon builds cmd/bitbuilderd into dir.
func buildDaemon(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bitbuilderd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/bitbuilderd").CombinedOutput(); err != nil {
		t.Fatalf("build bitbuilderd: %v\n%s", err, out)
	}
	return bin
}

// startChild starts bin (records only: --no-host) with sockets in dir, under prlimit --as=asLimit when asLimit is
// not 0, and waits until it serves.
func startChild(t testing.TB, bin, dir string, asLimit int64) *childDaemon {
	t.Helper()
	args := []string{bin, "--no-host", "--socket", filepath.Join(dir, "io.bitbuilder"), "--state-dir", filepath.Join(dir, "state"),
		"--admin-group", "bitbuilder-test-nonexistent"}
	if asLimit != 0 {
		prlimit := testpolicy.RequireTool(t, "prlimit")
		args = append([]string{prlimit, "--as=" + strconv.FormatInt(asLimit, 10), "--"}, args...)
	}
	d := &childDaemon{cmd: exec.Command(args[0], args[1:]...), socket: filepath.Join(dir, "io.bitbuilder"), log: new(bytes.Buffer)}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = d.cmd.Process.Pid
	exited := make(chan struct{})
	go func() { d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return d
		}
		select {
		case <-exited:
			t.Fatalf("bitbuilderd exited at start: %v\n%s", d.cmd.ProcessState, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bitbuilderd does not serve after 20 s:\n%s", d.log)
		}
	}
}

// alive fails t unless the daemon still runs and answers.
func (d *childDaemon) alive(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(d.pid, 0); err != nil {
		t.Fatalf("bitbuilderd is gone: %v\n%s", err, d.log)
	}
	if r := d.call(t, "io.bitbuilder.Tenant.List", `{}`, true); r.Error != "" && r.Error != "io.bitbuilder.Tenant.NoSuchTenant" {
		t.Fatalf("bitbuilderd does not answer: %+v\n%s", r, d.log)
	}
}

// call makes one call on a new connection (with more: until the last reply, which it returns).
func (d *childDaemon) call(t testing.TB, method, params string, more bool) reply {
	t.Helper()
	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, d.log)
	}
	defer c.Close()
	msg := fmt.Sprintf(`{"method":%q,"parameters":%s,"more":%v}`, method, params, more)
	if _, err := c.Write(append([]byte(msg), 0)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReader(c)
	for {
		b, err := br.ReadBytes(0)
		if err != nil {
			t.Fatalf("%s: read reply: %v\n%s", method, err, d.log)
		}
		var r reply
		if err := json.Unmarshal(b[:len(b)-1], &r); err != nil {
			t.Fatalf("reply is not JSON: %q", b)
		}
		if !r.Continues {
			return r
		}
	}
}

// status reads a field of /proc/PID/status in bytes (VmHWM, VmRSS, VmPeak, VmSize).
func (d *childDaemon) status(t testing.TB, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid))
	if err != nil {
		t.Fatalf("%v\n%s", err, d.log)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, d.pid)
	return 0
}

// resetPeak makes VmHWM start again from the current resident size (proc(5), clear_refs 5).
func (d *childDaemon) resetPeak(t testing.TB) {
	t.Helper()
	must(t, os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.pid), []byte("5"), 0))
}

// memoryRun is what one run measures: the daemon's idle resident size and, per class, its peak while refusing.
type memoryRun struct {
	idle  int64
	peaks map[string]int64
	limit int64 // the address-space bound it ran under
}

// runHostile starts a built daemon under the address-space bound (its idle size plus asHeadroom, measured by a
// first start without a bound), has it refuse each hostile repository and, when conns, hold 4,096 hostile
// connections (as 16 other uids: root only), and returns the peaks. It fails t when the daemon does not survive
// or a repository is not refused for its class's reason.
func runHostile(t testing.TB, bin, repos string, conns bool) memoryRun {
	t.Helper()
	// The idle address space of this binary, without a bound.
	probe := startChild(t, bin, t.TempDir(), 0)
	probe.alive(t)
	limit := probe.status(t, "VmPeak") + asHeadroom
	probe.cmd.Process.Signal(syscall.SIGTERM)

	// Other uids (the hostile clients) run a binary in this directory and reach the read-only socket in it:
	// not below t.TempDir(), whose parent is 0700.
	dir, err := os.MkdirTemp("", "bbmemory")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	d := startChild(t, bin, dir, limit)
	d.alive(t)
	if r := d.call(t, "io.bitbuilder.Tenant.Create", `{"name":"bench"}`, false); r.Error != "" {
		t.Fatalf("Create: %+v", r)
	}
	run := memoryRun{idle: d.status(t, "VmRSS"), peaks: map[string]int64{}, limit: limit}
	for _, hr := range hostileRepos {
		d.resetPeak(t)
		r := d.call(t, "io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":%q,"url":%q,"ref":"main"}`, hr.class, filepath.Join(repos, hr.class)), true)
		if r.Error == "" || !strings.Contains(fmt.Sprint(r.Parameters), hr.want) {
			t.Errorf("%s: Template.Add = %s %v, want a refusal naming %s", hr.class, r.Error, r.Parameters, hr.want)
		}
		d.alive(t)
		run.peaks[hr.class] = d.status(t, "VmHWM")
	}
	if conns {
		testpolicy.RequireRoot(t, "to run the hostile clients as other uids")
		bin := filepath.Join(dir, "hostile")
		if out, err := exec.Command("go", "build", "-o", bin, "../rpc/testdata/hostile").CombinedOutput(); err != nil {
			t.Fatalf("build the hostile client: %v\n%s", err, out)
		}
		d.resetPeak(t)
		for i := range 16 {
			hostileClients(t, bin, uint32(60000+i), d.socket+".ro", 256, "idle,partial,flood,call,name", 8<<20)
		}
		// Hold them a while, root being served meanwhile.
		for range 20 {
			if r := d.call(t, "io.bitbuilder.Tenant.Get", `{"name":"bench"}`, false); r.Error != "" {
				t.Fatalf("root's Get under the hostile connections: %+v", r)
			}
			time.Sleep(100 * time.Millisecond)
		}
		d.alive(t)
		run.peaks["connections-4096"] = d.status(t, "VmHWM")
	}
	return run
}

// makeHostileRepos makes each class's repository under dir.
func makeHostileRepos(t testing.TB, dir string) {
	t.Helper()
	for _, hr := range hostileRepos {
		hr.make(t, filepath.Join(dir, hr.class))
	}
}

// TestHostileReposOutOfProcess runs a real bitbuilderd under `prlimit --as` (its idle address space plus
// asHeadroom): it refuses each hostile repository for the class's reason and keeps serving, and it survives
// 4,096 hostile connections, each time within the bound (exceeding it would end the process: Go's allocator
// fails). The peaks are logged; BenchmarkHostileMemory reports them as ratios.
func TestHostileReposOutOfProcess(t *testing.T) {
	testpolicy.Short(t, "builds bitbuilderd and a 1 GiB blob")
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	repos := filepath.Join(dir, "repos")
	makeHostileRepos(t, repos)
	run := runHostile(t, bin, repos, true)
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	t.Logf("address-space bound %.0f MiB; idle RSS %.1f MiB", mib(run.limit), mib(run.idle))
	for class, p := range run.peaks {
		t.Logf("%s: peak RSS %.1f MiB (%.2fx idle)", class, mib(p), float64(p)/float64(run.idle))
		bound := int64(repoRSSBound)
		if strings.HasPrefix(class, "connections") {
			bound = connRSSBound
		}
		if p-run.idle > bound {
			t.Errorf("%s: peak RSS %.1f MiB above idle, want at most %.0f MiB", class, mib(p-run.idle), mib(bound))
		}
	}
}

// BenchmarkHostileMemory reports a real bitbuilderd's peak resident memory (VmHWM) while refusing each class of
// hostile repository and while 4,096 hostile connections are open, against its idle resident memory in the same
// run (ratio), under the same address-space bound as TestHostileReposOutOfProcess.
func BenchmarkHostileMemory(b *testing.B) {
	dir := b.TempDir()
	bin := buildDaemon(b, dir)
	repos := filepath.Join(dir, "repos")
	makeHostileRepos(b, repos)
	for range b.N {
		run := runHostile(b, bin, repos, true)
		b.ReportMetric(float64(run.idle)/(1<<20), "idle-RSS-MiB")
		for class, p := range run.peaks {
			b.ReportMetric(float64(p)/float64(run.idle), class+"-ratio")
			b.ReportMetric(float64(p)/(1<<20), class+"-MiB")
		}
	}
}
