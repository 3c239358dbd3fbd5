package reconcile

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/tenant"
)

// capture is a slog handler that keeps every record, for tests that assert on logs.
type capture struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *capture) Enabled(context.Context, slog.Level) bool { return true }
func (h *capture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *capture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *capture) WithGroup(string) slog.Handler      { return h }

// messages returns the messages logged so far, with the attribute key given for each ("" when absent).
func (h *capture) messages(key string) (msgs, vals []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		msgs = append(msgs, r.Message)
		v := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.String()
			}
			return true
		})
		vals = append(vals, v)
	}
	return msgs, vals
}

func count(msgs []string, m string) int {
	n := 0
	for _, x := range msgs {
		if x == m {
			n++
		}
	}
	return n
}

// TestRepeatedFailuresLoggedOnce checks the logs of a tenant that fails again and again for
// one cause: the first failure is logged (on one line, though the error is joined), its
// repeats are not, a summary says how many there were, a new cause is logged at once, and the
// recovery says how many failures it ended.
func TestRepeatedFailuresLoggedOnce(t *testing.T) {
	h := &capture{}
	c := New(Config{Logger: slog.New(h), FailureSummary: time.Hour})
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c.nowFunc = func() time.Time { return now }
	cause := errors.Join(errors.New("Network: bridge br-tenant-1: operation not permitted"), errors.New("Units: no system bus"))
	for range 50 {
		c.logOutcome("a", cause, time.Second)
		now = now.Add(time.Second)
	}
	msgs, errs := h.messages("err")
	if count(msgs, "reconcile failed, will retry") != 1 || len(msgs) != 1 {
		t.Fatalf("after 50 failures of one cause: %q", msgs)
	}
	if strings.Contains(errs[0], "\n") || !strings.Contains(errs[0], "operation not permitted; Units: no system bus") {
		t.Errorf("error logged as %q, want one line", errs[0])
	}
	// An hour later the next repeat is summarized.
	now = now.Add(time.Hour)
	c.logOutcome("a", cause, time.Second)
	msgs, _ = h.messages("err")
	_, counts := h.messages("failures")
	if len(msgs) != 2 || msgs[1] != "reconcile still failing" || counts[1] != "51" {
		t.Fatalf("summary: %q %q", msgs, counts)
	}
	// Another tenant's failures are its own.
	c.logOutcome("b", cause, time.Second)
	// A new cause is logged at once; then the recovery, with the count.
	c.logOutcome("a", errors.New("Templates: fetch failed"), time.Second)
	c.logOutcome("a", nil, 0)
	c.logOutcome("a", nil, 0)
	msgs, _ = h.messages("err")
	want := []string{"reconcile failed, will retry", "reconcile still failing", "reconcile failed, will retry",
		"reconcile failure changed cause", "reconcile failed, will retry", "reconcile succeeded again"}
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Errorf("log messages\n got %q\nwant %q", msgs, want)
	}
}

// TestReconcileFailureLogsThroughTheLoop runs the controller with a step failing for one cause
// many times (backoff 10 ms) and checks the real loop logs that failure once and the recovery once.
func TestReconcileFailureLogsThroughTheLoop(t *testing.T) {
	var buf syncBuffer
	e := startLogged(t, time.Hour, slog.New(slog.NewTextHandler(&buf, nil)))
	e.host.set("a", errors.New("bridge br-tenant-1: operation not permitted"))
	if _, err := e.svc.Create(t.Context(), tenant.Spec{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "several failed passes", func() bool { return e.ctl.Passes("a") >= 5 })
	e.host.set("a", nil)
	eventually(t, "recovery logged", func() bool { return strings.Contains(buf.String(), "reconcile succeeded again") })
	out := buf.String()
	if n := strings.Count(out, "reconcile failed, will retry"); n != 1 {
		t.Errorf("%d failure lines for one cause over %d passes:\n%s", n, e.ctl.Passes("a"), out)
	}
	if strings.Count(out, "\n") != strings.Count(out, "level=") {
		t.Errorf("a record spans lines:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
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
