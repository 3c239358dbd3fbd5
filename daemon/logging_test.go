package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// logCapture is a slog handler that keeps every record (attributes flattened to key=value).
type logCapture struct {
	mu   sync.Mutex
	recs []capturedRecord
}

type capturedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	c := capturedRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { c.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, c)
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

// find returns the records with message msg.
func (h *logCapture) find(msg string) []capturedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []capturedRecord
	for _, r := range h.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestStartupAndChangeLogs checks the daemon's logs through its socket: at start one line with
// the version and settings and one saying that records only are kept; every change logged once,
// with who made it (the caller's uid and pid) and, for an update, what changed; and a
// records-only tenant showing HostApplied=false instead of looking applied.
func TestStartupAndChangeLogs(t *testing.T) {
	h := &logCapture{}
	d := startDaemon(t, func(c *Config) { c.Logger = slog.New(h); c.RecordsOnly = true; c.IndexMin, c.IndexMax = 5, 50 })
	start := h.find("starting bitbuilderd")
	if len(start) != 1 {
		t.Fatalf("%d start lines", len(start))
	}
	a := start[0].attrs
	if a["version"] != Version || a["host"] != "records only" || a["indexRange"] != "5-50" || a["stateDir"] != d.stateDir ||
		a["socket"] != d.socket || a["resync"] != "10m0s" || a["maxConnections"] == "" {
		t.Errorf("start line %v", a)
	}
	if ro := h.find("records only (--no-host): nothing is applied to the host; each tenant shows the condition HostApplied=false, reason RecordsOnly"); len(ro) != 1 || ro[0].level != slog.LevelWarn {
		t.Errorf("records-only notice: %v", ro)
	}

	c := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"alpha"}`))
	tenantOf(t, c.call("io.bitbuilder.Tenant.Update", `{"name":"alpha","parameters":{"BRIDGE_STP":"yes"},"networkFeatures":["vxlan"]}`))
	tenantOf(t, c.call("io.bitbuilder.Tenant.Stop", `{"name":"alpha"}`))
	wantError(t, c.call("io.bitbuilder.Tenant.Update", `{"name":"alpha","parameters":{"NOPE":"x"}}`), "io.bitbuilder.Tenant.InvalidField", nil)
	who := fmt.Sprintf("uid=%d pid=%d", os.Getuid(), os.Getpid())
	for _, tc := range []struct{ msg, want string }{
		{"tenant created", "tenant=alpha"},
		{"tenant updated", "changed=networkFeatures,parameters"},
		{"tenant desired state set", "desiredState=stopped"},
	} {
		recs := h.find(tc.msg)
		if len(recs) != 1 {
			t.Errorf("%q logged %d times, want once", tc.msg, len(recs))
			continue
		}
		got := fmt.Sprintf("uid=%s pid=%s", recs[0].attrs["uid"], recs[0].attrs["pid"])
		k, v, _ := strings.Cut(tc.want, "=")
		if got != who || recs[0].attrs[k] != v {
			t.Errorf("%q: %v, want %s and %s", tc.msg, recs[0].attrs, who, tc.want)
		}
	}

	tn := waitPhase(t, c, "alpha", "stopped")
	conds, _ := tn["conditions"].([]any)
	if len(conds) != 1 {
		t.Fatalf("conditions %v, want HostApplied", conds)
	}
	if cd := conds[0].(map[string]any); cd["type"] != "HostApplied" || cd["status"] != "false" || cd["reason"] != "RecordsOnly" || cd["message"] == "" {
		t.Errorf("condition %v", cd)
	}
}

// TestHostChangesLogged checks the start-up line of a daemon that changes the host: it names
// what it makes (namespaces, links, networkd files, units, the boot registry, trees) and how
// to remove it.
func TestHostChangesLogged(t *testing.T) {
	var buf bytes.Buffer
	logHostChanges(slog.New(slog.NewTextHandler(&buf, nil)), HostConfig{NetworkDir: "/run/x/network"}, "/var/lib/bb")
	out := buf.String()
	for _, want := range []string{"level=WARN", "bitbuilderd --cleanup", "--no-host", "namespaces=tenant-<name>", "br-tenant-N",
		"/run/x/network/50-bitbuilder-N-*", "/run/systemd/system/", "bootRegistry=/etc/bitbuilder/boot-registry.json", "/var/lib/bb/tenants"} {
		if !strings.Contains(out, want) {
			t.Errorf("host notice lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("host notice is not one line:\n%s", out)
	}
}

// TestChangeLinesBudget: a flood of changes gets changeLinesBurst info lines at once, then one per
// 1/changeLinesPerSecond; the first line after a refusal counts the changes that were not logged.
func TestChangeLinesBudget(t *testing.T) {
	var b budget
	now := time.Unix(1000, 0)
	for i := range changeLinesBurst {
		if ok, skipped := b.take(now); !ok || skipped != 0 {
			t.Fatalf("line %d of the burst: ok %v, skipped %d", i, ok, skipped)
		}
	}
	for range 7 {
		if ok, _ := b.take(now); ok {
			t.Fatal("a line past the burst was given")
		}
	}
	if ok, _ := b.take(now.Add(time.Second / (2 * changeLinesPerSecond))); ok {
		t.Fatal("a line was given before a token was due")
	}
	ok, skipped := b.take(now.Add(time.Second / changeLinesPerSecond))
	if !ok || skipped != 8 {
		t.Errorf("after 1/rate s: ok %v, skipped %d, want true, 8", ok, skipped)
	}
}
