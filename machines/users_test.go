package machines

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 ann@test"

// shift is the first uid of a container's range, as systemd-nspawn --private-users=pick with chown makes the
// owner of the root.
const shift = 0x80000

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(data, "->") {
			if err := os.Symlink(strings.TrimPrefix(data, "->"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// userFixture is a machine root owned by shift with a base's etc/passwd, and a homed template.
func userFixture(t *testing.T, skeleton map[string]string) (root, tpl string) {
	testpolicy.RequireRoot(t, "files owned by a container's uid range")
	root, tpl = filepath.Join(t.TempDir(), "rootfs"), filepath.Join(t.TempDir(), "homed")
	writeFiles(t, root, map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n"})
	if err := os.Chown(root, shift, shift); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"config/user-record.json": `{"userName":"tenant","realName":"Tenant","shell":"/bin/sh","disposition":"regular","uid":1234,"privileged":{"hashedPassword":["x"]}}`}
	for p, d := range skeleton {
		files["home-skeleton/"+p] = d
	}
	writeFiles(t, tpl, files)
	return root, tpl
}

// tree lists every path below dir with its owner and mode, "path uid mode" sorted, symlinks with their target.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := rel + " " + strconv.Itoa(int(st.Uid)) + " " + fi.Mode().String()
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			line += " -> " + l
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

// TestProvisionUser: the user's records and home are made in a root whose ownership is shifted, with the owners a
// machine sees as its root and the user; a second provisioning with other keys keeps the home's files; removal
// leaves nothing of it.
func TestProvisionUser(t *testing.T) {
	root, tpl := userFixture(t, map[string]string{".profile": "PATH=$HOME/bin:$PATH\n", ".config/app/conf": "x", ".config/app/link": "->conf"})
	spec := UserSpec{Name: "ann", UID: 1234, Keys: []string{testKey}, Template: tpl}
	if err := ProvisionUser(root, spec); err != nil {
		t.Fatal(err)
	}
	u, r := strconv.Itoa(shift+1234), strconv.Itoa(shift)
	want := []string{
		"etc 0 drwxr-xr-x",
		"etc/passwd 0 -rw-r--r--",
		"etc/userdb " + r + " drwxr-xr-x",
		"etc/userdb/1234.group " + r + " Lrwxrwxrwx -> ann.group",
		"etc/userdb/1234.user " + r + " Lrwxrwxrwx -> ann.user",
		"etc/userdb/ann.group " + r + " -rw-r--r--",
		"etc/userdb/ann.user " + r + " -rw-r--r--",
		"etc/userdb/ann.user-privileged " + r + " -rw-------",
		"home " + r + " drwxr-xr-x",
		"home/ann " + u + " drwx------",
		"home/ann/.config " + u + " drwxr-xr-x",
		"home/ann/.config/app " + u + " drwxr-xr-x",
		"home/ann/.config/app/conf " + u + " -rw-r--r--",
		"home/ann/.config/app/link " + u + " Lrwxrwxrwx -> conf",
		"home/ann/.profile " + u + " -rw-r--r--",
		"home/ann/.ssh " + u + " drwx------",
		"home/ann/.ssh/authorized_keys " + u + " -rw-------",
	}
	if got := tree(t, root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("root after provisioning:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rec, _ := os.ReadFile(filepath.Join(root, "etc/userdb/ann.user"))
	for _, s := range []string{`"userName": "ann"`, `"uid": 1234`, `"gid": 1234`, `"homeDirectory": "/home/ann"`, `"realName": "Tenant"`} {
		if !strings.Contains(string(rec), s) {
			t.Errorf("ann.user lacks %s:\n%s", s, rec)
		}
	}
	if strings.Contains(string(rec), "privileged") || strings.Contains(string(rec), "hashedPassword") {
		t.Errorf("ann.user carries the template's privileged part:\n%s", rec)
	}
	if p, _ := os.ReadFile(filepath.Join(root, "etc/userdb/ann.user-privileged")); !strings.Contains(string(p), testKey) {
		t.Errorf("ann.user-privileged: %s", p)
	}
	// Again, with other keys: the user's own files stay, the keys change.
	writeFiles(t, root, map[string]string{"home/ann/notes": "mine"})
	spec.Keys = nil
	if err := ProvisionUser(root, spec); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "home/ann/notes")); string(b) != "mine" {
		t.Errorf("the user's file is gone after a second provisioning")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "home/ann/.ssh/authorized_keys")); len(b) != 0 {
		t.Errorf("authorized_keys after the keys were dropped: %q", b)
	}
	if err := RemoveUser(root, "ann", 1234); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, root); strings.Join(got, "\n") != strings.Join([]string{"etc 0 drwxr-xr-x", "etc/passwd 0 -rw-r--r--", "etc/userdb " + r + " drwxr-xr-x", "home " + r + " drwxr-xr-x"}, "\n") {
		t.Fatalf("root after removal:\n%s", strings.Join(got, "\n"))
	}
}

// TestProvisionUserBadInput: a skeleton symlink out of the home, a system user's name or uid, and a symlink the
// machine planted towards the host are errors naming the file, and leave the root as it was.
func TestProvisionUserBadInput(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name     string
		skeleton map[string]string
		plant    map[string]string
		spec     UserSpec
		path     string
	}{
		{name: "skeleton symlink out", skeleton: map[string]string{".profile": "x", ".config/escape": "->../../etc/shadow"}, spec: UserSpec{Name: "ann", UID: 1234}, path: "home-skeleton/.config/escape"},
		{name: "absolute skeleton symlink", skeleton: map[string]string{".ssh/known_hosts": "->/etc/ssh/ssh_known_hosts"}, spec: UserSpec{Name: "ann", UID: 1234}, path: "home-skeleton/.ssh/known_hosts"},
		{name: "system user name", spec: UserSpec{Name: "messagebus", UID: 1234}, path: "etc/passwd"},
		{name: "system user uid", spec: UserSpec{Name: "ann", UID: 100}, path: "etc/passwd"},
		{name: "machine's symlink to the host", plant: map[string]string{"etc/userdb": "->" + outside}, spec: UserSpec{Name: "ann", UID: 1234}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, tpl := userFixture(t, tc.skeleton)
			writeFiles(t, root, tc.plant)
			before := tree(t, root)
			tc.spec.Template = tpl
			err := ProvisionUser(root, tc.spec)
			var ue *UserError
			switch {
			case err == nil:
				t.Fatal("provisioned")
			case tc.path != "" && (!errors.As(err, &ue) || ue.Path != tc.path):
				t.Fatalf("error %v, want a UserError on %s", err, tc.path)
			}
			if after := tree(t, root); strings.Join(after, "\n") != strings.Join(before, "\n") &&
				strings.Join(after, "\n") != strings.Join(append(before, "home "+strconv.Itoa(shift)+" drwxr-xr-x"), "\n") {
				t.Errorf("a failed provisioning changed the root (%v):\n%s\nbefore:\n%s", err, strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("written outside the root: %v", entries)
			}
		})
	}
}

func TestSkeletonLinkInside(t *testing.T) {
	for _, tc := range []struct {
		rel, link string
		in        bool
	}{
		{".profile", ".bashrc", true},
		{".config/a/b", "../c", true},
		{".config/a/b", "../../.profile", true},
		{".config/a/b", "../../../x", false},
		{".x", "..", false},
		{".x", "/etc/passwd", false},
		{".x", "", false},
		{"a/b", "./../b/../a", true},
		{"a/b", "./../b/../../a", false},
	} {
		if got := SkeletonLinkInside(tc.rel, tc.link); got != tc.in {
			t.Errorf("SkeletonLinkInside(%q, %q) = %v", tc.rel, tc.link, got)
		}
	}
}
