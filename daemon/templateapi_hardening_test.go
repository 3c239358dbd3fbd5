package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/template/validate"
)

// newTemplateAPI returns a Template API over a real registry holding the example sysext
// template as "tools", and over tenants whose store fails on demand, served on a real socket.
func newTemplateAPI(t *testing.T, mutate func(*templateAPI)) (*client, *failingStore) {
	t.Helper()
	repo := gitRepoFrom(t, "../examples/templates/sysext")
	dir := t.TempDir()
	reg, err := template.New(template.Config{Dir: filepath.Join(dir, "templates"), Validate: registryValidator(nil), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	if _, err := reg.Add(t.Context(), "tools", repo, "main", nil); err != nil {
		t.Fatal(err)
	}
	svc, st := newFailingTenants(t)
	api := &templateAPI{reg: reg, tenants: svc, scratch: filepath.Join(dir, "validate"), log: discardLogger()}
	if mutate != nil {
		mutate(api)
	}
	sock := serveAPIs(t, rpc.Interface{Dispatcher: iobitbuildertemplate.VarlinkNew(api)})
	return dial(t, sock), st
}

// Remove's "in use" guard fails closed: when the tenants cannot be read, nothing is removed.
func TestTemplateRemoveRefusesWhenTenantsCannotBeRead(t *testing.T) {
	c, st := newTemplateAPI(t, nil)
	st.fail.Store(true)
	wantError(t, c.call("io.bitbuilder.Template.Remove", `{"name":"tools"}`), "io.bitbuilder.Template.StorageFailure", nil)
	wantError(t, c.call("io.bitbuilder.Template.Get", `{"name":"tools"}`), "io.bitbuilder.Template.StorageFailure", nil)
	st.fail.Store(false)
	if r := c.call("io.bitbuilder.Template.Get", `{"name":"tools"}`); r.Error != "" {
		t.Fatalf("the template was removed although its users were unknown: %s %v", r.Error, r.Parameters)
	}
	if r := c.call("io.bitbuilder.Template.Remove", `{"name":"tools"}`); r.Error != "" {
		t.Fatalf("Remove with the store back: %s %v", r.Error, r.Parameters)
	}
	wantError(t, c.call("io.bitbuilder.Template.Get", `{"name":"tools"}`), "io.bitbuilder.Template.NoSuchTemplate", nil)
}

// A commit the validator refuses is ValidationFailed with each finding's own rule, severity
// and path, as the validator reported them.
func TestValidationFailedCarriesRulesAndPaths(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "sysext")
	if out, err := exec.Command("cp", "-a", "../examples/templates/sysext", broken).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(broken, "usr/lib/extension-release.d")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "usr/lib/os-release"), []byte("ID=debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := validate.Tree(t.Context(), broken, validate.KindSysext, validate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range rep.Errors() {
		want = append(want, fmt.Sprintf("%s %s %s", f.Rule, f.Severity, f.Path))
	}
	if len(want) == 0 {
		t.Fatal("the broken tree has no validation errors")
	}
	repo := gitRepoFrom(t, broken)

	d := startDaemon(t)
	r := dial(t, d.socket).call("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"broken","url":%q,"ref":"main"}`, repo))
	wantError(t, r, "io.bitbuilder.Template.ValidationFailed", map[string]any{"name": "broken"})
	var got []string
	for _, f := range r.Parameters["findings"].([]any) {
		f := f.(map[string]any)
		got = append(got, fmt.Sprintf("%s %s %s", f["rule"], f["severity"], f["path"]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("ValidationFailed findings (rule severity path):\n got %q\nwant %q", got, want)
	}
}

// Findings travel through the registry as strings; any path reads back.
func TestFindingRoundTrip(t *testing.T) {
	for _, f := range []validate.Finding{
		{Rule: "D27", Severity: validate.SeverityError, Path: "usr/lib/extension-release.d", Message: "missing: add it"},
		{Rule: "A1", Severity: validate.SeverityError, Path: `odd: "name"\n: error X1: y`, Message: "a: b: c"},
		{Rule: "C25", Severity: validate.SeverityError, Path: "", Message: ""},
	} {
		got := parseFinding(formatFinding(f))
		if got.Rule != f.Rule || got.Severity != string(f.Severity) || got.Path != f.Path || got.Message != f.Message {
			t.Errorf("parseFinding(formatFinding(%+v)) = %+v", f, got)
		}
	}
	if got := parseFinding("not a finding"); got.Rule != "validation" || got.Message != "not a finding" {
		t.Errorf("parseFinding of another string = %+v", got)
	}
}

// countingCheckout counts checkouts and the most that ran at once.
type countingCheckout struct {
	reg              *template.Registry
	delay            time.Duration
	total, now, most atomic.Int64
}

func (cc *countingCheckout) checkout(ctx context.Context, name, commit, dir string) error {
	cc.total.Add(1)
	n := cc.now.Add(1)
	defer cc.now.Add(-1)
	for {
		m := cc.most.Load()
		if n <= m || cc.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(cc.delay)
	return cc.reg.Materialize(ctx, name, commit, "", dir, nil)
}

// Validating a registered template again is served from the kept verdict: no second checkout.
// Another type or architecture is another verdict.
func TestValidateByNameIsKept(t *testing.T) {
	cc := &countingCheckout{}
	c, _ := newTemplateAPI(t, func(a *templateAPI) {
		cc.reg = a.reg
		a.checkout = cc.checkout
	})
	first := c.call("io.bitbuilder.Template.Validate", `{"name":"tools"}`)
	if first.Error != "" || first.Parameters["errors"] != 0.0 {
		t.Fatalf("Validate: %v", first)
	}
	second := c.call("io.bitbuilder.Template.Validate", `{"name":"tools"}`)
	if fmt.Sprint(second) != fmt.Sprint(first) {
		t.Errorf("second Validate = %v, want %v", second, first)
	}
	if n := cc.total.Load(); n != 1 {
		t.Fatalf("two Validate calls of one commit checked it out %d times, want 1", n)
	}
	for _, p := range []string{`{"name":"tools","architecture":"arm64"}`, `{"name":"tools","type":"confext"}`, `{"name":"tools","architecture":"arm64"}`} {
		if r := c.call("io.bitbuilder.Template.Validate", p); r.Error != "" {
			t.Fatalf("Validate %s: %v", p, r)
		}
	}
	if n := cc.total.Load(); n != 3 {
		t.Errorf("checkouts after three more calls of two new verdicts: %d, want 3", n)
	}
	// A bad type is refused before any checkout.
	wantError(t, c.call("io.bitbuilder.Template.Validate", `{"name":"tools","type":"nope"}`), "io.bitbuilder.Template.InvalidField", map[string]any{"field": "type"})
	if n := cc.total.Load(); n != 3 {
		t.Errorf("a refused type checked out: %d checkouts", n)
	}
}

// Many concurrent Validate calls, on their own connections, never run more validations at
// once than the limit; calls for one verdict run it once.
func TestValidateConcurrencyIsLimited(t *testing.T) {
	const limit = 2
	cc := &countingCheckout{delay: 20 * time.Millisecond}
	c, _ := newTemplateAPI(t, func(a *templateAPI) {
		cc.reg = a.reg
		a.checkout = cc.checkout
		a.validations.limit = limit
	})
	archs := []string{"x86-64", "x86", "arm64", "arm", "riscv64", "s390x", "ppc64-le", "mips", "loongarch64", "sparc64", "alpha", "ia64"}
	conns := make([]*client, 2*len(archs))
	for i := range conns {
		conns[i] = dialLike(t, c)
	}
	var wg sync.WaitGroup
	errs := make(chan string, len(conns))
	for i, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn.send(fmt.Sprintf(`{"method":"io.bitbuilder.Template.Validate","parameters":{"name":"tools","architecture":%q}}`, archs[i%len(archs)]))
			r, err := cn.read()
			if err != nil || r.Error != "" {
				errs <- fmt.Sprintf("call %d: %v %s %v", i, err, r.Error, r.Parameters)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if m := cc.most.Load(); m > limit {
		t.Errorf("%d validations ran at once, limit %d", m, limit)
	}
	if n := cc.total.Load(); n != int64(len(archs)) {
		t.Errorf("%d calls of %d verdicts checked out %d times", len(conns), len(archs), n)
	}
}

// dialLike opens another connection to the server c is connected to.
func dialLike(t *testing.T, c *client) *client {
	return dial(t, c.conn.RemoteAddr().String())
}

// A caller over the limit waits only as long as its context allows, and so does a caller
// waiting for the same verdict in flight.
func TestValidationsWaitIsBoundedByContext(t *testing.T) {
	vs := &validations{limit: 1}
	release := make(chan struct{})
	running := make(chan struct{})
	key := verdictKey{template: "t", commit: "c"}
	go vs.run(context.Background(), &key, func() (verdict, error) {
		close(running)
		<-release
		return verdict{}, nil
	})
	<-running
	for _, k := range []*verdictKey{nil, {template: "other"}, &key} {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		_, err := vs.run(ctx, k, func() (verdict, error) { t.Error("ran over the limit"); return verdict{}, nil })
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("run(%v) over the limit = %v after %v, want the context's deadline", k, err, time.Since(start))
		}
	}
	close(release)
	ran := false
	if _, err := vs.run(t.Context(), &key, func() (verdict, error) { ran = true; return verdict{}, nil }); err != nil || ran {
		t.Errorf("the verdict was not kept: err %v, ran again %v", err, ran)
	}
}

// The kept verdicts are bounded in number and in age; errors are not kept.
func TestValidationsKeepIsBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	vs := &validations{size: 2, ttl: time.Minute, now: func() time.Time { return now }}
	runs := 0
	run := func(name string) {
		t.Helper()
		if _, err := vs.run(t.Context(), &verdictKey{template: name}, func() (verdict, error) { runs++; return verdict{}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	run("a")
	run("b")
	run("a") // kept; a is now the most recently used
	run("c") // drops b
	run("a")
	if runs != 3 {
		t.Fatalf("runs = %d, want 3", runs)
	}
	run("b")
	if runs != 4 {
		t.Fatalf("b was kept beyond the size: runs = %d", runs)
	}
	now = now.Add(time.Minute)
	run("b")
	if runs != 5 {
		t.Fatalf("a verdict was served after its TTL: runs = %d", runs)
	}
	failed := errors.New("checkout failed")
	for range 2 {
		if _, err := vs.run(t.Context(), &verdictKey{template: "e"}, func() (verdict, error) { runs++; return verdict{}, failed }); !errors.Is(err, failed) {
			t.Fatalf("run = %v, want %v", err, failed)
		}
	}
	if runs != 7 {
		t.Errorf("a failure was kept: runs = %d", runs)
	}
	if len(vs.kept) > 2 || vs.lru.Len() > 2 {
		t.Errorf("%d verdicts kept, size 2", len(vs.kept))
	}
}
