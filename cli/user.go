package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// userEntry is one element of `tenant user list --json`.
type userEntry struct {
	Tenant string  `json:"tenant"`
	User   vt.User `json:"user"`
}

func userCommands() []*command {
	return []*command{
		{
			path: "tenant user add", args: "TENANT USER --template HOMED [--ssh-key KEY]... [--ssh-key-file FILE]...", minArgs: 2, maxArgs: 2,
			summary: "add a user, made from a homed template, to a tenant's machines (or replace its keys)",
			long: `Records the user in the tenant (io.bitbuilder.Tenant.AddUser); the daemon then provisions it
into each of the tenant's machines: a userdb record (/etc/userdb/USER.user) and a home
/home/USER copied from the homed template's skeleton, with the keys given here in
~/.ssh/authorized_keys and the record's privileged.sshAuthorizedKeys. Keys come from these
flags only, never from the template. Adding a user the tenant has replaces its template and
keys; it keeps its uid. The user name follows systemd's rules (a-z, A-Z or _ first, then also
0-9 and -, at most 31 characters) and must not be a system user of a machine's base.
With --json the tenant after the change is printed.`,
			setup: userAdd,
		},
		{
			path: "tenant user list", aliases: []string{"ls"}, args: "[TENANT...]", maxArgs: -1,
			summary: "list the users of all tenants or of the tenants named",
			long: `One row per user: its tenant, name, uid, homed template and number of SSH keys. With --json an
array of {"tenant": NAME, "user": USER}, the user as Tenant.Get returns it.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return userList
			},
		},
		{
			path: "tenant user remove", aliases: []string{"rm"}, args: "TENANT USER [USER...]", minArgs: 2, maxArgs: -1,
			summary: "remove users from a tenant and its machines (their homes go too)",
			long: `Removes each user from the tenant's record (io.bitbuilder.Tenant.RemoveUser); the daemon then
removes its record and its home from each machine. Acts on each user in turn and reports each
failure. With --json the tenant after the last change is printed.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return userRemove
			},
		},
	}
}

// userAdd is tenant user add.
func userAdd(fs *flag.FlagSet) func(context.Context, *env, []string) error {
	template := fs.String("template", "", "the tenant's homed template use to make the user from (required)")
	var keys, keyFiles stringList
	fs.Var(&keys, "ssh-key", "an SSH public key (an authorized_keys line) that may log in as the user; repeatable")
	fs.Var(&keyFiles, "ssh-key-file", "a file of SSH public keys, one a line (# comments and blank lines skipped); repeatable")
	return func(ctx context.Context, e *env, args []string) error {
		if *template == "" {
			return usagef("tenant user add", "--template is required")
		}
		all := append([]string{}, keys...)
		for _, f := range keyFiles {
			data, err := readKeyFile(f)
			if err != nil {
				return usagef("tenant user add", "--ssh-key-file %s: %v", f, err)
			}
			all = append(all, data...)
		}
		c, err := e.connect(ctx)
		if err != nil {
			return err
		}
		t, err := vt.AddUser().Call(ctx, c, args[0], args[1], *template, &all)
		if err != nil {
			return e.wrap(err, "io.bitbuilder.Tenant.AddUser")
		}
		if e.g.json {
			return printJSON(e.stdout(), t)
		}
		for _, u := range t.Users {
			if u.Name == args[1] {
				fmt.Fprintf(e.stdout(), "user %q of tenant %q: uid %d, template %s, %d SSH keys\n", u.Name, t.Name, u.Uid, u.Template, len(u.SshAuthorizedKeys))
			}
		}
		return nil
	}
}

// readKeyFile reads the keys of an authorized_keys file: its non-blank lines that are not comments.
func readKeyFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(data) > 1<<20 {
		return nil, errors.New("larger than 1 MiB")
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, nil
}

// userList is tenant user list.
func userList(ctx context.Context, e *env, args []string) error {
	ts, err := e.tenantsNamed(ctx, args)
	if err != nil {
		return err
	}
	us := []userEntry{}
	for _, t := range ts {
		for _, u := range t.Users {
			us = append(us, userEntry{Tenant: t.Name, User: u})
		}
	}
	if e.g.json {
		return printJSON(e.stdout(), us)
	}
	tb := newTable(e.stdout(), "TENANT", "USER", "UID", "TEMPLATE", "KEYS")
	for _, u := range us {
		tb.row(u.Tenant, u.User.Name, strconv.FormatInt(u.User.Uid, 10), u.User.Template, strconv.Itoa(len(u.User.SshAuthorizedKeys)))
	}
	return tb.flush()
}

// userRemove is tenant user remove.
func userRemove(ctx context.Context, e *env, args []string) error {
	c, err := e.connect(ctx)
	if err != nil {
		return err
	}
	f := failures{w: e.stderr(), several: len(args) > 2}
	var last *vt.Tenant
	for _, u := range args[1:] {
		t, err := vt.RemoveUser().Call(ctx, c, args[0], u)
		if err != nil {
			f.add(e.wrap(err, "io.bitbuilder.Tenant.RemoveUser"))
			continue
		}
		last = &t
		if !e.g.json {
			fmt.Fprintf(e.stdout(), "user %q removed from tenant %q\n", u, t.Name)
		}
	}
	if last != nil && e.g.json {
		if err := printJSON(e.stdout(), *last); err != nil {
			return err
		}
	}
	return f.err()
}
