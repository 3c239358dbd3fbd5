package testhost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// shared is the host of the feature tests below; the lifecycle tests boot their own.
var shared = &Shared{Options: Options{Name: "feat"}}

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

// eventually retries check every 100 ms until it returns nil or timeout passes, and returns its last error.
func eventually(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func run(t *testing.T, h *Host, args ...string) string {
	t.Helper()
	out, _, err := h.Run(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestSystemIsRunning(t *testing.T) {
	h := shared.Host(t)
	out, _, _ := h.Run(t.Context(), "systemctl", "is-system-running")
	if s := strings.TrimSpace(string(out)); s != "running" && s != "degraded" {
		t.Fatalf("is-system-running = %q\n%s", s, run(t, h, "systemctl", "--failed", "--no-legend"))
	}
	if got := run(t, h, "hostname"); got != h.Name() {
		t.Errorf("hostname = %q, want the machine name %q", got, h.Name())
	}
	if got := run(t, h, "cat", "/proc/1/comm"); got != "systemd" {
		t.Errorf("PID 1 inside is %q, want systemd", got)
	}
	if c := h.ConsoleTail(200); !strings.Contains(c, "systemd 257") {
		t.Errorf("console shows no systemd 257 banner:\n%s", c)
	}
}

func TestSystemdVersionIs257(t *testing.T) {
	h := shared.Host(t)
	for _, tool := range []string{"varlinkctl", "systemctl", "machinectl", "networkctl", "systemd-sysext", "systemd-analyze", "systemd-nspawn"} {
		t.Run(tool, func(t *testing.T) {
			out := run(t, h, tool, "--version")
			// "systemd 257 (257.13-1~deb13u1)"
			f := strings.Fields(out)
			if len(f) < 2 || f[0] != "systemd" || f[1] != "257" {
				t.Fatalf("%s --version = %q, want systemd 257", tool, out)
			}
		})
	}
}

func TestMachinedAnswers(t *testing.T) {
	h := shared.Host(t)
	// machined is D-Bus activated by the first call (and exits again when idle).
	if out := run(t, h, "machinectl", "list"); !strings.Contains(out, "No machines.") && !strings.Contains(out, "listed.") {
		t.Fatalf("machinectl list = %q", out)
	}
	out := run(t, h, "busctl", "get-property", "org.freedesktop.machine1", "/org/freedesktop/machine1/machine/_2ehost",
		"org.freedesktop.machine1.Machine", "Class")
	if out != `s "host"` {
		t.Fatalf("class of .host over D-Bus = %q", out)
	}
}

func TestVarlinkMachineList(t *testing.T) {
	h := shared.Host(t)
	names := machineListVarlink(t, h)
	if !slices.Contains(names, ".host") {
		t.Fatalf("io.systemd.Machine.List = %q, want .host in it", names)
	}
}

// machineListVarlink returns the machine names io.systemd.Machine.List reports.
func machineListVarlink(t *testing.T, h *Host) []string {
	t.Helper()
	// machined is started on demand (D-Bus activation, or by the first machine); only then its Varlink socket exists.
	run(t, h, "systemctl", "start", "systemd-machined")
	out := run(t, h, "varlinkctl", "call", "--more", "--json=short", "/run/systemd/machine/io.systemd.Machine",
		"io.systemd.Machine.List", "{}")
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.Trim(sc.Text(), "\x1e \t") // JSON-SEQ record separators
		if line == "" {
			continue
		}
		var m struct {
			Name  string `json:"name"`
			Class string `json:"class"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("reply %q: %v", line, err)
		}
		names = append(names, m.Name)
	}
	return names
}

func TestNetworkd(t *testing.T) {
	h := shared.Host(t)
	if got := run(t, h, "systemctl", "is-active", "systemd-networkd"); got != "active" {
		t.Fatalf("systemd-networkd is %q", got)
	}
	if out := run(t, h, "networkctl", "list", "--no-legend"); !strings.Contains(out, " lo ") {
		t.Fatalf("networkctl list = %q, want lo", out)
	}
	const netdev = "/run/systemd/network/50-bbtest0.netdev"
	if err := h.WriteFile(netdev, []byte("[NetDev]\nName=bbtest0\nKind=bridge\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = h.Shell(ctx, "rm -f "+netdev+"; networkctl reload; ip link del bbtest0 2>/dev/null || true")
	})
	run(t, h, "networkctl", "reload")
	err := eventually(t.Context(), 10*time.Second, func() error {
		out, _, err := h.Run(t.Context(), "ip", "-d", "-o", "link", "show", "bbtest0")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), " bridge ") {
			return fmt.Errorf("bbtest0 is not a bridge: %s", out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bridge from %s: %v\n%s", netdev, err, h.JournalTail(t.Context(), 20, "-u", "systemd-networkd"))
	}
}

func TestNestedContainerRegistersWithMachined(t *testing.T) {
	h := shared.Host(t)
	ctx := t.Context()
	const tree = "/var/lib/machines/bbtiny"
	if _, err := h.Shell(ctx, `
		mkdir -p `+tree+`/usr/bin `+tree+`/usr/lib
		ln -sfn usr/bin `+tree+`/bin
		cp /usr/bin/busybox `+tree+`/usr/bin/busybox
		ln -sf busybox `+tree+`/usr/bin/sh
		printf 'ID=busybox\nNAME=tiny\n' > `+tree+`/usr/lib/os-release
	`); err != nil {
		t.Fatal(err)
	}
	if err := h.RunUnit(ctx, "bbtiny", "systemd-nspawn", "--quiet", "-D", tree, "-M", "bbtiny", "/usr/bin/busybox", "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.StopUnit(context.Background(), "bbtiny") })
	err := eventually(ctx, 15*time.Second, func() error {
		_, _, err := h.Run(ctx, "machinectl", "show", "bbtiny")
		return err
	})
	if err != nil {
		t.Fatalf("machinectl show bbtiny: %v\n%s", err, h.JournalTail(ctx, 30, "-u", "bbtiny"))
	}
	if got := run(t, h, "machinectl", "show", "bbtiny", "-p", "Class", "--value"); got != "container" {
		t.Errorf("class = %q, want container", got)
	}
	if names := machineListVarlink(t, h); !slices.Contains(names, "bbtiny") {
		t.Errorf("io.systemd.Machine.List = %q, want bbtiny", names)
	}
	if err := h.StopUnit(ctx, "bbtiny"); err != nil {
		t.Fatal(err)
	}
	err = eventually(ctx, 10*time.Second, func() error {
		if _, _, err := h.Run(ctx, "machinectl", "show", "bbtiny"); err == nil {
			return errors.New("bbtiny still registered")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExtensionsMerge(t *testing.T) {
	h := shared.Host(t)
	tests := []struct {
		tool, dir, release, file string
	}{
		{"systemd-sysext", "/var/lib/extensions/bbext", "usr/lib/extension-release.d/extension-release.bbext", "usr/share/bbext/hello"},
		{"systemd-confext", "/var/lib/confexts/bbconf", "etc/extension-release.d/extension-release.bbconf", "etc/bbconf/hello"},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			if err := h.WriteFile(tt.dir+"/"+tt.release, []byte("ID=_any\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := h.WriteFile(tt.dir+"/"+tt.file, []byte("merged\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = h.Shell(context.Background(), tt.tool+" unmerge; rm -rf "+tt.dir) })
			run(t, h, tt.tool, "merge")
			if got, err := h.ReadFile("/" + tt.file); err != nil || string(got) != "merged\n" {
				t.Fatalf("after merge /%s = %q, %v\n%s", tt.file, got, err, run(t, h, tt.tool, "status"))
			}
			run(t, h, tt.tool, "unmerge")
			if _, err := h.ReadFile("/" + tt.file); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("after unmerge /%s: err = %v, want not exist", tt.file, err)
			}
		})
	}
}

func TestRun(t *testing.T) {
	h := shared.Host(t)
	ctx := t.Context()
	_, stderr, err := h.Run(ctx, "/bin/sh", "-c", "echo oops >&2; exit 7")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode != 7 || strings.TrimSpace(string(ee.Stderr)) != "oops" || string(stderr) != "oops\n" {
		t.Fatalf("err = %#v, stderr %q; want ExitError with code 7 and stderr oops", err, stderr)
	}
	if !strings.Contains(err.Error(), "oops") {
		t.Errorf("error text %q lacks stderr", err)
	}
	if _, _, err := h.Run(ctx); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Run() = %v, want ErrInvalidOptions", err)
	}
	env := run(t, h, "env")
	for _, want := range []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"} {
		if !slices.Contains(strings.Split(env, "\n"), want) {
			t.Errorf("env inside lacks %s:\n%s", want, env)
		}
	}
	if strings.Contains(env, "GOPATH") || strings.Contains(env, "GOFLAGS") {
		t.Errorf("the test's environment leaked in:\n%s", env)
	}
	out, _, err := h.RunInput(ctx, strings.NewReader("abc"), "wc", "-c")
	if err != nil || strings.TrimSpace(string(out)) != "3" {
		t.Errorf("RunInput wc -c = %q, %v", out, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := h.Run(short, "sleep", "30"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run past its context = %v, want DeadlineExceeded", err)
	}
}

func TestRunUnit(t *testing.T) {
	h := shared.Host(t)
	ctx := t.Context()
	if err := h.RunUnit(ctx, "bbsleep", "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	if got := run(t, h, "systemctl", "is-active", "bbsleep.service"); got != "active" {
		t.Fatalf("bbsleep is %q", got)
	}
	if err := h.StopUnit(ctx, "bbsleep"); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := h.Run(ctx, "systemctl", "is-active", "bbsleep.service"); strings.TrimSpace(string(out)) == "active" {
		t.Fatal("bbsleep still active after StopUnit")
	}
	if err := h.RunUnit(ctx, "bbmissing", "/no/such/binary"); err == nil {
		t.Fatal("RunUnit of a missing binary succeeded")
	}
	_, _, _ = h.Run(ctx, "systemctl", "reset-failed", "bbmissing.service")
	for _, bad := range [][]string{{"", "true"}, {"a b", "true"}, {"x"}} {
		if err := h.RunUnit(ctx, bad[0], bad[1:]...); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("RunUnit(%q) = %v, want ErrInvalidOptions", bad, err)
		}
	}
}

func TestFiles(t *testing.T) {
	h := shared.Host(t)
	ctx := t.Context()
	tests := []struct {
		path string
		mode os.FileMode
		data string
	}{
		{"/etc/bbfiles/a/b/c.conf", 0o600, "one\n"},
		{"/run/bbfiles/exec.sh", 0o755, "#!/bin/sh\necho ran\n"},
		{"/tmp/bbfiles-empty", 0o644, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if err := h.WriteFile(tt.path, []byte(tt.data), tt.mode); err != nil {
				t.Fatal(err)
			}
			got := run(t, h, "stat", "-c", "%a %U %s", tt.path)
			if want := fmt.Sprintf("%o root %d", tt.mode, len(tt.data)); got != want {
				t.Errorf("stat inside = %q, want %q", got, want)
			}
			back, err := h.ReadFile(tt.path)
			if err != nil || string(back) != tt.data {
				t.Errorf("ReadFile = %q, %v", back, err)
			}
		})
	}
	// Overwrite truncates and sets the mode.
	if err := h.WriteFile("/etc/bbfiles/a/b/c.conf", []byte("2"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got := run(t, h, "sh", "-c", "stat -c %a /etc/bbfiles/a/b/c.conf; cat /etc/bbfiles/a/b/c.conf"); got != "640\n2" {
		t.Errorf("after overwrite: %q", got)
	}
	// Absolute symlinks resolve inside the host, never on the machine running the test.
	run(t, h, "ln", "-sfn", "/run/bbfiles-target", "/etc/bbfiles/link")
	if err := h.WriteFile("/etc/bbfiles/link", []byte("via link"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run(t, h, "cat", "/run/bbfiles-target"); got != "via link" {
		t.Errorf("write through link: target inside = %q", got)
	}
	if _, err := os.Lstat("/run/bbfiles-target"); err == nil {
		t.Errorf("write through an absolute symlink escaped to this machine's /run/bbfiles-target")
	}
	run(t, h, "ln", "-sfn", "../../../../../../etc/bbfiles/a", "/etc/bbfiles/up")
	if got, err := h.ReadFile("/etc/bbfiles/up/b/c.conf"); err != nil || string(got) != "2" {
		t.Errorf("read through a ../ symlink = %q, %v", got, err)
	}
	if err := h.MkdirAll("/srv/bbfiles/x/y", 0o750); err != nil {
		t.Fatal(err)
	}
	if got := run(t, h, "stat", "-c", "%F %a", "/srv/bbfiles/x/y"); got != "directory 750" {
		t.Errorf("MkdirAll made %q", got)
	}
	if _, err := h.ReadFile("/etc/bbfiles/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file = %v, want fs.ErrNotExist", err)
	}
	bad := []string{"relative/path", "", "/", "/.."}
	for _, p := range bad {
		if err := h.WriteFile(p, nil, 0o644); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("WriteFile(%q) = %v, want ErrInvalidOptions", p, err)
		}
		if _, err := h.ReadFile(p); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("ReadFile(%q) = %v, want ErrInvalidOptions", p, err)
		}
	}
	if err := h.WriteFile("/tmp/bbfiles-dir", nil, os.ModeDir|0o755); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("WriteFile with a directory mode = %v, want ErrInvalidOptions", err)
	}
	if _, err := h.Shell(ctx, "test ! -e /tmp/bbfiles-dir"); err != nil {
		t.Errorf("rejected WriteFile changed something: %v", err)
	}
}

func TestShared(t *testing.T) {
	s := &Shared{Options: Options{Name: "shr"}}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	a, b := s.Host(t), s.Host(t)
	if a != b {
		t.Fatal("Shared.Host booted two hosts")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Run(t.Context(), "true"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run after Stop = %v, want ErrStopped", err)
	}
	// A test asking for the shared host once it is down fails with a message that says so.
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Host(rec)
	}()
	<-done
	if !strings.Contains(rec.msg, "is down") {
		t.Errorf("Shared.Host of a stopped host: failure %q, want it to say the host is down", rec.msg)
	}
}

// fatalRecorder records a Fatalf and ends the goroutine, as testing.T does, without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// footprint is what a running host has on this machine, to check Stop removes all of it.
type footprint struct {
	state, cgroup         string
	pidNS, netNS, mountNS string
	leader                int
}

func footprintOf(t *testing.T, h *Host) footprint {
	t.Helper()
	fp := footprint{state: h.state, cgroup: h.cgroup, leader: h.Leader()}
	for _, ns := range []struct {
		name string
		dst  *string
	}{{"pid", &fp.pidNS}, {"net", &fp.netNS}, {"mnt", &fp.mountNS}} {
		path := fmt.Sprintf("/proc/%d/ns/%s", fp.leader, ns.name)
		v, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		*ns.dst = v
		// Hold the namespace until the test ends: a freed namespace's inode number is reused at once (by another
		// test's host, say), and a process in that new namespace would look like our leftover.
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	if fp.netNS == own {
		t.Fatal("the host shares this machine's network namespace")
	}
	return fp
}

// leftovers lists what of fp still exists on this machine.
func leftovers(fp footprint) []string {
	var left []string
	if _, err := os.Lstat(fp.state); err == nil {
		left = append(left, "state dir "+fp.state)
	}
	if _, err := os.Lstat(fp.cgroup); err == nil {
		left = append(left, "cgroup "+fp.cgroup)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, ns := range []struct{ name, want string }{{"pid", fp.pidNS}, {"net", fp.netNS}, {"mnt", fp.mountNS}} {
			if v, err := os.Readlink(p + "/ns/" + ns.name); err == nil && v == ns.want {
				left = append(left, fmt.Sprintf("process %s in the host's %s namespace", p, ns.name))
			}
		}
		if cg, err := os.ReadFile(p + "/cgroup"); err == nil && bytes.Contains(cg, []byte(filepath.Base(fp.cgroup))) {
			left = append(left, "process "+p+" in cgroup "+filepath.Base(fp.cgroup))
		}
	}
	// Mounts of the host's state dir or cgroup, in this and every other mount namespace still alive.
	mountinfos, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range append([]string{"/proc/self/mountinfo"}, mountinfos...) {
		mi, _ := os.ReadFile(p)
		for line := range strings.SplitSeq(string(mi), "\n") {
			if strings.Contains(line, fp.state) || strings.Contains(line, filepath.Base(fp.cgroup)) {
				left = append(left, p+": mount "+line)
			}
		}
	}
	return left
}

func TestStopLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		busy string // what runs inside before Stop
	}{
		{"idle", ""},
		{"busy", "nested"},
		{"powered-off", "poweroff"}, // the host ends on its own before Stop
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Start(t, Options{Name: "stop" + tt.name})
			ctx := t.Context()
			if tt.busy == "nested" {
				if err := h.RunUnit(ctx, "bbsleep", "sleep", "1000"); err != nil {
					t.Fatal(err)
				}
				run(t, h, "ip", "netns", "add", "bbinner")
				run(t, h, "ip", "link", "add", "bbbr0", "type", "bridge")
				run(t, h, "mount", "-t", "tmpfs", "tmpfs", "/mnt")
			}
			fp := footprintOf(t, h)
			// The check must see a running host: its processes, its overlay mount, its dir and cgroup.
			running := strings.Join(leftovers(fp), "\n")
			for _, want := range []string{"process", " - overlay overlay ", "state dir", "cgroup"} {
				if !strings.Contains(running, want) {
					t.Fatalf("footprint check misses %q of a running host:\n%s", want, running)
				}
			}
			select {
			case <-h.Done():
				t.Fatal("Done closed while the host runs")
			default:
			}
			if tt.busy == "poweroff" {
				run(t, h, "systemctl", "poweroff", "--no-block")
				select {
				case <-h.Done():
				case <-time.After(30 * time.Second):
					t.Fatal("the host did not end after poweroff")
				}
				if _, _, err := h.Run(ctx, "true"); !errors.Is(err, ErrStopped) {
					t.Errorf("Run on a host that powered off = %v, want ErrStopped", err)
				}
			}
			if err := h.Stop(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-h.Done():
			default:
				t.Error("Done not closed after Stop")
			}
			if left := leftovers(fp); len(left) > 0 {
				t.Fatalf("after Stop:\n%s", strings.Join(left, "\n"))
			}
			if err := h.Stop(); err != nil {
				t.Errorf("second Stop = %v, want nil", err)
			}
			if _, _, err := h.Run(ctx, "true"); !errors.Is(err, ErrStopped) {
				t.Errorf("Run after Stop = %v, want ErrStopped", err)
			}
			if err := h.WriteFile("/tmp/x", nil, 0o644); !errors.Is(err, ErrStopped) {
				t.Errorf("WriteFile after Stop = %v, want ErrStopped", err)
			}
		})
	}
}

func TestTwoHostsAtOnce(t *testing.T) {
	hosts := make([]*Host, 2)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() { hosts[i] = Start(t, Options{Name: "pair"}) })
	}
	wg.Wait()
	a, b := hosts[0], hosts[1]
	if a == nil || b == nil {
		t.FailNow() // Start already reported why
	}
	if a.Name() == b.Name() || a.Leader() == b.Leader() {
		t.Fatalf("hosts share name or leader: %s/%d %s/%d", a.Name(), a.Leader(), b.Name(), b.Leader())
	}
	fa, fb := footprintOf(t, a), footprintOf(t, b)
	if fa.netNS == fb.netNS || fa.mountNS == fb.mountNS || fa.cgroup == fb.cgroup {
		t.Fatalf("hosts share namespaces or cgroup: %+v %+v", fa, fb)
	}
	if err := a.WriteFile("/etc/only-in-a", []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadFile("/etc/only-in-a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a's file visible in b: %v", err)
	}
	rootfs, err := LocateRootfs(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc/only-in-a")); err == nil {
		t.Fatal("a write inside a host reached the cached rootfs")
	}
	for _, h := range hosts {
		if got := run(t, h, "systemctl", "is-active", "systemd-networkd", "dbus"); got != "active\nactive" {
			t.Errorf("%s: networkd, dbus = %q", h.Name(), got)
		}
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, b, "hostname"); got != b.Name() {
		t.Fatalf("b after a stopped: hostname %q", got)
	}
}

func TestBinds(t *testing.T) {
	bin, data := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "hello"), []byte("#!/bin/sh\necho hello from $(hostname)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := Start(t, Options{Name: "binds", Binds: []Bind{
		{Host: bin, Guest: "/opt/bitbuilder/bin", ReadOnly: true},
		{Host: data, Guest: "/var/lib/bbdata"},
	}})
	if got := run(t, h, "/opt/bitbuilder/bin/hello"); got != "hello from "+h.Name() {
		t.Errorf("bound binary said %q", got)
	}
	if _, err := h.Shell(t.Context(), "touch /opt/bitbuilder/bin/new"); err == nil {
		t.Error("wrote into a read-only bind")
	}
	run(t, h, "sh", "-c", "echo inside > /var/lib/bbdata/out")
	if got, err := os.ReadFile(filepath.Join(data, "out")); err != nil || string(got) != "inside\n" {
		t.Errorf("read-write bind: host sees %q, %v", got, err)
	}
}

func TestBadOptionsChangeNothing(t *testing.T) {
	testpolicy.RequireRoot(t, "New checks root first")
	existing := t.TempDir()
	tests := []struct {
		name string
		opts Options
	}{
		{"upper-case name", Options{Name: "Bad"}},
		{"name with dot", Options{Name: "a.b"}},
		{"long name", Options{Name: strings.Repeat("a", 41)}},
		{"relative bind host", Options{Binds: []Bind{{Host: "rel", Guest: "/x"}}}},
		{"relative bind guest", Options{Binds: []Bind{{Host: existing, Guest: "x"}}}},
		{"missing bind host", Options{Binds: []Bind{{Host: existing + "/none", Guest: "/x"}}}},
		{"colon in bind", Options{Binds: []Bind{{Host: existing, Guest: "/x:y"}}}},
		{"bind over root", Options{Binds: []Bind{{Host: existing, Guest: "/"}}}},
		{"negative timeout", Options{BootTimeout: -time.Second}},
		{"short nspawn option", Options{NspawnArgs: []string{"-b"}}},
		{"reserved nspawn option", Options{NspawnArgs: []string{"--directory=/"}}},
		{"reserved nspawn flag", Options{NspawnArgs: []string{"--ephemeral"}}},
		{"relative rootfs", Options{Rootfs: "rootfs"}},
		{"rootfs without systemd", Options{Rootfs: existing}},
		{"unknown variant", Options{Variant: "vms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Name == "" {
				tt.opts.Name = "badopt" + strconv.Itoa(os.Getpid()) // so that only this test's cgroups match
			}
			tt.opts.StateDir = t.TempDir()
			h, err := New(t.Context(), tt.opts)
			if !errors.Is(err, ErrInvalidOptions) {
				if h != nil {
					_ = h.Stop()
				}
				t.Fatalf("New = %v, want ErrInvalidOptions", err)
			}
			if entries, _ := os.ReadDir(tt.opts.StateDir); len(entries) > 0 {
				t.Errorf("state dir not empty: %v", entries)
			}
			root, err := cgroup2Root()
			if err != nil {
				t.Fatal(err)
			}
			if m, _ := filepath.Glob(filepath.Join(root, "nspawn-"+tt.opts.Name+"-*")); len(m) > 0 {
				t.Errorf("cgroups made: %v", m)
			}
		})
	}
}

func TestFailedBootLeavesNothing(t *testing.T) {
	requireHost(t)
	tests := []struct {
		name       string
		opts       Options
		wantReason string
	}{
		{"nspawn refuses", Options{NspawnArgs: []string{"--no-such-option"}}, "exited"},
		{"boot timeout", Options{BootTimeout: 400 * time.Millisecond}, "deadline"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Name = "fail" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i)
			tt.opts.StateDir = t.TempDir()
			h, err := New(t.Context(), tt.opts)
			if err == nil {
				_ = h.Stop()
				t.Fatal("New succeeded")
			}
			var be *BootError
			if !errors.As(err, &be) || !errors.Is(err, ErrBoot) || !strings.Contains(be.Reason, tt.wantReason) {
				t.Fatalf("New = %v, want a BootError saying %q", err, tt.wantReason)
			}
			if tt.name == "nspawn refuses" && !strings.Contains(be.Console, "no-such-option") {
				t.Errorf("console tail does not show nspawn's complaint: %q", be.Console)
			}
			if entries, _ := os.ReadDir(tt.opts.StateDir); len(entries) > 0 {
				t.Errorf("state dir not empty: %v", entries)
			}
			root, _ := cgroup2Root()
			if m, _ := filepath.Glob(filepath.Join(root, "nspawn-"+tt.opts.Name+"-*")); len(m) > 0 {
				t.Errorf("cgroups left: %v", m)
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
			for _, p := range procs {
				if cg, err := os.ReadFile(p); err == nil && strings.Contains(string(cg), "nspawn-"+tt.opts.Name) {
					t.Errorf("process left: %s: %s", p, cg)
				}
			}
		})
	}
}

func TestStartSkipsWithoutRootfs(t *testing.T) {
	for name, variant := range map[string]string{"default": VariantDefault, "vm": VariantVM} {
		var inner *testing.T
		t.Run(name, func(t *testing.T) {
			inner = t
			t.Setenv(EnvCache, t.TempDir())
			t.Setenv(EnvRequire, "")
			t.Setenv(EnvBuild, "")
			Start(t, Options{Variant: variant})
			t.Error("Start returned without a rootfs")
		})
		if !inner.Skipped() {
			t.Fatalf("Start (variant %q) did not skip without a rootfs", variant)
		}
	}
	// The error of a missing variant names the script that builds it.
	t.Setenv(EnvCache, t.TempDir())
	_, err := LocateVariant(t.Context(), VariantVM, false)
	if !errors.Is(err, ErrNoRootfs) || !strings.Contains(err.Error(), "prepare-vm.sh") {
		t.Errorf("LocateVariant(vm) in an empty cache = %v, want ErrNoRootfs naming prepare-vm.sh", err)
	}
}

// BenchmarkStartStop measures a host's boot (to `running`) and its Stop, and reports each.
func BenchmarkStartStop(b *testing.B) {
	var boot, stop time.Duration
	for b.Loop() {
		t0 := time.Now()
		h, err := New(b.Context(), Options{Name: "bench"})
		if err != nil {
			skipOrFatal(b, err)
		}
		t1 := time.Now()
		if err := h.Stop(); err != nil {
			b.Fatal(err)
		}
		boot, stop = boot+t1.Sub(t0), stop+time.Since(t1)
	}
	b.ReportMetric(boot.Seconds()/float64(b.N), "boot-s/op")
	b.ReportMetric(stop.Seconds()/float64(b.N), "stop-s/op")
}

func TestGoBuildBinaryInside(t *testing.T) {
	testpolicy.RequireRoot(t, "to boot a host")
	bin := GoBuild(t, "./integration/testhost/testdata/varlinkhello")
	h := Start(t, Options{Name: "gobuild", Binds: []Bind{{Host: bin, Guest: "/opt/bitbuilder/bin", ReadOnly: true}}})
	// machined is started on demand (D-Bus activation, or by the first machine); only then its Varlink socket exists.
	run(t, h, "systemctl", "start", "systemd-machined")
	out := run(t, h, "/opt/bitbuilder/bin/varlinkhello")
	if want := "host " + h.Name() + "\nmachine .host"; out != want {
		t.Fatalf("varlinkhello inside said %q, want %q", out, want)
	}
	// The same as a background unit, its output in the host's journal.
	if err := h.RunUnit(t.Context(), "bbhello", "/opt/bitbuilder/bin/varlinkhello"); err != nil {
		t.Fatal(err)
	}
	err := eventually(t.Context(), 10*time.Second, func() error {
		if j := h.JournalTail(t.Context(), 20, "-u", "bbhello", "-o", "cat"); !strings.Contains(j, "machine .host") {
			return fmt.Errorf("journal of bbhello: %q", j)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	h := shared.Host(t)
	tests := []struct {
		name, unit string
		ok         bool
	}{
		{"valid", "[Unit]\nDescription=ok\n[Service]\nExecStart=/usr/bin/true\n", true},
		{"unknown section", "[Unit]\nDescription=bad\n[Servce]\nExecStart=/usr/bin/true\n", false},
		{"missing binary", "[Service]\nExecStart=/no/such/binary\n", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fmt.Sprintf("/run/bbverify/bbverify%d.service", i)
			if err := h.WriteFile(path, []byte(tt.unit), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := h.Run(t.Context(), "systemd-analyze", "verify", "--man=no", path)
			if tt.ok && (err != nil || len(stderr) > 0) {
				t.Errorf("verify of a valid unit: %v, %s", err, stderr)
			}
			if !tt.ok && err == nil && len(stderr) == 0 {
				t.Errorf("verify of a broken unit said nothing")
			}
		})
	}
}

// TestEnvironmentDoesNotLeak: systemd-nspawn tells $NOTIFY_SOCKET when the container is ready; a test run as a
// systemd service (CI) has one, and the harness must not hand it on.
func TestEnvironmentDoesNotLeak(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	h := Start(t, Options{Name: "env"})
	if env := run(t, h, "env"); strings.Contains(env, "NOTIFY_SOCKET") {
		t.Errorf("NOTIFY_SOCKET reached a command inside:\n%s", env)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("systemd-nspawn notified the test's NOTIFY_SOCKET: %q", buf[:n])
	}
}

// TestNestedContainerOnBridge: a nested container joins a networkd bridge with --network-bridge (what tenant
// machines do), and an address on the bridge reaches the container's side of the veth.
func TestNestedContainerOnBridge(t *testing.T) {
	h := shared.Host(t)
	ctx := t.Context()
	const tree = "/var/lib/machines/bbnet"
	files := map[string]string{
		"/run/systemd/network/50-bbbr1.netdev":  "[NetDev]\nName=bbbr1\nKind=bridge\n",
		"/run/systemd/network/50-bbbr1.network": "[Match]\nName=bbbr1\n[Network]\nAddress=10.251.0.1/24\nConfigureWithoutCarrier=yes\n",
		// nspawn names the host side vb-MACHINE; networkd's own 80-container-vb.network must not take it.
		"/run/systemd/network/10-vb-bbnet.network": "[Match]\nName=vb-bbnet\n[Network]\nBridge=bbbr1\n",
	}
	for p, c := range files {
		if err := h.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = h.Shell(context.Background(), "systemctl stop bbnet; rm -f /run/systemd/network/*bb*; networkctl reload; ip link del bbbr1 || true")
	})
	if _, err := h.Shell(ctx, `
		networkctl reload
		mkdir -p `+tree+`/usr/bin `+tree+`/usr/lib
		ln -sfn usr/bin `+tree+`/bin
		cp /usr/bin/busybox `+tree+`/usr/bin/busybox
		printf 'ID=busybox\n' > `+tree+`/usr/lib/os-release
	`); err != nil {
		t.Fatal(err)
	}
	// Inside: bring host0 up with an address, then wait.
	script := "busybox ip link set host0 up; busybox ip addr add 10.251.0.2/24 dev host0; exec busybox sleep 1000"
	if err := h.RunUnit(ctx, "bbnet", "systemd-nspawn", "--quiet", "-D", tree, "-M", "bbnet", "--network-bridge=bbbr1",
		"/usr/bin/busybox", "sh", "-c", script); err != nil {
		t.Fatal(err)
	}
	err := eventually(ctx, 15*time.Second, func() error {
		out, _, err := h.Run(ctx, "ip", "-o", "link", "show", "master", "bbbr1")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "vb-bbnet") {
			return fmt.Errorf("bbbr1 ports: %q", out)
		}
		_, _, err = h.Run(ctx, "busybox", "ping", "-c1", "-W1", "10.251.0.2") // minbase has no ping of its own
		return err
	})
	if err != nil {
		t.Fatalf("nested container on bbbr1: %v\n%s", err, h.JournalTail(ctx, 30))
	}
}

// TestHostSurvivesThreadExits: the parent-death signal of systemd-nspawn fires when the OS thread that started it
// exits, and Go ends threads whose goroutine exits while locked to them (the usual way to drop a thread after
// setns, as netns code does). Such code in a test must not shut the host down.
func TestHostSurvivesThreadExits(t *testing.T) {
	h := Start(t, Options{Name: "threads"})
	for range 64 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		}()
		<-done
	}
	time.Sleep(500 * time.Millisecond) // a halting container would be on its way down by now
	if got := run(t, h, "systemctl", "is-system-running"); got != "running" && got != "degraded" {
		t.Fatalf("host after thread exits: %q", got)
	}
	if strings.Contains(h.ConsoleTail(50), "halt") {
		t.Fatalf("host is halting:\n%s", h.ConsoleTail(50))
	}
}

// BenchmarkRun measures one command inside the shared host (nsenter plus exec).
func BenchmarkRun(b *testing.B) {
	h := shared.Host(b)
	for b.Loop() {
		if _, _, err := h.Run(b.Context(), "true"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteFile measures writing a 4 KiB file into the shared host.
func BenchmarkWriteFile(b *testing.B) {
	h := shared.Host(b)
	data := bytes.Repeat([]byte("x"), 4096)
	for b.Loop() {
		if err := h.WriteFile("/run/bbbench/file", data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReboot: files survive a reboot, /run and transient units do not, enabled units start at boot, binds are
// back, and the first boot leaves nothing behind.
func TestReboot(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "bound"), []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := Start(t, Options{Name: "reboot", Binds: []Bind{{Host: data, Guest: "/srv/bbdata", ReadOnly: true}}})
	ctx := t.Context()
	files := map[string]string{
		"/etc/bbreboot":                        "kept\n",
		"/run/bbreboot":                        "gone\n",
		"/etc/systemd/system/bbatboot.service": "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
	}
	for p, c := range files {
		if err := h.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, h, "systemctl", "enable", "bbatboot.service")
	if err := h.RunUnit(ctx, "bbtransient", "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	first := footprintOf(t, h)
	done := h.Done()

	if err := h.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	default:
		t.Error("the first boot's Done is not closed")
	}
	if h.Leader() == first.leader {
		t.Errorf("same leader %d after reboot", first.leader)
	}
	boots := 0
	list := run(t, h, "journalctl", "--list-boots", "-q")
	for line := range strings.SplitSeq(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if _, err := strconv.Atoi(f[0]); err == nil {
				boots++
			}
		}
	}
	if boots != 2 {
		t.Errorf("journal lists %d boots, want 2:\n%s", boots, list)
	}
	if got, err := h.ReadFile("/etc/bbreboot"); err != nil || string(got) != "kept\n" {
		t.Errorf("/etc/bbreboot after reboot: %q, %v", got, err)
	}
	if _, err := h.ReadFile("/run/bbreboot"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/run/bbreboot after reboot: %v, want it gone", err)
	}
	if got, err := h.ReadFile("/srv/bbdata/bound"); err != nil || string(got) != "bound\n" {
		t.Errorf("bind after reboot: %q, %v", got, err)
	}
	if got := run(t, h, "systemctl", "is-active", "bbatboot.service"); got != "active" {
		t.Errorf("enabled unit after reboot: %q", got)
	}
	if out, _, _ := h.Run(ctx, "systemctl", "is-active", "bbtransient.service"); strings.TrimSpace(string(out)) == "active" {
		t.Error("transient unit survived the reboot")
	}
	if got := run(t, h, "hostname"); got != h.Name() {
		t.Errorf("hostname after reboot %q, want %q", got, h.Name())
	}
	// No process of the first boot is left (the state dir, cgroup and mounts are the second boot's now).
	for _, l := range leftovers(first) {
		if strings.Contains(l, "namespace") {
			t.Errorf("left from the first boot: %s", l)
		}
	}
	second := footprintOf(t, h)
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(second); len(left) > 0 {
		t.Fatalf("after Stop:\n%s", strings.Join(left, "\n"))
	}
	if err := h.Reboot(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("Reboot after Stop = %v, want ErrStopped", err)
	}
}
