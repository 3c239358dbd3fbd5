package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

const cliKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 ann@test"

// TestUserCommands runs tenant user add, list (table and --json) and remove against the daemon, with its registry
// holding the example homed template, and the errors of each.
func TestUserCommands(t *testing.T) {
	d := startDaemon(t)
	addTemplate(t, d.addr, "home", "homed")
	mustRun(t, d.addr, "tenant", "create", "acme", "--template", "homed:home:home")
	mustRun(t, d.addr, "tenant", "create", "zeta", "--template", "homed:dev:home")

	if out := mustRun(t, d.addr, "tenant", "user", "add", "acme", "ann", "--template", "home", "--ssh-key", cliKey); out != "user \"ann\" of tenant \"acme\": uid 1000, template home, 1 SSH keys\n" {
		t.Errorf("user add: %q", out)
	}
	mustRun(t, d.addr, "tenant", "user", "add", "acme", "bob", "--template", "home")
	mustRun(t, d.addr, "tenant", "user", "add", "zeta", "cy", "--template", "dev", "--ssh-key", cliKey, "--ssh-key", cliKey)
	golden(t, "user-list.golden", mustRun(t, d.addr, "tenant", "user", "list"))
	var entries []userEntry
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "tenant", "user", "ls", "acme", "--json")), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Tenant != "acme" || entries[0].User.Name != "ann" || entries[0].User.SshAuthorizedKeys[0] != cliKey || entries[1].User.Uid != 1001 {
		t.Errorf("user list --json: %+v", entries)
	}
	if out := mustRun(t, d.addr, "tenant", "user", "remove", "acme", "bob"); out != "user \"bob\" removed from tenant \"acme\"\n" {
		t.Errorf("user remove: %q", out)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tenant", "user", "add", "acme", "dan"}, ExitUsage, "--template is required"},
		{[]string{"tenant", "user", "add", "acme", "9lives", "--template", "home"}, ExitInvalid, `invalid user.name: "9lives" must start with a letter`},
		{[]string{"tenant", "user", "add", "acme", "dan", "--template", "nope"}, ExitInvalid, `invalid users[1].template: the tenant has no homed template use named "nope"`},
		{[]string{"tenant", "user", "add", "acme", "dan", "--template", "home", "--ssh-key", "hello"}, ExitInvalid, "invalid users[1].sshAuthorizedKeys[0]: no key type"},
		{[]string{"tenant", "user", "add", "acme", "dan", "--template", "home", "--ssh-key-file", "/nonexistent/keys"}, ExitUsage, "--ssh-key-file /nonexistent/keys"},
		{[]string{"tenant", "user", "add", "ghost", "dan", "--template", "home"}, ExitNotFound, `tenant "ghost" not found`},
		{[]string{"tenant", "user", "remove", "acme", "bob"}, ExitNotFound, `tenant "acme" has no user "bob"`},
	} {
		r := bbctl(t, d.addr, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("bbctl %q: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if got := mustRun(t, d.addr, "tenant", "user", "list", "acme"); strings.Contains(got, "dan") || !strings.Contains(got, "ann") {
		t.Errorf("refused users changed the tenant:\n%s", got)
	}
}
