package cli

import (
	"bytes"
	"context"
	"encoding/json"
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
