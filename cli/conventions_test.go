package cli

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// TestHelpAndVersionEverywhere runs every command, group and the bare bbctl with --help, -h
// and --version: each exits 0, prints to standard output and nothing to standard error, and
// never contacts the daemon (the socket does not exist).
func TestHelpAndVersionEverywhere(t *testing.T) {
	missing := "unix:" + filepath.Join(t.TempDir(), "no-such-socket")
	var lines [][]string
	lines = append(lines, nil)
	for _, g := range groupSummaries {
		lines = append(lines, []string{g.name})
	}
	for _, c := range commands() {
		for _, p := range c.paths() {
			lines = append(lines, strings.Fields(p))
		}
	}
	for _, words := range lines {
		for _, flag := range []string{"--help", "-h", "--version"} {
			args := append(append([]string(nil), words...), flag)
			r := bbctl(t, missing, args...)
			if r.code != 0 || r.stdout == "" || r.stderr != "" {
				t.Errorf("bbctl %q: exit %d, stdout %q, stderr %q; want exit 0, output, no error", args, r.code, r.stdout, r.stderr)
			}
			if flag == "--version" && r.stdout != "bbctl test\n" {
				t.Errorf("bbctl %q printed %q, want the version", args, r.stdout)
			}
		}
	}
	// --version before the command words, and as JSON.
	if r := bbctl(t, missing, "--version", "tenant", "get", "x"); r.code != 0 || r.stdout != "bbctl test\n" {
		t.Errorf("--version first: %+v", r)
	}
	if r := bbctl(t, missing, "tenant", "list", "--version", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "{\n  \"client\": \"test\"\n}" {
		t.Errorf("--version --json: %+v", r)
	}
	if r := bbctl(t, missing, "help", "tenant", "create"); r.code != 0 || !strings.Contains(r.stdout, "--version") {
		t.Errorf("help lists no --version: %+v", r)
	}
}

// TestSuggestionsAndFlagNames checks the "did you mean" hints and that errors spell flags
// GNU style, for command words and flags; none contacts the daemon.
func TestSuggestionsAndFlagNames(t *testing.T) {
	missing := "unix:" + filepath.Join(t.TempDir(), "no-such-socket")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "lst"}, `unknown command "tenant lst"; did you mean "tenant list"?`},
		{[]string{"tenant", "craete", "x"}, `did you mean "tenant create"?`},
		{[]string{"tenat", "list"}, `unknown command "tenat"; did you mean "tenant"?`},
		{[]string{"templates", "list"}, `did you mean "template"?`},
		{[]string{"verison"}, `did you mean "version"?`},
		{[]string{"tenant", "frobnicate"}, `unknown command "tenant frobnicate"` + "\n"},
		{[]string{"tenant", "list", "--jsn"}, "unknown flag --jsn; did you mean --json?"},
		{[]string{"tenant", "create", "x", "--memroy", "1G"}, "unknown flag --memroy; did you mean --memory?"},
		{[]string{"tenant", "delete", "x", "--froce"}, "did you mean --force?"},
		{[]string{"--adress", "/x", "tenant", "list"}, "unknown flag --adress; did you mean --address?"},
		{[]string{"tenant", "list", "--timeout"}, "flag --timeout needs a value"},
		{[]string{"tenant", "list", "-timeout", "soon"}, `invalid value "soon" for flag --timeout: parse error`},
		{[]string{"tenant", "watch", "--revision", "-3"}, `invalid value "-3" for flag --revision`},
	} {
		r := bbctl(t, missing, c.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("bbctl %q: exit %d, stderr %q; want exit 2 and %q", c.args, r.code, r.stderr, c.want)
		}
		if oneDash.MatchString(r.stderr) {
			t.Errorf("bbctl %q: a flag spelled with one dash: %q", c.args, r.stderr)
		}
	}
}

var oneDash = regexp.MustCompile(`(flag|argument:) -[a-z]`)

func TestAliases(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "a", "--stopped")
	for _, args := range [][]string{{"tenant", "ls"}, {"network", "ls"}, {"template", "ls"}, {"machine", "ls"}} {
		r := bbctl(t, d.addr, append(args, "--json")...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "[") {
			t.Errorf("bbctl %q: %+v", args, r)
		}
	}
	if out := mustRun(t, d.addr, "tenant", "rm", "a"); !strings.Contains(out, `tenant "a" is being deleted`) {
		t.Errorf("tenant rm: %q", out)
	}
}

