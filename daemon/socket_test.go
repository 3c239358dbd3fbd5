package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// TestReadOnlySocket: the read-only socket, 0666 beside the main one, serves the read
// methods (Get, List, Watch, introspection) to anyone and refuses every other call with
// PermissionDenied, root's included; a user outside the admin group cannot even connect to
// the main socket.
func TestReadOnlySocket(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "bbro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	d := startDaemonIn(t, dir, filepath.Join(t.TempDir(), "state"))
	ro := d.socket + ".ro"
	for path, mode := range map[string]os.FileMode{d.socket: 0o660, ro: 0o666} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %o", path, fi.Mode(), err, mode)
		}
	}
	tenantOf(t, dial(t, d.socket).call("io.bitbuilder.Tenant.Create", `{"name":"existing"}`))

	c := dial(t, ro)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"existing"}`))
	if list := c.callMore("io.bitbuilder.Tenant.List", `{}`); len(list) != 1 || list[0].Error != "" {
		t.Errorf("List on the read-only socket: %v", list)
	}
	if r := c.call("org.varlink.service.GetInfo", `{}`); r.Error != "" {
		t.Errorf("GetInfo on the read-only socket: %v", r)
	}
	wantError(t, c.callMore("io.bitbuilder.Template.List", `{}`)[0], "io.bitbuilder.Template.NoSuchTemplate", nil)
	for _, call := range [][2]string{
		{"io.bitbuilder.Tenant.Create", `{"name":"intruder"}`},
		{"io.bitbuilder.Tenant.Delete", `{"name":"existing"}`},
		{"io.bitbuilder.Tenant.Stop", `{"name":"existing"}`},
		{"io.bitbuilder.Network.Apply", `{"tenant":"existing"}`},
		{"io.bitbuilder.Template.Validate", `{"path":"/etc"}`},
	} {
		wantError(t, c.call(call[0], call[1]), "org.varlink.service.PermissionDenied", nil)
	}
	if tn := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"existing"}`)); tn["desiredState"] != "running" || tn["phase"] == "deleting" {
		t.Errorf("refused calls changed the tenant: %v", tn)
	}
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"intruder"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)

	// An unprivileged user reads through it (the auth helper: this binary as uid 65534).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	copyFile(t, self, bin)
	as := func(socket, call string) reply {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = []string{"BB_AUTH_SOCKET=" + socket, "BB_AUTH_CALL=" + call}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as uid 65534: %v", err)
		}
		var r reply
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("client output %q: %v", out, err)
		}
		return r
	}
	if r := as(ro, `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"existing"}}`); r.Error != "" {
		t.Errorf("uid 65534 Get on the read-only socket: %v", r)
	}
	if r := as(ro, `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"intruder"}}`); r.Error != "org.varlink.service.PermissionDenied" {
		t.Errorf("uid 65534 Create on the read-only socket: %v", r)
	}
	if r := as(d.socket, `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"existing"}}`); !strings.Contains(r.Error, "permission denied") {
		t.Errorf("uid 65534 on the 0660 socket: %v, want connect refused", r)
	}
}

