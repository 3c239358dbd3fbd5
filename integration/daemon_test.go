package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Units of the socket-activation test, written to /run/systemd/system in the test host when the
// repository has no packaging/bitbuilderd.{socket,service} of its own.
const (
	socketUnit = `[Unit]
Description=BitBuilder control socket

[Socket]
ListenStream=/run/bitbuilder/io.bitbuilder
SocketMode=0660
SocketGroup=bitbuilder
FileDescriptorName=varlink

[Install]
WantedBy=sockets.target
`
	serviceUnit = `[Unit]
Description=BitBuilder host daemon
Requires=bitbuilderd.socket
After=bitbuilderd.socket

[Service]
Type=notify
ExecStart=/opt/bitbuilder/bin/bitbuilderd --state-dir /var/lib/bitbuilder
`
	prodSocket = "/run/bitbuilder/io.bitbuilder"
)

var execStart = regexp.MustCompile(`(?m)^ExecStart=(\S+)`)

// unitFile returns packaging/systemd/NAME with ExecStart pointed at the built binary, or
// fallback when the repository has no such file.
func unitFile(t *testing.T, name, fallback string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "packaging", "systemd", name))
	if os.IsNotExist(err) {
		t.Logf("no packaging/systemd/%s: using the test's own unit", name)
		return fallback
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("using packaging/systemd/%s with ExecStart=%s", name, bitbuilderd)
	return execStart.ReplaceAllString(string(b), "ExecStart="+bitbuilderd)
}

