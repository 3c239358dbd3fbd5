package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWatchResumesAfterOverflow stalls a watch (its output is not read) while the daemon
// commits more changes than it buffers for a watcher, so that the daemon drops the watcher with
// WatchOverflow; bbctl must watch again from the last revision and miss no change.
func TestWatchResumesAfterOverflow(t *testing.T) {
	testpolicy.Short(t, "commits thousands of changes")
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "busy")
	first := getTenant(t, d.addr, "busy").Revision

	pr, pw := io.Pipe()
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		app := testApp(d.addr, pw, &stderr)
		done <- app.Run(ctx, []string{"tenant", "watch", "busy", "--revision", itoa(first), "--json"})
		pw.Close()
	}()

	// More changes than the daemon's watch buffer (1024 events) plus what the socket holds.
	const changes = 3000
	c, err := varlink.NewConnection(t.Context(), d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range changes {
		cpus := float64(i%8 + 1)
		if _, err := vt.Update().Call(t.Context(), c, "busy", nil, &vt.Resources{Cpus: cpus, MemoryBytes: 1 << 30, StorageBytes: 10 << 30}, nil, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	last := getTenant(t, d.addr, "busy").Revision

	// Now read everything: every revision after first, in order, exactly once.
	lr := newLineReader(pr)
	want := first + 1
	deadline := time.After(60 * time.Second)
	for want <= last {
		var line string
		select {
		case l, ok := <-lr.lines:
			if !ok {
				t.Fatalf("watch ended at revision %d of %d; stderr %q", want-1, last, stderr.String())
			}
			line = l
		case <-deadline:
			t.Fatalf("stuck at revision %d of %d", want, last)
		}
		var ev vt.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev.Revision != want {
			t.Fatalf("got revision %d, want %d", ev.Revision, want)
		}
		want++
	}
	if !strings.Contains(stderr.String(), "resuming after revision") {
		t.Errorf("the watch never overflowed (stderr %q): the test did not test resumption", stderr.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestWatchResumesAfterDaemonRestart stops the daemon under a running tenant watch and
// starts it again on the same socket and state: the watch reconnects and goes on after the
// last revision it saw, missing no change and repeating none.
func TestWatchResumesAfterDaemonRestart(t *testing.T) {
	dir := t.TempDir()
	d, stop := startDaemonIn(t, dir)
	addr := d.addr
	mustRun(t, addr, "tenant", "create", "a", "--stopped")

	var stderr syncBuffer
	lr, cancel, wait := startWatchTo(t, addr, &stderr, "tenant", "watch", "a", "--json")
	next := func() vt.Event {
		t.Helper()
		var ev vt.Event
		if err := json.Unmarshal([]byte(lr.next(t)), &ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := next(); ev.Type != "added" || ev.Name != "a" {
		t.Fatalf("first event %+v, want a as added", ev)
	}
	mustRun(t, addr, "tenant", "update", "a", "--cpus", "2")
	var before vt.Event
	for before.Tenant == nil || before.Tenant.Resources.Cpus != 2 {
		before = next()
	}
	settle(t, addr, "a")
	for before.Revision < getTenant(t, addr, "a").Revision {
		before = next()
	}

	stop()
	// While the daemon is away, bbctl keeps trying; then the daemon comes back.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "reconnecting") {
		if time.Now().After(deadline) {
			t.Fatalf("bbctl did not notice the daemon going away: stderr %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	startDaemonIn(t, dir)
	mustRun(t, addr, "tenant", "update", "a", "--cpus", "3")
	after := getTenant(t, addr, "a").Revision
	// Every event after the restart is after the last one seen, in order, up to the update.
	last := before.Revision
	for last < after {
		ev := next()
		if ev.Revision <= last {
			t.Fatalf("event %d repeated or out of order after %d", ev.Revision, last)
		}
		last = ev.Revision
		if ev.Tenant == nil || ev.Type != "modified" {
			t.Fatalf("event %+v after the restart, want a modification (a watch started afresh shows the tenant as added)", ev)
		}
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("reconnected; resuming after revision %d", before.Revision)) {
		t.Errorf("stderr %q does not say where it resumed", stderr.String())
	}
	cancel()
	if code := wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestDescribeChange(t *testing.T) {
	prev := &vt.Tenant{Name: "a", DesiredState: "running", Phase: "provisioning", NetworkIndex: 1,
		Conditions: []vt.Condition{{Type: "NetworkReady", Status: "true"}, {Type: "Old", Status: "true"}},
		Machines:   []vt.Machine{{Name: "web", DesiredState: "running", Status: &vt.MachineStatus{State: "starting"}}}}
	cur := &vt.Tenant{Name: "a", DesiredState: "running", Phase: "failed", NetworkIndex: 1,
		Conditions: []vt.Condition{{Type: "NetworkReady", Status: "false", Reason: "LinkDown", Message: "br-tenant-1 is down\nsecond line"}},
		Machines:   []vt.Machine{{Name: "web", DesiredState: "running", Status: &vt.MachineStatus{State: "running", Addresses: []string{"10.1.0.5"}}}},
		Parameters: map[string]string{"K": "v"}}
	got := strings.Join(describeChange(prev, cur), ", ")
	want := "phase provisioning -> failed, condition NetworkReady false (LinkDown: br-tenant-1 is down ...), condition Old removed, machine web running (10.1.0.5), parameters changed"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := strings.Join(describeChange(nil, cur), ", "); got != "desired state running, phase failed, index 1, condition NetworkReady false (LinkDown: br-tenant-1 is down ...)" {
		t.Errorf("first sight: %q", got)
	}
}
