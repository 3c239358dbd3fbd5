package validate

import (
	"strings"
	"testing"
)

// TestHomed: each bad homed template is an error finding of its rule naming the file (and the field), and a good
// one has none.
func TestHomed(t *testing.T) {
	good := []node{
		file("home-skeleton/.profile", "PATH=$HOME/bin:$PATH\n"),
		file("home-skeleton/.config/app/settings", "x"),
		link("home-skeleton/.config/app/current", "settings"),
		link("home-skeleton/.bashrc", ".config/app/../../.profile"),
		file("config/user-record.json", `{"userName":"tenant","disposition":"regular","shell":"/bin/sh","uid":4000,"memberOf":["users"]}`),
	}
	tests := []struct {
		name    string
		nodes   []node
		rule    string
		path    string
		message string
	}{
		{name: "good", nodes: good},
		{name: "uid in the system range", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","uid":999}`)), rule: "H3", path: "config/user-record.json", message: "uid 999 is not in the regular range"},
		{name: "gid of nobody", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","gid":65534}`)), rule: "H3", path: "config/user-record.json", message: "gid 65534"},
		{name: "uid of a dynamic user", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","uid":61184}`)), rule: "H3", path: "config/user-record.json", message: "uid 61184"},
		{name: "no userName", nodes: append(good, file("config/user-record.json", `{"realName":"x"}`)), rule: "H1", path: "config/user-record.json", message: "userName is required"},
		{name: "userName against the rules", nodes: append(good, file("config/user-record.json", `{"userName":"9lives"}`)), rule: "H1", path: "config/user-record.json", message: "systemd's user name rules"},
		{name: "record not an object", nodes: append(good, file("config/user-record.json", `["tenant"]`)), rule: "H1", path: "config/user-record.json", message: "not a JSON object"},
		{name: "wrong field type", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","uid":"4000"}`)), rule: "H1", path: "config/user-record.json", message: "uid is a JSON string"},
		{name: "system disposition", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","disposition":"system"}`)), rule: "H1", path: "config/user-record.json", message: `disposition "system"`},
		{name: "no record", nodes: good, rule: "H1", path: "config/user-record.json", message: "needs a user record"},
		{name: "secret section", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","secret":{"password":["hunter2"]}}`)), rule: "H2", path: "config/user-record.json", message: "secret:"},
		{name: "hashedPassword per machine", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","perMachine":[{"matchHostname":"a","privileged":{"hashedPassword":["x"]}}]}`)), rule: "H2", path: "config/user-record.json", message: "perMachine[0].privileged.hashedPassword"},
		{name: "SSH keys in the template", nodes: append(good, file("config/user-record.json", `{"userName":"tenant","privileged":{"sshAuthorizedKeys":["ssh-ed25519 AAAA"]}}`)), rule: "H2", path: "config/user-record.json", message: "privileged.sshAuthorizedKeys"},
		{name: "password hash in a skeleton file", nodes: append(good, file("home-skeleton/.config/app/backup", "root:x\nuser:$6$rounds=5000$saltsalt$Q2bKf7h5p9E1xY0kz5TjKpS7Zb1oT3eHq6u8c9d0e1f2g3h4i5j6k7l8m9n0o1p2q3r4s5t6u7v8w9x0y1z2A3B4C/:19000:0\n")), rule: "H2", path: "home-skeleton/.config/app/backup", message: "line 2 holds a password hash"},
		{name: "yescrypt hash in a script", nodes: append(good, file("scripts/setup.sh", "echo 'u:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7' | chpasswd -e\n")), rule: "H2", path: "scripts/setup.sh", message: "password hash"},
		{name: "skeleton symlink to an absolute path", nodes: append(good, link("home-skeleton/.ssh", "/root/.ssh")), rule: "H4", path: "home-skeleton/.ssh", message: `symlink to "/root/.ssh" leads out of the home`},
		{name: "skeleton symlink climbing out", nodes: append(good, link("home-skeleton/.config/escape", "../../../etc/shadow")), rule: "H4", path: "home-skeleton/.config/escape", message: "leads out of the home"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			nodes := tc.nodes
			if tc.name == "no record" {
				nodes = nodes[:len(nodes)-1]
			}
			build(t, dir, nodes...)
			rep, err := Tree(t.Context(), dir, KindHomed, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.rule == "" {
				if len(rep.Findings) != 0 {
					t.Fatalf("findings:\n%s", dump(rep))
				}
				return
			}
			checkFindings(t, rep, tc.rule, SeverityError)
			found := false
			for _, f := range rep.Findings {
				found = found || f.Rule == tc.rule && f.Path == tc.path && strings.Contains(f.Message, tc.message)
			}
			if !found {
				t.Errorf("no %s finding on %s saying %q:\n%s", tc.rule, tc.path, tc.message, dump(rep))
			}
		})
	}
}