// TestSocketActivation installs bitbuilderd.socket and bitbuilderd.service in the test host's
// systemd, starts only the socket, and checks that the first call starts the Type=notify service
// with the socket systemd passed, that systemd saw READY=1 and STATUS=, that a stop is a clean
// exit, and that the next call starts it again with the tenants kept.
func TestSocketActivation(t *testing.T) {
	h := host(t)
	const unitDir = "/run/systemd/system"
	if err := h.WriteFile(unitDir+"/bitbuilderd.socket", []byte(unitFile(t, "bitbuilderd.socket", socketUnit)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile(unitDir+"/bitbuilderd.service", []byte(unitFile(t, "bitbuilderd.service", serviceUnit)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if t.Failed() {
			t.Logf("journal:\n%s", h.JournalTail(ctx, 40, "-u", "bitbuilderd.service", "-u", "bitbuilderd.socket"))
		}
		for _, args := range [][]string{
			{"systemctl", "stop", "bitbuilderd.socket", "bitbuilderd.service"},
			{"rm", "-f", unitDir + "/bitbuilderd.socket", unitDir + "/bitbuilderd.service"},
			{"systemctl", "daemon-reload"},
			{"rm", "-rf", "/var/lib/bitbuilder", "/run/bitbuilder"},
		} {
			if _, _, err := h.Run(ctx, args...); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	mustRun(t, h, "systemd-analyze", "verify", unitDir+"/bitbuilderd.socket", unitDir+"/bitbuilderd.service")
	mustRun(t, h, "systemctl", "daemon-reload")
	mustRun(t, h, "systemctl", "start", "bitbuilderd.socket")

	if got := showUnit(t, h, "bitbuilderd.socket", "ActiveState", "SubState"); got["SubState"] != "listening" {
		t.Fatalf("bitbuilderd.socket: %v", got)
	}
	if got := showUnit(t, h, "bitbuilderd.service", "ActiveState", "Type"); got["ActiveState"] != "inactive" || got["Type"] != "notify" {
		t.Fatalf("bitbuilderd.service before the first call: %v, want inactive and Type=notify", got)
	}
	sock := strings.TrimSpace(mustRun(t, h, "stat", "-c", "%a %U %G %i", prodSocket))
	if !strings.HasPrefix(sock, "660 root "+adminGroup+" ") {
		t.Errorf("socket %s: mode, owner, inode %q; want 660 root %s", prodSocket, sock, adminGroup)
	}

	// The first call starts the service.
	d := &daemon{h: h, unit: "bitbuilderd.service", socket: prodSocket, stateDir: "/var/lib/bitbuilder"}
	start := time.Now()
	first := d.create(t, `{"name":"activated"}`)
	t.Logf("first call through the socket, activation included: %v", time.Since(start).Round(time.Millisecond))
	if first.NetworkIndex != 1 {
		t.Errorf("first tenant: %+v", first)
	}
	got := showUnit(t, h, "bitbuilderd.service", "ActiveState", "SubState", "StatusText", "NRestarts", "MainPID")
	// Type=notify: systemd calls the service active only once it has sent READY=1; StatusText
	// is what it sent as STATUS=.
	if got["ActiveState"] != "active" || got["SubState"] != "running" || got["StatusText"] == "" || got["NRestarts"] != "0" {
		t.Errorf("bitbuilderd.service after the first call: %v, want active, running, a status text", got)
	}
	// It serves the socket systemd passed (LISTEN_FDNAMES=varlink) rather than one of its own:
	// the socket file is still the one systemd made.
	env := mustRun(t, h, "sh", "-c", "tr '\\0' '\\n' </proc/"+got["MainPID"]+"/environ")
	if !strings.Contains(env, "LISTEN_FDNAMES=varlink\n") || !strings.Contains(env, "LISTEN_FDS=1\n") {
		t.Errorf("the service was not passed the socket:\n%s", env)
	}
	if after := strings.TrimSpace(mustRun(t, h, "stat", "-c", "%a %U %G %i", prodSocket)); after != sock {
		t.Errorf("socket after activation %q, before %q: the daemon replaced systemd's socket", after, sock)
	}
	if got["StatusText"] != "" {
		t.Logf("STATUS= while serving: %q", got["StatusText"])
	}
	// The packaged unit gives the daemon a mount namespace of its own (ProtectSystem= and the like); the
	// namespace of its tenant below still reaches the host's `ip netns` (PID 1 makes it: --netns-via-systemd).
	mnt := strings.Fields(mustRun(t, h, "readlink", "/proc/"+got["MainPID"]+"/ns/mnt", "/proc/1/ns/mnt"))
	if len(mnt) != 2 || mnt[0] == mnt[1] {
		t.Errorf("mount namespaces of the daemon and of PID 1: %q, want two different ones", mnt)
	}

	// A stop is an orderly exit 0, and the socket stays.
	start = time.Now()
	mustRun(t, h, "systemctl", "stop", "bitbuilderd.service")
	stopTook := time.Since(start)
	stopped := showUnit(t, h, "bitbuilderd.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "StatusText")
	if stopped["ActiveState"] != "inactive" || stopped["Result"] != "success" || stopped["ExecMainCode"] != "1" || stopped["ExecMainStatus"] != "0" {
		t.Errorf("bitbuilderd.service after stop: %v, want inactive, success, exited (1) with status 0", stopped)
	}
	if stopped["StatusText"] == got["StatusText"] {
		t.Errorf("StatusText %q unchanged by the stop: the daemon sent no STATUS= on the way out", stopped["StatusText"])
	}
	if stopTook > 10*time.Second {
		t.Errorf("stop took %v", stopTook)
	}
	t.Logf("stop: %v (%v)", stopTook.Round(time.Millisecond), stopped)
	if got := showUnit(t, h, "bitbuilderd.socket", "SubState"); got["SubState"] != "listening" {
		t.Errorf("bitbuilderd.socket after the service stopped: %v", got)
	}

	// The next call starts it again, with the tenant created before.
	if tn := d.tenantCall(t, asRoot, "Get", `{"name":"activated"}`); !sameTenant(tn, first) {
		t.Errorf("after reactivation: %+v, want %+v", tn, first)
	}
	again := showUnit(t, h, "bitbuilderd.service", "ActiveState", "MainPID")
	if again["ActiveState"] != "active" || again["MainPID"] == got["MainPID"] {
		t.Errorf("after the second activation: %v (first main PID %s)", again, got["MainPID"])
	}

	// The packaged daemon, hardening and all, changes the host: its tenant gets its namespace
	// and bridge (names from DESIGN.md: netns tenant-<name>, bridge br-tenant-N).
	bridge := fmt.Sprintf("br-tenant-%d", first.NetworkIndex)
	eventually(t, 30*time.Second, func() (bool, string) {
		ns := run(t, h, "", "ip", "netns", "list")
		br := run(t, h, "", "ip", "link", "show", bridge)
		tn := d.tenantCall(t, asRoot, "Get", `{"name":"activated"}`)
		return strings.Contains(ns.stdout, "tenant-activated") && br.exit == 0,
			fmt.Sprintf("namespaces %q, bridge: %s; tenant phase %s, conditions %s", ns.stdout, br.stderr, tn.Phase, tn.Conditions)
	})

	// Delete the tenant and wait until it is finalized, which removes them, so that the tests
	// after this one share a clean host.
	if r := d.call(t, asRoot, tenantIface+"Delete", `{"name":"activated"}`); r.exit != 0 {
		t.Fatalf("%v", r)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, tenantIface+"Get", `{"name":"activated"}`)
		return r.exit != 0 && strings.Contains(r.stderr, "NoSuchTenant"), "not finalized: " + r.stdout
	})
	// Nothing of it is left.
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-activated") {
		t.Errorf("namespace left after the delete: %s", out)
	}
	if r := run(t, h, "", "ip", "link", "show", bridge); r.exit == 0 {
		t.Errorf("bridge left after the delete: %s", r.stdout)
	}
	d.checkJournal(t)
}

// TestRestart checks durability through a real restart: the tenants, with their revisions,
// indexes and states, are all there after the service stopped and started again.
func TestRestart(t *testing.T) {
	d := startDaemon(t, "restart")
	for _, name := range []string{"one", "two", "three", "four", "five"} {
		d.create(t, `{"name":"`+name+`"}`)
	}
	d.tenantCall(t, asRoot, "Update", `{"name":"two","parameters":{"BRIDGE_STP":"yes"}}`)
	d.tenantCall(t, asRoot, "Stop", `{"name":"three"}`)
	if r := d.call(t, asRoot, tenantIface+"Delete", `{"name":"four"}`); r.exit != 0 {
		t.Fatalf("%v", r)
	}
	before := d.list(t)
	if len(before) < 4 {
		t.Fatalf("%d tenants listed before the restart: %+v", len(before), before)
	}
	pid := d.mainPID(t)

	d.stop(t)
	d.start(t)

	if d.mainPID(t) == pid {
		t.Fatalf("the daemon was not restarted (main PID %d)", pid)
	}
	after := map[string]tenant{}
	for _, tn := range d.list(t) {
		after[tn.Name] = tn
	}
	var maxRev int64
	for _, b := range before {
		maxRev = max(maxRev, b.Revision)
		a, ok := after[b.Name]
		switch {
		case !ok && b.Phase == "deleting":
			// Finalized by the reconciler in the meantime.
		case !ok:
			t.Errorf("tenant %s is gone after the restart", b.Name)
		case !sameTenant(a, b) || a.Revision < b.Revision:
			t.Errorf("tenant %s before the restart: %+v\nafter: %+v", b.Name, b, a)
		}
		delete(after, b.Name)
	}
	if len(after) != 0 {
		t.Errorf("tenants from nowhere after the restart: %v", after)
	}
	// The store goes on from where it was.
	six := d.create(t, `{"name":"six"}`)
	if six.Revision <= maxRev || six.NetworkIndex != 6 && six.NetworkIndex != 4 {
		t.Errorf("first tenant after the restart: revision %d (before: up to %d), index %d", six.Revision, maxRev, six.NetworkIndex)
	}

	// A crash right after the reply: Create is durable before it answers.
	seven := d.create(t, `{"name":"seven"}`)
	stopped := d.tenantCall(t, asRoot, "Stop", `{"name":"six"}`)
	start := time.Now()
	d.crash(t)
	d.start(t)
	t.Logf("SIGKILL and start again: %v", time.Since(start).Round(time.Millisecond))
	for _, want := range []tenant{seven, stopped} {
		if got := d.tenantCall(t, asRoot, "Get", `{"name":"`+want.Name+`"}`); !sameTenant(got, want) || got.Revision < want.Revision {
			t.Errorf("after SIGKILL: %+v\nwant what the daemon had answered: %+v", got, want)
		}
	}
	d.checkJournal(t)
}

// TestSecondInstance starts a second bitbuilderd on the socket of a running one, then on its
// state directory: each must refuse to start, and the first must go on serving its socket.
func TestSecondInstance(t *testing.T) {
	d := startDaemon(t, "first")
	tn := d.create(t, `{"name":"kept"}`)
	inode := mustRun(t, d.h, "stat", "-c", "%i", d.socket)
	for _, second := range []struct{ name, socket, stateDir string }{
		{"same socket", d.socket, "/var/lib/bitbuilder-second"},
		{"same state", "/run/bitbuilder-second/io.bitbuilder", d.stateDir},
	} {
		t.Run(second.name, func(t *testing.T) {
			unit := "bitbuilderd-second-" + strings.ReplaceAll(second.name, " ", "-") + ".service"
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				defer cancel()
				_, _, _ = d.h.Run(ctx, "systemctl", "stop", unit)
				_, _, _ = d.h.Run(ctx, "systemctl", "reset-failed", unit)
				_, _, _ = d.h.Run(ctx, "rm", "-rf", "/var/lib/bitbuilder-second", "/run/bitbuilder-second")
			})
			start := time.Now()
			r := run(t, d.h, "", "systemd-run", "--quiet", "--unit="+unit, "--service-type=notify", "--",
				bitbuilderd, "--socket", second.socket, "--state-dir", second.stateDir)
			if r.exit == 0 {
				t.Fatalf("a second bitbuilderd started with %s: %v", second.name, r)
			}
			got := showUnit(t, d.h, unit, "ActiveState", "Result", "ExecMainStatus")
			if got["ActiveState"] != "failed" || got["ExecMainStatus"] == "0" {
				t.Errorf("second instance: %v, want failed with a non-zero exit status", got)
			}
			t.Logf("second instance (%s) refused after %v: %v; %s", second.name, time.Since(start).Round(time.Millisecond), got,
				lastLine(d.h.JournalTail(t.Context(), 20, "-u", unit, "--output=cat", "--grep=^bitbuilderd:")))
			if now := mustRun(t, d.h, "stat", "-c", "%i", d.socket); now != inode {
				t.Errorf("the second instance replaced the first one's socket")
			}
			if got := d.tenantCall(t, asRoot, "Get", `{"name":"kept"}`); !sameTenant(got, tn) {
				t.Errorf("the first instance after the second one's attempt: %+v", got)
			}
		})
	}
}

// TestStopWithClients stops the daemon while Watch streams and idle connections are open: it
// must exit 0 promptly, and the clients see the end of their connections.
func TestStopWithClients(t *testing.T) {
	d := startDaemon(t, "stopbusy")
	d.create(t, `{"name":"busy"}`)
	var streams []*stream
	for range 3 {
		s := startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", "{}")
		s.nextEvent(t)
		streams = append(streams, s)
	}
	idle := d.h.Command(t.Context(), idleconns, "-n", "100", d.socket)
	idleIn, err := idle.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	idleOut, err := idle.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idleIn.Close(); _ = idle.Wait() })
	if line, err := bufio.NewReader(idleOut).ReadString('\n'); err != nil || !strings.HasPrefix(line, "connected 100 ") {
		t.Fatalf("idleconns: %q, %v", line, err)
	}

	start := time.Now()
	d.stop(t) // Result=success: exit status 0
	took := time.Since(start)
	t.Logf("stop with 3 Watch streams and 100 idle connections open: %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("stop took %v", took)
	}
	for i, s := range streams {
		select {
		case <-s.done:
			if s.waitErr == nil {
				t.Errorf("watch %d: varlinkctl exited 0 when the daemon went away", i)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("watch %d: varlinkctl still running 5 s after the daemon stopped", i)
		}
	}
}

