package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// childLog returns a writer for a child process's log that the benchmark shows only when it
// fails: written to the benchmark's output, a log line would split its result line, and
// `make bench`'s summary would lose the figures.
func childLog(b *testing.B, name string) io.Writer {
	var buf lockedBuffer
	b.Cleanup(func() {
		if b.Failed() {
			b.Logf("%s's log:\n%s", name, buf.String())
		}
	})
	return &buf
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// procCPU returns the user+system CPU time of process pid so far (/proc/<pid>/stat).
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's closing parenthesis; utime and stime are the 14th and
	// 15th of the line.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// quiet waits until pid uses no CPU for 200 ms (the reconciler has caught up) and returns its
// CPU time then.
func quiet(b *testing.B, pid int) time.Duration {
	last := procCPU(b, pid)
	for {
		time.Sleep(200 * time.Millisecond)
		cur := procCPU(b, pid)
		if cur == last {
			return cur
		}
		last = cur
	}
}

// BenchmarkDaemonCPU runs bitbuilderd (the real binary, --no-host, durable) in its own process
// and drives it from this one with 1 and with 32 concurrent clients: n Creates, then 4n Gets. It
// reports the daemon's CPU time (utime+stime from /proc, the kernel's work for its writes and
// syncs included) per Create, the reconciler's passes and status writes included, and per Get.
// Goals: under 100 us per create, under 20 us per Get (create-cpu-ratio and get-cpu-ratio are
// the figures over the goals, at most 1).
func BenchmarkDaemonCPU(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { daemonCPU(b, clients) })
	}
}

func daemonCPU(b *testing.B, clients int) {
	n := max(b.N, 2000)
	bin := buildDaemon(b, b.TempDir())
	dir := b.TempDir()
	sock := filepath.Join(dir, "sock")
	cmd := exec.Command(bin, "--state-dir", filepath.Join(dir, "state"), "--socket", sock, "--no-ro-socket", "--no-host",
		"--index-range", "1-60000", "--admin-group", "root", "--log-level", "warn")
	cmd.Stderr = childLog(b, "bitbuilderd")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	pid := cmd.Process.Pid
	waitFor(b, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "bitbuilderd's socket")
	conns := make([]*client, clients)
	for i := range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = &client{t: b, conn: c, r: bufio.NewReader(c)}
	}
	run := func(per int, req func(g, i int) (string, string)) {
		var wg sync.WaitGroup
		for g, c := range conns {
			wg.Go(func() {
				for i := range per {
					method, params := req(g, i)
					if e, p, err := c.callLean(method, params); e != "" || err != nil {
						b.Errorf("call: %s %s %v", e, p, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.ResetTimer()
	c0 := quiet(b, pid)
	per := (n + clients - 1) / clients
	run(per, func(g, i int) (string, string) {
		return "io.bitbuilder.Tenant.Create", fmt.Sprintf(`{"name":"c-%d-%d"}`, g, i)
	})
	c1 := quiet(b, pid)
	run(4*per, func(g, i int) (string, string) {
		return "io.bitbuilder.Tenant.Get", fmt.Sprintf(`{"name":"c-%d-%d"}`, g, i%per)
	})
	c2 := procCPU(b, pid)
	b.StopTimer()
	create := float64((c1 - c0).Microseconds()) / float64(per*clients)
	get := float64((c2 - c1).Microseconds()) / float64(4*per*clients)
	b.ReportMetric(create, "cpu-us/create")
	b.ReportMetric(get, "cpu-us/get")
	b.ReportMetric(create/100, "create-cpu-ratio")
	b.ReportMetric(get/20, "get-cpu-ratio")
}