// TestErrorsAsJSON checks that with --json every kind of error is one JSON object on
// standard error, with the Varlink error's name and parameters when the daemon sent one,
// nothing on standard output, and the exit code of the same error without --json.
func TestErrorsAsJSON(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "up")
	missing := "unix:" + filepath.Join(t.TempDir(), "no-such-socket")
	for _, c := range []struct {
		addr   string
		args   []string
		code   int
		name   string
		params map[string]any
		msg    string
	}{
		{d.addr, []string{"tenant", "get", "nope"}, ExitNotFound, "io.bitbuilder.Tenant.NoSuchTenant", map[string]any{"name": "nope"}, `tenant "nope" not found`},
		{d.addr, []string{"tenant", "create", "x", "--memory", "1M"}, ExitInvalid, "io.bitbuilder.Tenant.InvalidField",
			map[string]any{"field": "resources.memoryBytes", "reason": "1048576 is not between 33554432 (32 MiB) and 2^60"}, "invalid --memory: 1048576 is not between"},
		{d.addr, []string{"tenant", "create", "up"}, ExitConflict, "io.bitbuilder.Tenant.TenantExists", map[string]any{"name": "up"}, `tenant "up" exists already`},
		{d.addr, []string{"tenant", "delete", "up"}, ExitConflict, "bbctl.TenantRunning", map[string]any{"name": "up"}, "or delete it with --force"},
		{missing, []string{"tenant", "list"}, ExitUnreachable, "bbctl.DaemonUnreachable", map[string]any{}, "is bitbuilderd running?"},
		{missing, []string{"tenant", "lst"}, ExitUsage, "bbctl.UsageError", map[string]any{"command": "tenant"}, `did you mean "tenant list"?`},
		{missing, []string{"tenant", "get"}, ExitUsage, "bbctl.UsageError", map[string]any{"command": "tenant get"}, "usage: bbctl tenant get NAME"},
	} {
		for _, asJSON := range []bool{false, true} {
			args := c.args
			if asJSON {
				args = append([]string{"--json"}, args...)
			}
			r := bbctl(t, c.addr, args...)
			if r.code != c.code || r.stdout != "" {
				t.Errorf("bbctl %q: exit %d, stdout %q; want exit %d and no output", args, r.code, r.stdout, c.code)
			}
			if !asJSON {
				if !strings.Contains(r.stderr, c.msg) {
					t.Errorf("bbctl %q: stderr %q lacks %q", args, r.stderr, c.msg)
				}
				continue
			}
			var got errorJSON
			if err := json.Unmarshal([]byte(r.stderr), &got); err != nil || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("bbctl %q: stderr %q is not one JSON line: %v", args, r.stderr, err)
				continue
			}
			if got.Error != c.name || !strings.Contains(got.Message, c.msg) || !sameJSON(got.Parameters, c.params) {
				t.Errorf("bbctl %q: %+v; want error %s, parameters %v, message with %q", args, got, c.name, c.params, c.msg)
			}
		}
	}
	// Several names: each failure is a line of its own.
	r := bbctl(t, d.addr, "--json", "tenant", "stop", "nope1", "up", "nope2")
	if r.code != ExitNotFound || strings.Count(r.stderr, "NoSuchTenant") != 2 || strings.Count(r.stderr, "\n") != 2 {
		t.Errorf("several failures: %+v", r)
	}
}

func sameJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestFieldErrorsNameFlags checks that the daemon's field errors come back naming the flag
// that set the field.
func TestFieldErrorsNameFlags(t *testing.T) {
	d := startDaemon(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "create", "x", "--memory", "1M"}, "bbctl: invalid --memory: "},
		{[]string{"tenant", "create", "x", "--cpus", "100000"}, "bbctl: invalid --cpus: "},
		{[]string{"tenant", "create", "x", "--index", "4000"}, "bbctl: invalid --index: "},
		{[]string{"tenant", "create", "x", "--machine", "web:container:web"}, "bbctl: invalid --machine (value 1, TEMPLATE): "},
	} {
		r := bbctl(t, d.addr, c.args...)
		if r.code != ExitInvalid || !strings.HasPrefix(r.stderr, c.want) {
			t.Errorf("bbctl %q: exit %d, stderr %q; want exit 4 and %q", c.args, r.code, r.stderr, c.want)
		}
		for _, api := range []string{"resources.", "networkIndex", "machines["} {
			if strings.Contains(r.stderr, api) {
				t.Errorf("bbctl %q names the API field: %q", c.args, r.stderr)
			}
		}
	}
	for _, c := range []struct{ field, want string }{
		{"resources.memoryBytes", "--memory"},
		{"templates[1].role", "--template (value 2, ROLE)"},
		{"machines[0].memoryBytes", "--machine (value 1, memory=)"},
		{"parameters.ZONE", "--param ZONE"},
		{"peer.endpoint", "--endpoint"},
		{"somethingElse", "somethingElse"},
	} {
		if got := flagForField(c.field); got != c.want {
			t.Errorf("flagForField(%q) = %q, want %q", c.field, got, c.want)
		}
	}
}