// TestIdleConnections holds 1,000 idle connections to the daemon while varlinkctl calls go on,
// then checks that every one of them is still served, and that the daemon lets them all go.
func TestIdleConnections(t *testing.T) {
	const n = 1000
	d := startDaemon(t, "idle")
	d.waitConnections(t, 0)

	cmd := d.h.Command(t.Context(), idleconns, "-n", strconv.Itoa(n), d.socket)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	readLine := func(prefix string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || !strings.HasPrefix(l, prefix) {
				t.Fatalf("idleconns: got %q, want %q... (%s)", l, prefix, stderr.String())
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatalf("idleconns: no %q line", prefix)
			return ""
		}
	}
	t.Log(readLine(fmt.Sprintf("connected %d ", n)))
	d.waitConnections(t, n)
	t.Logf("daemon memory with %d idle connections: %s", n, strings.TrimSpace(mustRun(t, d.h, "sh", "-c",
		fmt.Sprintf("grep -E '^VmRSS' /proc/%d/status", d.mainPID(t)))))

	// Calls still go through, promptly.
	start := time.Now()
	for i := range 5 {
		name := fmt.Sprintf("busy-%d", i)
		if tn := d.create(t, `{"name":"`+name+`"}`); tn.Name != name {
			t.Errorf("Create: %+v", tn)
		}
		d.tenantCall(t, asRoot, "Get", `{"name":"`+name+`"}`)
	}
	if got := len(d.list(t)); got != 5 {
		t.Errorf("List: %d tenants, want 5", got)
	}
	took := time.Since(start)
	t.Logf("11 varlinkctl calls with %d idle connections open: %v", n, took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("calls took %v with %d idle connections open", took, n)
	}

	// Every idle connection is still served.
	stdin.Close()
	line := readLine("answered ")
	t.Log(line)
	if f := strings.Fields(line); len(f) < 2 || f[1] != strconv.Itoa(n) {
		t.Errorf("idleconns: %q, want all %d connections answered", line, n)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("idleconns: %v: %s", err, stderr.String())
	}
	d.waitConnections(t, 0)
	d.checkJournal(t)
}

