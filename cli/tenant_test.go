package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

func getTenant(t *testing.T, addr, name string) vt.Tenant {
	t.Helper()
	var r vt.Tenant
	if err := json.Unmarshal([]byte(mustRun(t, addr, "tenant", "get", name, "--json")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// settle waits until the daemon's reconciler has finished with the tenants: each is in a
// phase that lasts and its revision no longer moves.
func settle(t *testing.T, addr string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range names {
		var last int64 = -1
		for {
			got := getTenant(t, addr, n)
			switch got.Phase {
			case "ready", "stopped", "failed", "degraded":
				if got.Revision == last {
					goto next
				}
			}
			last = got.Revision
			if time.Now().After(deadline) {
				t.Fatalf("tenant %s did not settle: phase %s, revision %d", n, got.Phase, got.Revision)
			}
			time.Sleep(50 * time.Millisecond)
		}
	next:
	}
}

func TestTenantRoundTrip(t *testing.T) {
	d := startDaemon(t)
	webCommit := addTemplate(t, d.addr, "debian-web", "machine")
	addTemplate(t, d.addr, "tools", "sysext")
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout string // a substring of standard output
		check  func(t *testing.T)
	}{
		{"create with limits, templates and parameters",
			[]string{"tenant", "create", "web", "--index", "7", "--cpus", "0.5", "--memory", "2G", "--storage", "20GiB",
				"--template", "machine:web:debian-web", "--template", "sysext:tools:tools", "--param", "BRIDGE_STP=yes", "--network-features", "vxlan"},
			0, `tenant "web" created: network index 7, desired state running, phase `,
			func(t *testing.T) {
				got := getTenant(t, d.addr, "web")
				if got.NetworkIndex != 7 || got.Resources != (vt.Resources{Cpus: 0.5, MemoryBytes: 2 << 30, StorageBytes: 20 << 30}) {
					t.Errorf("index %d resources %+v", got.NetworkIndex, got.Resources)
				}
				if len(got.Templates) != 2 || got.Templates[0].Role != "machine" || got.Templates[1].Template != "tools" ||
					deref(got.Templates[0].Commit) != webCommit {
					t.Errorf("templates %+v, want debian-web pinned to %s", got.Templates, webCommit)
				}
				if got.Parameters["BRIDGE_STP"] != "yes" || len(got.NetworkFeatures) != 1 || got.NetworkFeatures[0] != "vxlan" {
					t.Errorf("parameters %v, network features %v", got.Parameters, got.NetworkFeatures)
				}
			}},
		{"create stopped with the daemon's defaults", []string{"tenant", "create", "db", "--stopped"}, 0, `tenant "db" created`,
			func(t *testing.T) {
				got := getTenant(t, d.addr, "db")
				if got.DesiredState != "stopped" || got.Resources.Cpus != 1 || got.Resources.MemoryBytes != 1<<30 {
					t.Errorf("db: %+v", got)
				}
			}},
		{"get shows a key: value block", []string{"tenant", "get", "web"}, 0, "Memory:         2 GiB", nil},
		{"list shows both in name order", []string{"tenant", "list"}, 0, "db ", func(t *testing.T) {
			out := mustRun(t, d.addr, "tenant", "list")
			if strings.Index(out, "\ndb ") > strings.Index(out, "\nweb ") {
				t.Errorf("not in name order:\n%s", out)
			}
		}},
		{"update changes only the limit given and merges parameters",
			[]string{"tenant", "update", "web", "--memory", "4G", "--param", "BRIDGE_STP-", "--param", "VXLAN_PORT=4790", "--network-features", ""}, 0, `tenant "web" updated`,
			func(t *testing.T) {
				if got := getTenant(t, d.addr, "web"); len(got.NetworkFeatures) != 0 {
					t.Errorf("network features %v, want none", got.NetworkFeatures)
				}
				got := getTenant(t, d.addr, "web")
				if got.Resources != (vt.Resources{Cpus: 0.5, MemoryBytes: 4 << 30, StorageBytes: 20 << 30}) {
					t.Errorf("resources %+v", got.Resources)
				}
				if len(got.Parameters) != 1 || got.Parameters["VXLAN_PORT"] != "4790" {
					t.Errorf("parameters %v", got.Parameters)
				}
				if len(got.Templates) != 2 {
					t.Errorf("templates changed: %+v", got.Templates)
				}
			}},
		{"update at the current revision", nil, 0, "updated", nil},
		{"stop", []string{"tenant", "stop", "web"}, 0, "desired state stopped", func(t *testing.T) {
			if got := getTenant(t, d.addr, "web"); got.DesiredState != "stopped" {
				t.Errorf("desired %s", got.DesiredState)
			}
		}},
		{"start", []string{"tenant", "start", "db"}, 0, "desired state running", func(t *testing.T) {
			if got := getTenant(t, d.addr, "db"); got.DesiredState != "running" {
				t.Errorf("desired %s", got.DesiredState)
			}
		}},
		{"delete", []string{"tenant", "delete", "db", "--force"}, 0, `tenant "db" is being deleted`, nil},
		{"delete --wait returns once the tenant is gone", []string{"tenant", "delete", "web", "--wait"}, 0, `tenant "web" deleted`, func(t *testing.T) {
			if r := bbctl(t, d.addr, "tenant", "get", "web"); r.code != ExitNotFound {
				t.Errorf("get after delete --wait: exit %d", r.code)
			}
		}},
	}
	for _, s := range steps {
		if s.args == nil { // update at the current revision, which is only known now
			settle(t, d.addr, "web")
			rev := getTenant(t, d.addr, "web").Revision
			s.args = []string{"tenant", "update", "web", "--cpus", "2", "--revision", itoa(rev)}
		}
		t.Run(s.name, func(t *testing.T) {
			r := bbctl(t, d.addr, s.args...)
			if r.code != s.code || !strings.Contains(r.stdout, s.stdout) {
				t.Fatalf("bbctl %q: exit %d, stdout %q, stderr %q; want exit %d and %q", s.args, r.code, r.stdout, r.stderr, s.code, s.stdout)
			}
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestJSONOutputParsesBack(t *testing.T) {
	d := startDaemon(t)
	if out := mustRun(t, d.addr, "tenant", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("empty list: %q, want []", out)
	}
	var created vt.Tenant
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "--json", "tenant", "create", "a", "--memory", "512M")), &created); err != nil {
		t.Fatal(err)
	}
	if created.Name != "a" || created.Resources.MemoryBytes != 512<<20 || created.Revision == 0 {
		t.Errorf("create reply %+v", created)
	}
	mustRun(t, d.addr, "tenant", "create", "b")
	var list []vt.Tenant
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "tenant", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Errorf("list: %+v", list)
	}
	if got := getTenant(t, d.addr, "a"); got.CreatedAt != created.CreatedAt || got.CreateRevision != created.CreateRevision ||
		got.Resources != created.Resources {
		t.Errorf("get %+v, created %+v", got, created)
	}
	if out := mustRun(t, d.addr, "tenant", "delete", "b", "--force", "--json"); out != "" {
		t.Errorf("delete --json printed %q, want nothing", out)
	}
}

func TestTenantTablesGolden(t *testing.T) {
	d := startDaemon(t)
	golden(t, "tenant-list-empty.golden", mustRun(t, d.addr, "tenant", "list"))
	addTemplate(t, d.addr, "debian-web", "machine")
	addTemplate(t, d.addr, "base", "infrastructure")
	// One tenant at a time, each left to settle, so that revisions are the same every run.
	mustRun(t, d.addr, "tenant", "create", "web", "--cpus", "0.5", "--memory", "1536M", "--storage", "100G",
		"--template", "machine:web:debian-web", "--template", "infrastructure:infra:base", "--param", "VXLAN_PORT=4790", "--param", "BRIDGE_STP=yes",
		"--network-features", "vxlan")
	settle(t, d.addr, "web")
	mustRun(t, d.addr, "tenant", "create", "cache", "--stopped", "--index", "20")
	settle(t, d.addr, "cache")
	mustRun(t, d.addr, "tenant", "create", "analytics-eu-west", "--cpus", "16", "--memory", "64G", "--storage", "2T")
	settle(t, d.addr, "analytics-eu-west")
	golden(t, "tenant-list.golden", mustRun(t, d.addr, "tenant", "list"))
	golden(t, "tenant-get.golden", mustRun(t, d.addr, "tenant", "get", "web"))
	golden(t, "tenant-get-bare.golden", mustRun(t, d.addr, "tenant", "get", "cache"))
}

// lineReader reads bbctl's output line by line as it runs.
type lineReader struct {
	lines chan string
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
		close(lr.lines)
	}()
	return lr
}

// until reads lines until match returns true for one, for at most 20 lines.
func (lr *lineReader) until(t *testing.T, match func(string) bool) {
	t.Helper()
	var seen []string
	for range 20 {
		l := lr.next(t)
		if match(l) {
			return
		}
		seen = append(seen, l)
	}
	t.Fatalf("no matching line in %q", seen)
}

func (lr *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-lr.lines:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output line within 10s")
	}
	return ""
}