// TestDeleteRunningNeedsForce: a running tenant is refused without --force, with the hint,
// and nothing changes; a stopped one and a forced one are deleted.
func TestDeleteRunningNeedsForce(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "up")
	mustRun(t, d.addr, "tenant", "create", "down", "--stopped")
	before := getTenant(t, d.addr, "up")
	r := bbctl(t, d.addr, "tenant", "delete", "up")
	if r.code != ExitConflict || !strings.Contains(r.stderr, `tenant "up" is running: stop it first (bbctl tenant stop up) or delete it with --force`) {
		t.Fatalf("delete of a running tenant: %+v", r)
	}
	if after := getTenant(t, d.addr, "up"); after.Phase == "deleting" || after.DesiredState != before.DesiredState {
		t.Errorf("refused delete changed the tenant: %+v", after)
	}
	r = bbctl(t, d.addr, "tenant", "delete", "down", "up", "--wait", "--timeout", "10s")
	if r.code != ExitConflict || !strings.Contains(r.stdout, `tenant "down" deleted`) || !strings.Contains(r.stderr, "--force") {
		t.Errorf("delete down up: %+v", r)
	}
	if r := bbctl(t, d.addr, "tenant", "delete", "up", "--force", "--wait", "--timeout", "10s"); r.code != 0 {
		t.Errorf("delete --force: %+v", r)
	}
	if r := bbctl(t, d.addr, "tenant", "get", "up"); r.code != ExitNotFound {
		t.Errorf("forced delete left the tenant: %+v", r)
	}
}

// TestSeveralNames: get takes several names, printing each found (an array with --json) and
// reporting each failure; the exit code is the first failure's.
func TestSeveralNames(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "a", "--stopped")
	mustRun(t, d.addr, "tenant", "create", "b", "--stopped")
	r := bbctl(t, d.addr, "tenant", "get", "a", "nope", "b")
	if r.code != ExitNotFound || strings.Count(r.stdout, "Name:") != 2 || !strings.Contains(r.stdout, "\n\nName:") ||
		r.stderr != "bbctl: tenant \"nope\" not found\n" {
		t.Errorf("tenant get a nope b: %+v", r)
	}
	r = bbctl(t, d.addr, "tenant", "get", "b", "a", "--json")
	var got []vt.Tenant
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 || len(got) != 2 || got[0].Name != "b" || got[1].Name != "a" {
		t.Errorf("tenant get b a --json: %+v (%v)", r, err)
	}
	r = bbctl(t, d.addr, "tenant", "get", "nope1", "nope2", "--json")
	if r.code != ExitNotFound || strings.TrimSpace(r.stdout) != "[]" || strings.Count(r.stderr, "NoSuchTenant") != 2 {
		t.Errorf("tenant get nope1 nope2 --json: %+v", r)
	}
	// One name: the record itself.
	var one vt.Tenant
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "tenant", "get", "a", "--json")), &one); err != nil || one.Name != "a" {
		t.Errorf("tenant get a --json: %v %+v", err, one)
	}
	var nets []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "network", "get", "a", "b", "--json")), &nets); err != nil || len(nets) != 2 || nets[1]["tenant"] != "b" {
		t.Errorf("network get a b --json: %v %v", nets, err)
	}
	r = bbctl(t, d.addr, "template", "rm", "nope1", "nope2")
	if r.code != ExitNotFound || strings.Count(r.stderr, "not found") != 2 {
		t.Errorf("template rm nope1 nope2: %+v", r)
	}
}

func TestErrorJSONNames(t *testing.T) {
	for _, c := range []struct {
		err  error
		name string
	}{
		{transportError(context.DeadlineExceeded, "/x"), "bbctl.Timeout"},
		{transportError(syscall.ECONNREFUSED, "/x"), "bbctl.DaemonUnreachable"},
		{transportError(syscall.EACCES, "/x"), "bbctl.PermissionDenied"},
		{&WaitError{Tenant: "a", Reason: "it was deleted"}, "bbctl.WaitFailed"},
		{&ValidationError{Errors: 2}, "bbctl.ValidationFailed"},
		{errors.New("something else"), "bbctl.Failure"},
	} {
		if got := asErrorJSON(c.err); got.Error != c.name || got.Message != c.err.Error() {
			t.Errorf("%v: %+v, want %s", c.err, got, c.name)
		}
	}
}

func TestJSONFlagGiven(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"tenant", "get", "--json"}, true},
		{[]string{"-json", "tenant"}, true},
		{[]string{"--json=false", "tenant"}, false},
		{[]string{"--json", "tenant", "--json=0"}, false},
		{[]string{"--json=false", "--json=true"}, true},
		{[]string{"machine", "shell", "a", "b", "--", "cmd", "--json"}, false},
		{[]string{"tenant", "get", "json"}, false},
	} {
		if got := jsonFlagGiven(c.args); got != c.want {
			t.Errorf("jsonFlagGiven(%q) = %v", c.args, got)
		}
	}
}