// TestWatchHangup kills varlinkctl in the middle of Watch streams, while the daemon sends the
// initial snapshot and while changes stream, and checks that the daemon neither notices beyond
// closing the connection nor leaks it, and that watching still works.
func TestWatchHangup(t *testing.T) {
	d := startDaemon(t, "hangup")
	// A snapshot large enough to be in flight when the client goes.
	mustRun(t, d.h, "sh", "-c", fmt.Sprintf(
		`for i in $(seq 1 100); do varlinkctl call --oneway %s %sCreate "{\"name\":\"t$i\"}" || exit 1; done`, d.socket, tenantIface))
	eventually(t, 10*time.Second, func() (bool, string) {
		n := len(d.list(t))
		return n == 100, fmt.Sprintf("%d of 100 tenants", n)
	})
	pid := d.mainPID(t)
	d.waitConnections(t, 0)

	for i := range 3 {
		s := startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", "{}")
		if ev := s.nextEvent(t); ev.Type != "added" {
			t.Fatalf("first event %+v", ev)
		}
		s.kill() // in the middle of the snapshot
		// Changes after the hang-up go nowhere.
		d.tenantCall(t, asRoot, "Stop", fmt.Sprintf(`{"name":"t%d"}`, i+1))
	}
	// A client that hangs up after the snapshot, while changes stream.
	s := startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", `{"name":"t50"}`)
	if ev := s.nextEvent(t); ev.Name != "t50" {
		t.Fatalf("first event %+v", ev)
	}
	d.tenantCall(t, asRoot, "Stop", `{"name":"t50"}`)
	if ev := s.nextEvent(t); ev.Type != "modified" || ev.Name != "t50" {
		t.Fatalf("event %+v", ev)
	}
	s.kill()
	d.tenantCall(t, asRoot, "Start", `{"name":"t50"}`)

	// Every killed client's connection is gone on the daemon's side too.
	d.waitConnections(t, 0)
	if got := d.mainPID(t); got != pid {
		t.Fatalf("the daemon restarted: main PID %d, was %d", got, pid)
	}

	// Watching still works: the whole snapshot, then new changes.
	s = startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", "{}")
	names := map[string]bool{}
	for range 100 {
		names[s.nextEvent(t).Name] = true
	}
	if len(names) != 100 {
		t.Errorf("snapshot after the hang-ups: %d distinct tenants, want 100", len(names))
	}
	late := d.create(t, `{"name":"late"}`)
	for {
		ev := s.nextEvent(t)
		if ev.Revision == late.Revision {
			if ev.Type != "added" || ev.Name != "late" {
				t.Errorf("event after the hang-ups: %+v", ev)
			}
			break
		}
		if ev.Type != "modified" { // only the daemon's own status changes may come first
			t.Errorf("unexpected event %+v", ev)
		}
	}
	d.checkJournal(t)
}

