package cli

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "taken", "--index", "5")
	rev := getTenant(t, d.addr, "taken").Revision

	missing := "unix:" + filepath.Join(t.TempDir(), "no-such-socket")

	// A socket file nobody listens on: connecting is refused.
	refused := filepath.Join(t.TempDir(), "refused")
	l, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	// A peer that accepts but never answers: only --timeout ends the call.
	silent := filepath.Join(t.TempDir(), "silent")
	sl, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sl.Close() })
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()

	// A peer that hangs up on every call: the connection is lost mid-call.
	hangup := filepath.Join(t.TempDir(), "hangup")
	hl, err := net.Listen("unix", hangup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hl.Close() })
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()

	cases := []struct {
		name   string
		addr   string
		args   []string
		code   int
		stderr string
	}{
		{"no such tenant", d.addr, []string{"tenant", "get", "nope"}, ExitNotFound, `bbctl: tenant "nope" not found`},
		{"delete of no such tenant", d.addr, []string{"tenant", "delete", "nope"}, ExitNotFound, `tenant "nope" not found`},
		{"no such template", d.addr, []string{"tenant", "create", "x", "--template", "machine:web:nope"}, ExitNotFound, `template "nope" not found`},
		{"invalid name", d.addr, []string{"tenant", "create", "Bad"}, ExitInvalid, `bbctl: invalid name "Bad": upper-case letter`},
		{"invalid field", d.addr, []string{"tenant", "create", "far", "--index", "4000"}, ExitInvalid, "bbctl: invalid --index: 4000 is outside"},
		{"tenant exists", d.addr, []string{"tenant", "create", "taken"}, ExitConflict, `bbctl: tenant "taken" exists already`},
		{"network index in use", d.addr, []string{"tenant", "create", "other", "--index", "5"}, ExitConflict, `network index 5 is used by tenant "taken"`},
		{"revision mismatch", d.addr, []string{"tenant", "update", "taken", "--cpus", "2", "--revision", itoa(rev + 100)}, ExitConflict, `tenant "taken" changed`},
		{"delete at an old revision", d.addr, []string{"tenant", "delete", "taken", "--force", "--revision", itoa(rev + 100)}, ExitConflict, "changed"},
		{"socket missing", missing, []string{"tenant", "list"}, ExitUnreachable, "does not exist (is bitbuilderd running?)"},
		{"connection refused", "unix:" + refused, []string{"tenant", "list"}, ExitUnreachable, "refused"},
		{"connection lost", hangup, []string{"tenant", "get", "a"}, ExitUnreachable, "lost the connection to the daemon"},
		{"timeout", silent, []string{"tenant", "list", "--timeout", "200ms"}, ExitFailure, "timed out"},

		// Usage errors never contact the daemon: with a missing socket they would exit 6.
		{"no command", missing, nil, ExitUsage, "no command given"},
		{"unknown command", missing, []string{"tenant", "frobnicate"}, ExitUsage, `unknown command "tenant frobnicate"`},
		{"unknown flag", missing, []string{"tenant", "list", "--colour"}, ExitUsage, "bbctl: unknown flag --colour\n"},
		{"missing argument", missing, []string{"tenant", "get"}, ExitUsage, "usage: bbctl tenant get NAME"},
		{"extra argument", missing, []string{"tenant", "update", "a", "b", "--cpus", "1"}, ExitUsage, "usage: bbctl tenant update NAME"},
		{"bad size", missing, []string{"tenant", "create", "x", "--memory", "2 parsecs"}, ExitUsage, "invalid value for flag --memory"},
		{"zero size", missing, []string{"tenant", "create", "x", "--storage", "0"}, ExitUsage, "invalid value for flag --storage"},
		{"bad cpus", missing, []string{"tenant", "create", "x", "--cpus", "-1"}, ExitUsage, "invalid value for flag --cpus"},
		{"bad index", missing, []string{"tenant", "create", "x", "--index", "two"}, ExitUsage, `invalid value "two" for flag --index: not an integer`},
		{"bad template use", missing, []string{"tenant", "create", "x", "--template", "machine:web"}, ExitUsage, "want ROLE:NAME:TEMPLATE"},
		{"bad parameter", missing, []string{"tenant", "create", "x", "--param", "novalue"}, ExitUsage, "want KEY=VALUE"},
		{"update without changes", missing, []string{"tenant", "update", "x"}, ExitUsage, "nothing to change"},
		{"bad public key", missing, []string{"network", "add-peer", "x", "--public-key", "abc"}, ExitUsage, "base64 of 32 bytes"},
		{"missing public key", missing, []string{"network", "add-peer", "x"}, ExitUsage, "--public-key is required"},
		{"bad allowed ips", missing, []string{"network", "add-peer", "x", "--public-key", strings.Repeat("A", 43) + "=", "--allowed-ips", "10.0.0.0/8,nope"}, ExitUsage, `"nope" is not a CIDR`},
		{"bad public key on stdin", missing, []string{"network", "add-peer", "x", "--public-key", "-"}, ExitUsage, "standard input has no key"},
		{"bad endpoint", missing, []string{"network", "add-peer", "x", "--public-key", strings.Repeat("A", 43) + "=", "--endpoint", "host"}, ExitUsage, "want host:port"},
		{"bad address", "tcp:1.2.3.4:5", []string{"tenant", "list"}, ExitUsage, "only unix:/path or a path"},
		{"bad completion shell", missing, []string{"completion", "tcsh"}, ExitUsage, `unknown shell "tcsh"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bbctl(t, c.addr, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
				t.Errorf("bbctl %q: exit %d, stderr %q; want exit %d and %q", c.args, r.code, r.stderr, c.code, c.stderr)
			}
			if r.code == ExitUsage && !strings.Contains(r.stderr, "Run 'bbctl help") {
				t.Errorf("usage error without a hint: %q", r.stderr)
			}
		})
	}
}

func TestAddress(t *testing.T) {
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "a")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"plain path", []string{"--address", d.socket, "tenant", "get", "a"}},
		{"unix: address after the command", []string{"tenant", "get", "a", "--address", "unix:" + d.socket}},
		{"environment", []string{"tenant", "get", "a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := "unix:/nonexistent/socket"
			if c.name == "environment" {
				addr = d.socket
			}
			if r := bbctl(t, addr, c.args...); r.code != 0 {
				t.Errorf("exit %d: %s", r.code, r.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"overview lists commands and exit codes", []string{"help"}, []string{"tenant create  create a tenant", "template validate", "network add-peer", "Exit codes:", "6  daemon unreachable"}},
		{"help for a command", []string{"help", "tenant", "create"}, []string{"Usage: bbctl tenant create", "--memory", "--template ROLE:NAME:TEMPLATE", "--address ADDR"}},
		{"-h on a command", []string{"tenant", "update", "-h"}, []string{"Usage: bbctl tenant update", "--revision R"}},
		{"-h on a group", []string{"network", "-h"}, []string{"bbctl network add-peer"}},
		{"-h alone", []string{"-h"}, []string{"Tenant commands:", "Machine commands:", "machine shell"}},
		{"help for an alias", []string{"help", "machine", "ls"}, []string{"Usage: bbctl machine list [TENANT...]", "Also: bbctl machine ls."}},
		{"-h on the machine group", []string{"machine", "-h"}, []string{"bbctl machine restart TENANT MACHINE [MACHINE...]"}},
		{"-h on a command with --wait", []string{"tenant", "start", "-h"}, []string{"Usage: bbctl tenant start NAME [NAME...]", "--wait", "5m with --wait"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bbctl(t, "unix:/nonexistent", c.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}