// TestSocketActivationOfBothSockets passes both sockets as systemd does (LISTEN_FDS=2,
// LISTEN_FDNAMES=varlink:varlink-ro) to the daemon in a child process (crash_test.go's
// hook): it serves them as they are, read-only where named so, and makes none of its own.
func TestSocketActivationOfBothSockets(t *testing.T) {
	dir := t.TempDir()
	var files []*os.File
	for _, name := range []string{"rw", "ro"} {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		files = append(files, f)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// sh's $$ is the pid the daemon will have after exec, which LISTEN_PID must name.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, self)
	cmd.Env = append(os.Environ(), "BB_CRASH_STATE="+filepath.Join(dir, "state"), "BB_CRASH_SOCKET="+filepath.Join(dir, "own"),
		"LISTEN_FDS=2", "LISTEN_FDNAMES=varlink:varlink-ro")
	cmd.ExtraFiles = files // fds 3 and 4
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	waitFor(t, func() bool {
		c, err := net.Dial("unix", filepath.Join(dir, "rw"))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the daemon to serve the passed socket")

	tenantOf(t, dial(t, filepath.Join(dir, "rw")).call("io.bitbuilder.Tenant.Create", `{"name":"activated"}`))
	ro := dial(t, filepath.Join(dir, "ro"))
	tenantOf(t, ro.call("io.bitbuilder.Tenant.Get", `{"name":"activated"}`))
	wantError(t, ro.call("io.bitbuilder.Tenant.Delete", `{"name":"activated"}`), "org.varlink.service.PermissionDenied", nil)
	for _, own := range []string{"own", "own.ro"} {
		if _, err := os.Stat(filepath.Join(dir, own)); !os.IsNotExist(err) {
			t.Errorf("the daemon made its own socket %s beside the passed ones: %v", own, err)
		}
	}
}

func TestNoReadOnlySocket(t *testing.T) {
	d := startDaemon(t, func(c *Config) { c.NoReadOnlySocket = true })
	if _, err := os.Stat(d.socket + ".ro"); !os.IsNotExist(err) {
		t.Errorf("read-only socket made although disabled: %v", err)
	}
}

// hostileClients runs rpc/testdata/hostile as uid and returns once its connects were tried;
// the connections stay open until the benchmark ends.
func hostileClients(b testing.TB, bin string, uid uint32, socket string, n int, kinds string, size int) {
	b.Helper()
	cmd := exec.Command(bin, "-socket", socket, "-n", strconv.Itoa(n), "-kinds", kinds, "-size", strconv.Itoa(size))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready ") {
		b.Fatalf("hostile clients as uid %d: %q, %v\n%s", uid, line, err, stderr.Bytes())
	}
}

// BenchmarkHostileConnections opens 4,096 hostile connections to the daemon's read-only
// socket (every local user can reach it), from 16 unprivileged uids, 256 each, of each
// class of rpc/testdata/hostile and of all of them mixed: idle, half-sent calls, 8 MiB
// floods without a NUL, complete 8 MiB calls costly to check, and 8 MiB calls that pass the
// check, whose error reply repeats them and which are never read. It reports the daemon's
// peak heap (and heap+stacks) while they are open against its idle heap in the same run,
// and checks that root is served meanwhile.
func BenchmarkHostileConnections(b *testing.B) {
	testpolicy.RequireRoot(b, "to run clients as other uids")
	dir, err := os.MkdirTemp("", "bbhostile")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "hostile")
	if out, err := exec.Command("go", "build", "-o", bin, "../rpc/testdata/hostile").CombinedOutput(); err != nil {
		b.Fatalf("build the hostile client: %v\n%s", err, out)
	}
	for _, c := range []struct {
		kinds        string
		uids, perUID int
	}{
		{"idle,partial,flood,call,name", 16, 256},
		{"idle", 16, 256}, {"partial", 16, 256}, {"flood", 16, 256}, {"call", 16, 256}, {"name", 16, 256},
		// One connection's echoed calls are all answered: what a reply costs that repeats
		// its call, which 4,096 such connections mostly do not get to.
		{"name", 1, 1},
	} {
		name := fmt.Sprintf("%s/%d", strings.ReplaceAll(c.kinds, ",", "+"), c.uids*c.perUID)
		b.Run(name, func(b *testing.B) {
			for range b.N {
				hostileRun(b, dir, bin, c.kinds, c.uids, c.perUID)
			}
		})
	}
}

func hostileRun(b *testing.B, dir, bin, kinds string, uids, perUID int) {
	{
		d := startDaemonIn(b, dir, filepath.Join(b.TempDir(), "state"), func(c *Config) { c.NoSync = true })
		root := dial(b, d.socket)
		root.call("io.bitbuilder.Tenant.Create", `{"name":"bench"}`)

		// Twice: what pools kept from an earlier run goes with the second collection.
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		idleHeap, idleStack := m.HeapInuse, m.StackInuse
		peakHeap, peakStack, peakTotal := idleHeap, idleStack, idleHeap+idleStack
		stop, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				peakHeap, peakStack, peakTotal = max(peakHeap, m.HeapInuse), max(peakStack, m.StackInuse), max(peakTotal, m.HeapInuse+m.StackInuse)
			}
		}()

		t0 := time.Now()
		for i := range uids {
			hostileClients(b, bin, uint32(60000+i), d.socket+".ro", perUID, kinds, 8<<20)
		}
		opened := time.Since(t0)
		// Root is served while they hold everything they can.
		var worst time.Duration
		for range 20 {
			t1 := time.Now()
			if r := dial(b, d.socket).call("io.bitbuilder.Tenant.Get", `{"name":"bench"}`); r.Error != "" {
				b.Fatalf("root's Get under the hostile connections: %v", r)
			}
			worst = max(worst, time.Since(t1))
			time.Sleep(100 * time.Millisecond)
		}
		close(stop)
		<-sampled
		open := socketFDs(b)

		mib := func(n uint64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mib(idleHeap), "idle-heap-MiB")
		b.ReportMetric(mib(peakHeap), "peak-heap-MiB")
		b.ReportMetric(float64(peakHeap)/float64(idleHeap), "heap-ratio")
		b.ReportMetric(mib(idleStack), "idle-stack-MiB")
		b.ReportMetric(mib(peakStack), "peak-stack-MiB")
		b.ReportMetric(mib(peakTotal), "peak-heap+stack-MiB")
		b.ReportMetric(float64(peakTotal)/float64(idleHeap+idleStack), "heap+stack-ratio")
		b.ReportMetric(float64(worst.Microseconds())/1000, "root-get-worst-ms")
		b.Logf("%d hostile connects in %v; the daemon holds %d sockets at the end (the rest were refused or closed by a limit)",
			uids*perUID, opened.Round(time.Millisecond), open)
	}
}

// socketFDs counts this process's socket descriptors.
func socketFDs(b *testing.B) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