// TestStoppedWatcher freezes a Watch client (SIGSTOP) while 100 large changes are made: the
// daemon's replies to it back up in the socket, yet the changes and other calls go on at full
// speed; resumed (SIGCONT), the client gets every change in order, or WatchOverflow if it fell
// too far behind.
func TestStoppedWatcher(t *testing.T) {
	const n = 100
	d := startDaemon(t, "frozen")
	// A tenant's parameters are those its templates declare: this template takes five strings.
	installGit(t, d.h)
	guest := "/srv/templates/frozen-big.git"
	copyRepoIntoHost(t, d.h, sysextRepoWith(t, map[string]string{"parameters.json": `{"I":{},"A":{},"B":{},"C":{},"D":{}}`}), guest)
	t.Cleanup(func() { _, _, _ = d.h.Run(context.Background(), "rm", "-rf", guest) })
	if r := d.call(t, asRoot, "io.bitbuilder.Template.Add", `{"name":"big","url":"file://`+guest+`","ref":"main"}`, "--more"); r.exit != 0 {
		t.Fatalf("Template.Add: %v", r)
	}
	d.create(t, `{"name":"big","templates":[{"role":"sysext","name":"big","template":"big"}],"parameters":{"I":"0","A":"","B":"","C":"","D":""}}`)
	s := startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", "{}")
	s.nextEvent(t)
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) }()

	// Each event carries 16 KiB of parameters (values are at most 4 KiB): 100 of them are far
	// more than a socket buffers.
	start := time.Now()
	mustRun(t, d.h, "sh", "-c", fmt.Sprintf(`blob=$(head -c 3000 /dev/zero | base64 -w0)
for i in $(seq 1 %d); do
	varlinkctl call %s %sUpdate "{\"name\":\"big\",\"parameters\":{\"I\":\"$i\",\"A\":\"$blob\",\"B\":\"$blob\",\"C\":\"$blob\",\"D\":\"$blob\"}}" >/dev/null || exit 1
done`, n, d.socket, tenantIface))
	took := time.Since(start)
	t.Logf("%d updates of 16 KiB with a frozen watcher: %v", n, took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("%d updates took %v with a frozen watcher", n, took)
	}
	if tn := d.tenantCall(t, asRoot, "Get", `{"name":"big"}`); tn.Parameters["I"] != strconv.Itoa(n) {
		t.Errorf("after the updates: parameter I = %q", tn.Parameters["I"])
	}

	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The updates' events carry I = 1..n in order; the daemon's own status changes may come in
	// between, carrying the I of the last update before them.
	last, deadline := 0, time.After(30*time.Second)
	for last < n {
		select {
		case rec, ok := <-s.records:
			if !ok {
				if strings.Contains(s.stderr.String(), tenantIface+"WatchOverflow") {
					t.Logf("the resumed watcher got WatchOverflow after update %d", last)
					return
				}
				t.Fatalf("the watch ended after update %d of %d: %v: %s", last, n, s.waitErr, s.stderr.String())
			}
			var reply struct {
				Event event `json:"event"`
			}
			decodeJSON(t, rec, &reply)
			ev := reply.Event
			if ev.Tenant == nil || ev.Tenant.Parameters["I"] == "" {
				continue // a status change before the first update
			}
			i, _ := strconv.Atoi(ev.Tenant.Parameters["I"])
			if i != last && i != last+1 {
				t.Fatalf("after update %d the resumed watcher got an event carrying update %d", last, i)
			}
			last = i
		case <-deadline:
			t.Fatalf("the resumed watcher got %d of %d updates", last, n)
		}
	}
	t.Logf("the resumed watcher got all %d changes in order", n)
}