// startWatch runs bbctl with args in the background; cancel ends it, and wait returns its code.
func startWatch(t *testing.T, addr string, args ...string) (lr *lineReader, cancel func(), wait func() int) {
	t.Helper()
	return startWatchTo(t, addr, io.Discard, args...)
}

// startWatchTo is startWatch with bbctl's standard error going to stderr.
func startWatchTo(t *testing.T, addr string, stderr io.Writer, args ...string) (lr *lineReader, cancel func(), wait func() int) {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		app := testApp(addr, pw, stderr)
		done <- app.Run(ctx, args)
		pw.Close()
	}()
	t.Cleanup(cancel)
	return newLineReader(pr), cancel, func() int { return <-done }
}

func TestTenantWatch(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "old")
	settle(t, d.addr, "old")

	t.Run("human lines, current tenants first", func(t *testing.T) {
		lr, cancel, wait := startWatch(t, d.addr, "tenant", "watch")
		if l := lr.next(t); !strings.HasSuffix(l, "added    old: desired state running, phase ready, index 1") {
			t.Errorf("first line %q, want old as added", l)
		}
		mustRun(t, d.addr, "tenant", "create", "new")
		if l := lr.next(t); !strings.Contains(l, "added    new: desired state running, phase ") {
			t.Errorf("line %q, want new as added", l)
		}
		settle(t, d.addr, "new")
		mustRun(t, d.addr, "tenant", "update", "new", "--cpus", "2")
		lr.until(t, func(l string) bool { return strings.HasSuffix(l, "modified new: resources changed") })
		mustRun(t, d.addr, "tenant", "stop", "new")
		// Each line says what changed: the desired state, then the phase as the reconciler
		// moves it.
		lr.until(t, func(l string) bool { return strings.HasSuffix(l, "modified new: desired state running -> stopped") })
		lr.until(t, func(l string) bool { return strings.Contains(l, "modified new: phase ready -> ") })
		cancel()
		if code := wait(); code != 0 {
			t.Errorf("interrupted watch exited %d, want 0", code)
		}
	})

	t.Run("an unknown tenant is an error", func(t *testing.T) {
		for _, asJSON := range []string{"--json=false", "--json"} {
			r := bbctl(t, d.addr, "tenant", "watch", "nope", asJSON, "--timeout", "5s")
			if r.code != ExitNotFound || !strings.Contains(r.stderr, `tenant \"nope\" not found`) && !strings.Contains(r.stderr, `tenant "nope" not found`) {
				t.Errorf("watch nope %s: %+v", asJSON, r)
			}
		}
	})

	t.Run("JSON lines for one tenant from a revision", func(t *testing.T) {
		rev := getTenant(t, d.addr, "old").Revision
		lr, cancel, wait := startWatch(t, d.addr, "tenant", "watch", "old", "--revision", itoa(rev), "--json")
		mustRun(t, d.addr, "tenant", "update", "new", "--cpus", "3") // another tenant: filtered out
		mustRun(t, d.addr, "tenant", "update", "old", "--cpus", "2")
		var ev vt.Event
		lr.until(t, func(l string) bool {
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			if ev.Name != "old" || ev.Revision <= rev {
				t.Errorf("event %+v: another tenant, or not after revision %d", ev, rev)
			}
			return ev.Tenant != nil && ev.Tenant.Resources.Cpus == 2
		})
		if ev.Type != "modified" {
			t.Errorf("event %+v", ev)
		}
		cancel()
		wait()
	})

	t.Run("timeout ends a watch without error", func(t *testing.T) {
		r := bbctl(t, d.addr, "tenant", "watch", "--timeout", "300ms")
		if r.code != 0 || !strings.Contains(r.stdout, "old") {
			t.Errorf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

func TestTenantDeleteWait(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "doomed")
	// The daemon's reconciler tears the tenant down and then drops its record; delete --wait
	// follows the tenant until then.
	r := bbctl(t, d.addr, "tenant", "delete", "doomed", "--force", "--wait", "--timeout", "10s")
	if r.code != 0 || r.stdout != "tenant \"doomed\" deleted\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if g := bbctl(t, d.addr, "tenant", "get", "doomed"); g.code != ExitNotFound {
		t.Errorf("delete --wait returned, but get exits %d", g.code)
	}
	// Waiting for a tenant that is gone already returns at once.
	if r := bbctl(t, d.addr, "tenant", "delete", "doomed", "--wait"); r.code != ExitNotFound {
		t.Errorf("second delete: exit %d, stderr %q", r.code, r.stderr)
	}
}
