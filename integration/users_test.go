package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// The container template with systemd's user database: testdata/container-template.sh's tree plus libnss-systemd
// (glibc's getent reads the userdb drop-ins) and systemd-userdbd (userdbctl). The plain container template has
// neither, so a userdb record would be invisible to its libc: the test proves the user exists with the machine's
// own tools, as a login would see it.
var userdbRepo = &templateRepo{script: "testdata/userdb-template.sh", what: "userdb container"}

// exampleRepo makes a bare git repository (branch main) of examples/templates/<example> on this machine, after
// change (when not nil) edits the copy.
func exampleRepo(t *testing.T, example string, change func(dir string)) string {
	t.Helper()
	git := testpolicy.RequireTool(t, "git")
	work, bare := filepath.Join(t.TempDir(), "work"), filepath.Join(t.TempDir(), "repo.git")
	if out, err := exec.Command("cp", "-a", "../examples/templates/"+example, work).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if change != nil {
		change(work)
	}
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", example},
		{"clone", "-q", "--bare", work, bare},
	} {
		if out, err := exec.Command(git, args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return bare
}

// userKey is the SSH key the tenant record gives the user.
const userKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 alice@bitbuilder.test"

// TestUsersHomed: a user from the example homed template exists in a tenant's container (getent passwd through
// nss-systemd, userdbctl through systemd-userdbd, both the container's own), with the template's skeleton and the
// record's SSH key in ~/.ssh/authorized_keys and in privileged.sshAuthorizedKeys, owned by the user inside the
// container's user namespace; removing it from the record removes it. Homed templates with a uid in the system
// range, a password hash or a skeleton symlink out of the home are refused when added, naming file and rule; a
// user name that collides with a system user of the container's base is refused naming the field; neither
// changes the record or the container.
func TestUsersHomed(t *testing.T) {
	d := startDaemon(t, "users", "--no-host=false", "--resync=5s")
	h := d.h
	addTemplateRepo(t, d, userdbRepo.get(t), "udb", "container")
	guest := "/srv/templates/users-home.git"
	copyRepoIntoHost(t, h, exampleRepo(t, "homed", nil), guest)
	if r := d.call(t, asRoot, "io.bitbuilder.Template.Add", `{"name":"home","url":"file://`+guest+`","ref":"main"}`, "--more"); r.exit != 0 {
		t.Fatalf("Template.Add of the example homed template: %v", r)
	}

	// Bad homed templates never enter the registry; the error names the rule and the file.
	write := func(rel, data string) func(string) {
		return func(dir string) {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, bad := range []struct {
		name, rule, path string
		change           func(string)
	}{
		{"home-sysuid", "H3", "config/user-record.json", write("config/user-record.json", `{"userName":"tenant","disposition":"regular","uid":500}`)},
		{"home-hash", "H2", "home-skeleton/.config/passwd-backup", write("home-skeleton/.config/passwd-backup", "tenant:$6$saltsaltsalt$8nVxoIqYbqbbXcOTzu9NAy4iJbXgYT0aDpUqv3i7j3aTTh4qv1v2W7yJxkDVa4JtIzF2uGZ5eDd5kPFeJr0uG1:19000:0\n")},
		{"home-link", "H4", "home-skeleton/.ssh/known_hosts", func(dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "home-skeleton/.ssh"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/etc/ssh/ssh_known_hosts", filepath.Join(dir, "home-skeleton/.ssh/known_hosts")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		g := "/srv/templates/users-" + bad.name + ".git"
		copyRepoIntoHost(t, h, exampleRepo(t, "homed", bad.change), g)
		r := d.call(t, asRoot, "io.bitbuilder.Template.Add", `{"name":"`+bad.name+`","url":"file://`+g+`","ref":"main"}`)
		params := r.wantError(t, "io.bitbuilder.Template.ValidationFailed")
		found, _ := json.Marshal(params["findings"])
		if !strings.Contains(string(found), `"rule":"`+bad.rule+`"`) || !strings.Contains(string(found), `"path":"`+bad.path+`"`) {
			t.Errorf("%s: ValidationFailed does not name rule %s on %s: %s", bad.name, bad.rule, bad.path, found)
		}
		d.call(t, asRoot, "io.bitbuilder.Template.Get", `{"name":"`+bad.name+`"}`).wantError(t, "io.bitbuilder.Template.NoSuchTemplate")
	}

	d.create(t, `{"name":"us","resources":{"cpus":2,"memoryBytes":2147483648,"storageBytes":10737418240},`+
		`"templates":[{"role":"container","name":"udb","template":"udb"},{"role":"homed","name":"home","template":"home"}],`+
		`"machines":[{"name":"web","kind":"container","template":"udb"}]}`)
	tn := waitRunning(t, d, "us")
	leader := strconv.Itoa(machineOf(t, tn, "web").Status.Leader)
	inside := func(args ...string) result {
		return run(t, h, "", append([]string{"nsenter", "-t", leader, "-a"}, args...)...)
	}

	type user struct {
		Name              string   `json:"name"`
		Template          string   `json:"template"`
		SSHAuthorizedKeys []string `json:"sshAuthorizedKeys"`
		UID               int      `json:"uid"`
	}
	users := func(r result) []user {
		var reply struct {
			Tenant struct {
				Users []user `json:"users"`
			} `json:"tenant"`
		}
		r.decode(t, &reply)
		return reply.Tenant.Users
	}
	addedAt := time.Now()
	r := d.call(t, asRoot, "io.bitbuilder.Tenant.AddUser", fmt.Sprintf(`{"name":"us","user":"alice","template":"home","sshAuthorizedKeys":[%q]}`, userKey))
	if r.exit != 0 {
		t.Fatalf("AddUser: %v", r)
	}
	added := users(r)
	if len(added) != 1 || added[0].Name != "alice" || added[0].UID < 1000 || len(added[0].SSHAuthorizedKeys) != 1 {
		t.Fatalf("AddUser replied users %+v", added)
	}
	uid := strconv.Itoa(added[0].UID)
	if got := users(d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"us"}`)); len(got) != 1 || got[0].Name != "alice" {
		t.Fatalf("Tenant.Get shows users %+v", got)
	}

	// The container's libc (nss-systemd) and systemd's userdb see the user.
	var passwd string
	eventually(t, time.Minute, func() (bool, string) {
		r := inside("getent", "passwd", "alice")
		passwd = strings.TrimSpace(r.stdout)
		got := d.tenantCall(t, asRoot, "Get", `{"name":"us"}`)
		return r.exit == 0, fmt.Sprintf("getent passwd alice: %v; conditions %v", r, conditions(t, got))
	})
	t.Logf("AddUser to getent passwd in the container: %v", time.Since(addedAt).Round(time.Millisecond))
	eventually(t, time.Minute, func() (bool, string) {
		c := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"us"}`))["UsersProvisioned"]
		return c.Status == "true", fmt.Sprintf("UsersProvisioned: %+v", c)
	})
	if want := "alice:x:" + uid + ":" + uid + ":BitBuilder tenant user:/home/alice:/bin/sh"; passwd != want {
		t.Errorf("getent passwd alice = %q, want %q", passwd, want)
	}
	r = inside("userdbctl", "user", "--output=json", "alice")
	if r.exit != 0 {
		t.Fatalf("userdbctl user alice: %v", r)
	}
	var rec struct {
		UserName   string `json:"userName"`
		UID        int    `json:"uid"`
		Privileged struct {
			SSHAuthorizedKeys []string `json:"sshAuthorizedKeys"`
		} `json:"privileged"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
		t.Fatalf("userdbctl output: %v\n%s", err, r.stdout)
	}
	if rec.UserName != "alice" || strconv.Itoa(rec.UID) != uid || len(rec.Privileged.SSHAuthorizedKeys) != 1 || rec.Privileged.SSHAuthorizedKeys[0] != userKey {
		t.Errorf("userdbctl user alice: %+v", rec)
	}

	// The home: the skeleton, the key from the record, owned by the user inside the container.
	if out := mustRun(t, h, "nsenter", "-t", leader, "-a", "stat", "-c", "%n %U %a",
		"/home/alice", "/home/alice/.profile", "/home/alice/.config/systemd/user/tenant-motd.service", "/home/alice/.ssh", "/home/alice/.ssh/authorized_keys"); out !=
		"/home/alice alice 700\n/home/alice/.profile alice 644\n/home/alice/.config/systemd/user/tenant-motd.service alice 644\n/home/alice/.ssh alice 700\n/home/alice/.ssh/authorized_keys alice 600\n" {
		t.Errorf("the home in the container:\n%s", out)
	}
	// On the host the files carry the machine's uid range when nspawn chowned the root into it (ownership "chown"),
	// or the machine's own uids under an idmapped mount ("map"): either way the daemon wrote them as the root's
	// owner plus the uid inside.
	root := d.stateDir + "/tenants/us/machines/web/rootfs"
	t.Logf("on the host (uid gid name): %s", mustRun(t, h, "stat", "-c", "%u %g %n", root, root+"/home/alice", root+"/etc/userdb/alice.user"))
	if out := mustRun(t, h, "nsenter", "-t", leader, "-a", "cat", "/home/alice/.ssh/authorized_keys"); out != userKey+"\n" {
		t.Errorf("authorized_keys = %q", out)
	}
	if out := mustRun(t, h, "nsenter", "-t", leader, "-a", "su", "-s", "/bin/sh", "-c", "id -un; cat ~/.profile | head -n1", "alice"); !strings.HasPrefix(out, "alice\n# ~/.profile") {
		t.Errorf("as alice in the container: %q", out)
	}

	// A name that collides with a system user of the container's base, and one against systemd's rules: declared
	// errors naming the field; the record and the container keep what they had.
	before := d.tenantCall(t, asRoot, "Get", `{"name":"us"}`)
	params := d.call(t, asRoot, "io.bitbuilder.Tenant.AddUser", `{"name":"us","user":"messagebus","template":"home"}`).wantError(t, "io.bitbuilder.Tenant.InvalidField")
	if f, _ := params["field"].(string); !strings.HasPrefix(f, "users[") || !strings.HasSuffix(f, "].name") || !strings.Contains(fmt.Sprint(params["reason"]), "system user") || !strings.Contains(fmt.Sprint(params["reason"]), "etc/passwd") {
		t.Errorf("messagebus: %v", params)
	}
	params = d.call(t, asRoot, "io.bitbuilder.Tenant.AddUser", `{"name":"us","user":"9lives","template":"home"}`).wantError(t, "io.bitbuilder.Tenant.InvalidField")
	if params["field"] != "user.name" {
		t.Errorf("9lives: %v", params)
	}
	params = d.call(t, asRoot, "io.bitbuilder.Tenant.AddUser", `{"name":"us","user":"bob","template":"home","sshAuthorizedKeys":["not a key"]}`).wantError(t, "io.bitbuilder.Tenant.InvalidField")
	if f, _ := params["field"].(string); !strings.HasSuffix(f, ".sshAuthorizedKeys[0]") {
		t.Errorf("bad key: %v", params)
	}
	if got := users(d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"us"}`)); len(got) != 1 {
		t.Errorf("refused users changed the record: %+v", got)
	}
	if after := d.tenantCall(t, asRoot, "Get", `{"name":"us"}`); after.Revision != before.Revision {
		t.Logf("revision %d -> %d (status writes only)", before.Revision, after.Revision)
	}
	if out := mustRun(t, h, "nsenter", "-t", leader, "-a", "ls", "-A", "/etc/userdb", "/home"); strings.Contains(out, "messagebus") || strings.Contains(out, "9lives") || strings.Contains(out, "bob") || strings.Contains(out, ".bitbuilder") {
		t.Errorf("a refused user left something in the container:\n%s", out)
	}

	// bbctl lists the user.
	if out := mustRun(t, h, guestBin+"/bbctl", "--address", "unix:"+d.socket, "tenant", "user", "list", "us"); !strings.Contains(out, "alice") || !strings.Contains(out, uid) {
		t.Errorf("bbctl tenant user list:\n%s", out)
	}

	// Removing it from the record removes it from the container: its records and its home.
	removedAt := time.Now()
	if r := mustRun(t, h, guestBin+"/bbctl", "--address", "unix:"+d.socket, "tenant", "user", "remove", "us", "alice"); !strings.Contains(r, "removed") {
		t.Errorf("bbctl tenant user remove: %s", r)
	}
	eventually(t, time.Minute, func() (bool, string) {
		r := inside("getent", "passwd", "alice")
		return r.exit == 2, fmt.Sprintf("getent passwd alice after removal: %v", r)
	})
	t.Logf("bbctl tenant user remove to the user gone from the container: %v", time.Since(removedAt).Round(time.Millisecond))
	if out := mustRun(t, h, "nsenter", "-t", leader, "-a", "ls", "-A", "/etc/userdb", "/home"); strings.Contains(out, "alice") || strings.Contains(out, uid) || strings.Contains(out, ".bitbuilder") {
		t.Errorf("the removed user left something in the container:\n%s", out)
	}
	if r := inside("userdbctl", "user", "alice"); r.exit == 0 {
		t.Errorf("userdbctl still knows alice: %v", r)
	}
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"us"}`)
	eventually(t, machineBootTimeout, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"us"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
}