// TestCrashUnderLoad kills the daemon with SIGKILL while 60 varlinkctl Creates are in flight:
// after a restart, every Create that was answered is there with the index it was given, and
// no two tenants share an index.
func TestCrashUnderLoad(t *testing.T) {
	const n = 60
	d := startDaemon(t, "crashload")
	pid := d.mainPID(t)
	out := mustRun(t, d.h, "sh", "-c", fmt.Sprintf(`dir=$(mktemp -d)
for i in $(seq 1 %[1]d); do
	varlinkctl call --json=short %[2]s %[3]sCreate "{\"name\":\"l$i\"}" >"$dir/$i" 2>/dev/null &
	# Half-way through launching them, while the first ones are being committed.
	[ "$i" = %[5]d ] && kill -KILL %[4]d
done
wait
cat "$dir"/*
rm -rf "$dir"`, n, d.socket, tenantIface, pid, n/2))
	answered := map[string]tenant{}
	for line := range strings.Lines(out) {
		var reply struct {
			Tenant tenant `json:"tenant"`
		}
		decodeJSON(t, []byte(line), &reply)
		answered[reply.Tenant.Name] = reply.Tenant
	}
	t.Logf("%d of %d creates were answered before SIGKILL", len(answered), n)

	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.show(t, "ActiveState")
		return got["ActiveState"] == "failed" || got["ActiveState"] == "inactive", fmt.Sprint(got)
	})
	_, _, _ = d.h.Run(t.Context(), "systemctl", "reset-failed", d.unit)
	d.start(t)

	byIndex := map[int]string{}
	found := map[string]bool{}
	for _, tn := range d.list(t) {
		found[tn.Name] = true
		if other, dup := byIndex[tn.NetworkIndex]; dup {
			t.Errorf("tenants %s and %s share index %d", other, tn.Name, tn.NetworkIndex)
		}
		byIndex[tn.NetworkIndex] = tn.Name
		if a, ok := answered[tn.Name]; ok && a.NetworkIndex != tn.NetworkIndex {
			t.Errorf("tenant %s: index %d after the crash, %d in the answer", tn.Name, tn.NetworkIndex, a.NetworkIndex)
		}
	}
	for name := range answered {
		if !found[name] {
			t.Errorf("tenant %s was answered before the crash and is gone after it", name)
		}
	}
	t.Logf("%d tenants after the restart (%d answered)", len(found), len(answered))
}

// TestReboot installs the packaged units for good (/etc/systemd/system, socket enabled), makes
// tenants, and reboots the test host: at boot systemd listens on the socket again without
// starting the daemon, the first call starts it, every tenant is there, and the daemon puts
// back their host state, which the reboot wiped (namespaces and bridges live in /run and in
// the host's network namespace).
func TestReboot(t *testing.T) {
	h := host(t)
	const unitDir = "/etc/systemd/system"
	if err := h.WriteFile(unitDir+"/bitbuilderd.socket", []byte(unitFile(t, "bitbuilderd.socket", socketUnit)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile(unitDir+"/bitbuilderd.service", []byte(unitFile(t, "bitbuilderd.service", serviceUnit)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if t.Failed() {
			t.Logf("journal:\n%s", h.JournalTail(ctx, 40, "-u", "bitbuilderd.service", "-u", "bitbuilderd.socket"))
		}
		for _, args := range [][]string{
			{"systemctl", "disable", "--now", "bitbuilderd.socket"},
			{"systemctl", "stop", "bitbuilderd.service"},
			{"rm", "-f", unitDir + "/bitbuilderd.socket", unitDir + "/bitbuilderd.service"},
			{"systemctl", "daemon-reload"},
			{"rm", "-rf", "/var/lib/bitbuilder", "/run/bitbuilder"},
		} {
			if _, _, err := h.Run(ctx, args...); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	mustRun(t, h, "systemctl", "daemon-reload")
	mustRun(t, h, "systemctl", "enable", "--now", "bitbuilderd.socket")

	d := &daemon{h: h, unit: "bitbuilderd.service", socket: prodSocket, stateDir: "/var/lib/bitbuilder"}
	names := []string{"boot-a", "boot-b", "boot-c"}
	for _, name := range names {
		d.create(t, `{"name":"`+name+`"}`)
	}
	d.tenantCall(t, asRoot, "Stop", `{"name":"boot-c"}`)
	hostState := func(name string, index int) (bool, string) {
		ns := run(t, h, "", "ip", "netns", "list")
		br := run(t, h, "", "ip", "link", "show", fmt.Sprintf("br-tenant-%d", index))
		return strings.Contains(ns.stdout, "tenant-"+name) && br.exit == 0, fmt.Sprintf("namespaces %q; bridge: %s", ns.stdout, br.stderr)
	}
	before := d.list(t)
	eventually(t, 30*time.Second, func() (bool, string) { return hostState("boot-a", before[0].NetworkIndex) })

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := h.Reboot(ctx); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	t.Logf("reboot: %v", time.Since(start).Round(time.Millisecond))
	if got := showUnit(t, h, "bitbuilderd.socket", "SubState"); got["SubState"] != "listening" {
		t.Errorf("bitbuilderd.socket after the reboot: %v", got)
	}
	if got := showUnit(t, h, "bitbuilderd.service", "ActiveState"); got["ActiveState"] != "inactive" {
		t.Errorf("bitbuilderd.service after the reboot, before any call: %v", got)
	}
	if ok, _ := hostState("boot-a", before[0].NetworkIndex); ok {
		t.Fatalf("the reboot did not wipe the host's network state: the test proves nothing")
	}

	after := d.list(t) // activates the daemon
	if len(after) != len(before) {
		t.Fatalf("%d tenants after the reboot, %d before", len(after), len(before))
	}
	for i := range before {
		if !sameTenant(after[i], before[i]) || after[i].Revision < before[i].Revision {
			t.Errorf("after the reboot: %+v\nbefore: %+v", after[i], before[i])
		}
	}
	// The running tenants' host state comes back.
	for _, tn := range after[:2] {
		eventually(t, 30*time.Second, func() (bool, string) { return hostState(tn.Name, tn.NetworkIndex) })
	}
	t.Logf("reboot to host state restored: %v", time.Since(start).Round(time.Millisecond))

	// Leave the host clean for the tests after this one.
	for _, name := range names {
		if r := d.call(t, asRoot, tenantIface+"Delete", `{"name":"`+name+`"}`); r.exit != 0 {
			t.Fatalf("%v", r)
		}
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		left := d.list(t)
		return len(left) == 0, fmt.Sprintf("%d tenants not finalized", len(left))
	})
	if out := mustRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-boot-") {
		t.Errorf("namespaces left after the deletes: %s", out)
	}
}
