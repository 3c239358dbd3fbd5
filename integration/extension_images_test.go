package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// loopHost boots a test host of its own for t, like the package host (binaries bound in, admin group and user),
// that may use loop devices, as systemd-dissect needs them to read a disk image (the package host has none):
// this machine's /dev/loop-control is bound in, block devices of the loop major are allowed to the host's cgroup,
// and the host gets /dev/loop0-63 nodes of its own (its /dev is nspawn's tmpfs: no node appears there when the
// kernel adds a loop device, and systemd-dissect removes the device it used when it is done).
func loopHost(t *testing.T, name string) *testhost.Host {
	t.Helper()
	testpolicy.Short(t, "boots a systemd test host")
	_, err := os.Stat("/dev/loop-control")
	testpolicy.RequireNoError(t, err, "loop devices (/dev/loop-control) for systemd-dissect")
	opts := shared.Options
	opts.Name = name
	opts.Binds = slices.Clone(shared.Options.Binds)
	opts.NspawnArgs = append(slices.Clone(shared.Options.NspawnArgs), "--bind=/dev/loop-control",
		"--property=DeviceAllow=/dev/loop-control rw", "--property=DeviceAllow=block-loop rw")
	h := testhost.Start(t, opts)
	if err := setup(h); err != nil {
		t.Fatalf("setting up the test host: %v", err)
	}
	mustRun(t, h, "sh", "-ec", "for i in $(seq 0 63); do [ -e /dev/loop$i ] || mknod -m 0660 /dev/loop$i b 7 $i; done")
	return h
}

// ext4Image makes a plain ext4 file system image (no partition table, which systemd-dissect takes as the root
// file system) holding files, with this machine's mkfs.ext4 -d, and returns its bytes.
func ext4Image(t *testing.T, files []repoFile, prepare ...func(dir string) error) []byte {
	t.Helper()
	mkfs := testpolicy.RequireTool(t, "mkfs.ext4")
	dir, img := filepath.Join(t.TempDir(), "tree"), filepath.Join(t.TempDir(), "img.raw")
	writeFiles(t, dir, files)
	for _, f := range prepare {
		if err := f(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-d", dir, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExtensionImages: an extension template that holds a disk image (NAME.sysext.raw) is inspected with the
// test host's systemd-dissect (v257), its files are extracted read-only (the host keeps no mount of it) and
// checked by the same rules against the machine's own root, then handed over like a tree: the tenant's container
// merges it with its own systemd-sysext (the file is visible under /usr inside) and the condition says what
// protects the image (Verity, signature). An image whose release does not match the machine's base is refused
// before anything reaches the machine, naming the image and the rule; a template whose image is not named after
// it is refused at Template.Add (rule D39).
func TestExtensionImages(t *testing.T) {
	h := loopHost(t, "extimg")
	d := startDaemonIn(t, h, "extimg", "--no-host=false", "--resync=5s")
	addContainerTemplate(t, d)
	rel := "usr/lib/extension-release.d/extension-release."
	good := ext4Image(t, []repoFile{{path: rel + "bbi", content: "ID=debian\nVERSION_ID=13\n"}, {path: "usr/share/bbi/hello", content: "from the image\n"}, {path: "opt/bbi/VERSION", content: "img1\n"}})
	bad := ext4Image(t, []repoFile{{path: rel + "bbw", content: "ID=fedora\nVERSION_ID=41\n"}, {path: "usr/share/bbw/hello", content: "wrong base\n"}})
	// The repositories hold the images as files; extensionRepo writes text, so the bytes go in as strings.
	bbi, _ := extensionRepo(t, "sysext", "bbi", []repoFile{{path: "bbi.sysext.raw", content: string(good)}})
	addTemplateRepo(t, d, bbi, "bbi", "sysext")
	bbw, _ := extensionRepo(t, "sysext", "bbw", []repoFile{{path: "bbw.sysext.raw", content: string(bad)}})
	addTemplateRepo(t, d, bbw, "bbw", "sysext")

	// Refused at Template.Add: an image not named after its template.
	misnamed, _ := extensionRepo(t, "sysext", "bbn", []repoFile{{path: "other.sysext.raw", content: string(good)}})
	guest := "/srv/templates/extimg-bbn.git"
	copyRepoIntoHost(t, h, misnamed, guest)
	if r := varlinkctl(t, h, asRoot, "call", "--more", "--json=short", d.socket, "io.bitbuilder.Template.Add", `{"name":"bbn","url":"file://`+guest+`","ref":"main"}`); r.exit == 0 ||
		!strings.Contains(r.stdout+r.stderr, "D39") || !strings.Contains(r.stdout+r.stderr, "other.sysext.raw") {
		t.Errorf("Template.Add of a misnamed image: want ValidationFailed naming D39 and other.sysext.raw, got %v", r)
	}

	tenantDir := d.stateDir + "/tenants/ia"
	d.create(t, `{"name":"ia","templates":[{"role":"container","name":"deb","template":"deb"},{"role":"sysext","name":"img","template":"bbi"}],"machines":[{"name":"web","kind":"container","template":"deb"}]}`)
	waitRunning(t, d, "ia")
	var a tenant
	eventually(t, machineBootTimeout, func() (bool, string) {
		a = d.tenantCall(t, asRoot, "Get", `{"name":"ia"}`)
		cs := conditions(t, a)
		return cs["ExtensionsApplied"].Status == "true" && strings.Contains(cs["ExtensionsApplied"].Message, "merged in 1 running containers"), fmt.Sprintf("conditions %v", cs)
	})
	if c := conditions(t, a)["ExtensionsCompatible"]; c.Status != "true" || !strings.Contains(c.Message, "bbi.sysext.raw (no Verity, unsigned)") {
		t.Errorf("ExtensionsCompatible: %+v, want compatible, naming the image and its integrity", c)
	}
	t.Logf("ExtensionsCompatible: %s", conditions(t, a)["ExtensionsCompatible"].Message)
	web := machineOf(t, a, "web")
	if got := strings.Join(web.Status.Extensions, " "); !strings.HasPrefix(got, "sysext/bbi@") {
		t.Errorf("ia-web's extensions: %q", got)
	}
	for p, want := range map[string]string{"/usr/share/bbi/hello": "from the image\n", "/opt/bbi/VERSION": "img1\n"} {
		if r := inMachine(t, d, web.Status.Leader, "cat", p); r.exit != 0 || r.stdout != want {
			t.Errorf("in ia-web, cat %s: %v", p, r)
		}
	}
	if out := inMachine(t, d, web.Status.Leader, "systemd-sysext", "list", "--no-legend").stdout; !strings.Contains(out, "bbi") {
		t.Errorf("systemd-sysext list in ia-web: %q", out)
	}
	// Nothing of the image stays mounted or attached on the host, and the checkout holds the files, not the image.
	if n := strings.Count(mustRun(t, h, "cat", "/proc/self/mountinfo"), " "+tenantDir); n != 0 {
		t.Errorf("%d mounts under %s on the host", n, tenantDir)
	}
	if out := mustRun(t, h, "sh", "-c", "losetup -n -O BACK-FILE 2>/dev/null || true"); strings.Contains(out, "bbi") {
		t.Errorf("a loop device still holds the image: %s", out)
	}
	if r := run(t, h, "", "sh", "-c", "ls "+tenantDir+"/extensions/sysext/img"); strings.Contains(r.stdout, ".raw") || !strings.Contains(r.stdout, "usr") {
		t.Errorf("the checkout of the image template holds %q, want the extracted usr/ and no image", r.stdout)
	}

	// An image whose release does not match the machine's base: refused before it reaches the machine, naming
	// the image and the rule.
	d.tenantCall(t, asRoot, "Update", `{"name":"ia","templates":[{"role":"container","name":"deb","template":"deb"},{"role":"sysext","name":"img","template":"bbi"},{"role":"sysext","name":"wrong","template":"bbw"}]}`)
	eventually(t, time.Minute, func() (bool, string) {
		c := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"ia"}`))["ExtensionsCompatible"]
		ok := c.Status == "false" && strings.Contains(c.Message, "disk image bbw.sysext.raw") && strings.Contains(c.Message, "DC") &&
			strings.Contains(c.Message, "ID=fedora matches neither the base's ID=debian")
		if ok {
			t.Logf("ExtensionsCompatible: %s", c.Message)
		}
		return ok, fmt.Sprintf("%+v", c)
	})
	if r := inMachine(t, d, web.Status.Leader, "ls", "/run/extensions"); strings.Contains(r.stdout, "bbw") || !strings.Contains(r.stdout, "bbi") {
		t.Errorf("/run/extensions in ia-web: %q, want bbi and not the refused bbw", r.stdout)
	}
	if r := inMachine(t, d, web.Status.Leader, "test", "-e", "/usr/share/bbw/hello"); r.exit == 0 {
		t.Error("ia-web has a file of the refused image")
	}

	// A file that is no disk image: the checkout fails naming the image, nothing of it reaches the machine, and
	// the machine keeps the extensions it has.
	garbage, _ := extensionRepo(t, "sysext", "bbg", []repoFile{{path: "bbg.sysext.raw", content: strings.Repeat("not an image\n", 1<<12)}})
	addTemplateRepo(t, d, garbage, "bbg", "sysext")
	d.tenantCall(t, asRoot, "Update", `{"name":"ia","templates":[{"role":"container","name":"deb","template":"deb"},{"role":"sysext","name":"img","template":"bbi"},{"role":"sysext","name":"junk","template":"bbg"}]}`)
	eventually(t, time.Minute, func() (bool, string) {
		c := conditions(t, d.tenantCall(t, asRoot, "Get", `{"name":"ia"}`))["TemplatesMaterialized"]
		ok := c.Status == "false" && strings.Contains(c.Message, `sysext "junk"`) && strings.Contains(c.Message, "disk image bbg.sysext.raw: systemd-dissect bbg.sysext.raw")
		if ok {
			t.Logf("TemplatesMaterialized: %s", c.Message)
		}
		return ok, fmt.Sprintf("%+v", c)
	})
	if r := run(t, h, "", "test", "-e", tenantDir+"/extensions/sysext/junk"); r.exit == 0 {
		t.Errorf("the failed checkout of junk is left in %s", tenantDir)
	}
	if r := inMachine(t, d, web.Status.Leader, "ls", "/run/extensions"); strings.TrimSpace(r.stdout) != "bbi" {
		t.Errorf("/run/extensions in ia-web: %q, want bbi only", r.stdout)
	}
	if r := inMachine(t, d, web.Status.Leader, "cat", "/usr/share/bbi/hello"); r.stdout != "from the image\n" {
		t.Errorf("ia-web lost bbi: %v", r)
	}

	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"ia"}`)
	eventually(t, 2*time.Minute, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"ia"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	if r := run(t, h, "", "test", "-e", tenantDir); r.exit == 0 {
		t.Errorf("%s left after delete", tenantDir)
	}
}

// TestExtensionImageBounds runs machines.InspectImage and ExtractImage (through testdata/extractimage) with the
// test host's systemd-dissect v257 on real images: a good image is extracted (usr/ and opt/ only, not the
// file system's lost+found), one with more entries or bytes than allowed is refused with ErrImageTooLarge and
// leaves nothing in the target, a file that is no disk image and an image without a release of the class are
// refused, naming why.
func TestExtensionImageBounds(t *testing.T) {
	h := loopHost(t, "extimgb")
	rel := "usr/lib/extension-release.d/extension-release."
	images := map[string][]byte{
		"good":    ext4Image(t, []repoFile{{path: rel + "bbi", content: "ID=_any\n"}, {path: "usr/share/bbi/big", content: strings.Repeat("x", 64<<10)}, {path: "opt/bbi/v", content: "1\n"}}),
		"garbage": []byte(strings.Repeat("not an image\n", 1<<12)),
		// A setuid file of another owner (extracted as root's, without the bit), and one with a FIFO (refused).
		"setuid": ext4Image(t, []repoFile{{path: rel + "bbi", content: "ID=_any\n"}, {path: "usr/bin/suid", content: "x\n"}}, func(dir string) error {
			p := filepath.Join(dir, "usr/bin/suid")
			if err := os.Chown(p, 1234, 1234); err != nil {
				return err
			}
			return os.Chmod(p, 0o4755|os.ModeSetuid)
		}),
		"fifo": ext4Image(t, []repoFile{{path: rel + "bbi", content: "ID=_any\n"}}, func(dir string) error {
			return syscall.Mkfifo(filepath.Join(dir, "usr/lib/pipe"), 0o644)
		}),
	}
	for name, b := range images {
		if err := h.MkdirAll("/srv/"+name, 0o755); err != nil {
			t.Fatal(err)
		}
		// Named as systemd-dissect expects: it reads the release file of the image's own name (bbi).
		if err := h.WriteFile("/srv/"+name+"/bbi.sysext.raw", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, img string
		args      []string
		exit      int
		want      string
	}{
		{"good", "good", nil, 0, "integrity: no Verity, unsigned\nextracted\n"},
		{"too many entries", "good", []string{"-max-entries", "5"}, 2, "entries, more than 5"},
		{"too many bytes", "good", []string{"-max-bytes", "4096"}, 2, "bytes in /usr and /opt, more than 4096"},
		{"not a disk image", "garbage", nil, 1, "systemd-dissect bbi.sysext.raw"},
		{"setuid file of another owner", "setuid", nil, 0, "extracted"},
		{"FIFO", "fifo", nil, 1, "the image holds usr/lib/pipe, a device node, FIFO or socket (rule C21)"},
		{"no release of the class", "good", []string{"-class", "confext"}, 1, "no confext extension-release file in the image (rule D26)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := "/srv/out-" + strings.ReplaceAll(tc.name, " ", "-")
			mustRun(t, h, "mkdir", "-p", dst)
			r := run(t, h, "", append(append([]string{extractimage}, tc.args...), "/srv/"+tc.img+"/bbi.sysext.raw", dst)...)
			if r.exit != tc.exit || !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Fatalf("extractimage: %v, want exit %d and %q", r, tc.exit, tc.want)
			}
			got := mustRun(t, h, "sh", "-c", "cd "+dst+" && find . | sort")
			want := ".\n"
			if tc.img == "setuid" {
				want = ".\n./usr\n./usr/bin\n./usr/bin/suid\n./usr/lib\n./usr/lib/extension-release.d\n./usr/lib/extension-release.d/extension-release.bbi\n"
				if got := mustRun(t, h, "stat", "-c", "%a %u %g", dst+"/usr/bin/suid"); got != "755 0 0\n" {
					t.Errorf("the extracted setuid file: mode, owner, group %q, want 755 0 0", got)
				}
			} else if tc.exit == 0 {
				want = ".\n./opt\n./opt/bbi\n./opt/bbi/v\n./usr\n./usr/lib\n./usr/lib/extension-release.d\n./usr/lib/extension-release.d/extension-release.bbi\n./usr/share\n./usr/share/bbi\n./usr/share/bbi/big\n"
			}
			if got != want {
				t.Errorf("%s holds:\n%s\nwant:\n%s", dst, got, want)
			}
		})
	}
	// The release file must be named after the image: the same image under another name has none.
	mustRun(t, h, "cp", "/srv/good/bbi.sysext.raw", "/srv/good/other.sysext.raw")
	if r := run(t, h, "", extractimage, "/srv/good/other.sysext.raw", "/srv/out-other"); r.exit != 1 || !strings.Contains(r.stderr, "rule D26") {
		t.Errorf("an image whose release file is named for another image: %v", r)
	}
	if n := strings.Count(mustRun(t, h, "cat", "/proc/self/mountinfo"), "/srv/"); n != 0 {
		t.Errorf("%d mounts under /srv left on the host", n)
	}
}

// withFiles returns a bare repository holding the branch main of the bare repository base with files added in
// one more commit.
func withFiles(t *testing.T, base string, files map[string][]byte) string {
	t.Helper()
	git := testpolicy.RequireTool(t, "git")
	work, bare := filepath.Join(t.TempDir(), "work"), filepath.Join(t.TempDir(), "repo.git")
	g := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(git, append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	g("clone", "-q", "-b", "main", base, work)
	for p, b := range files {
		p = filepath.Join(work, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g("-C", work, "add", "-A")
	g("-C", work, "commit", "-q", "-m", "extension images")
	g("clone", "-q", "--bare", work, bare)
	return bare
}

// TestTemplateExtensionImages: disk images in a container template's own extensions/ (NAME.sysext.raw) are
// inspected with the test host's systemd-dissect, extracted once per template commit beside the shared tree,
// checked against each machine's own root and handed over to the machines made from that template only: the
// file from the image is visible inside the tenant's container. An image whose release does not match the base,
// in another template, is refused naming the image and the rule, with nothing handed over; an image of the
// template with the name of one of the tenant's own extensions is refused, and the machine keeps the tenant's.
// Template.Add refuses anything in extensions/ that is not such an image (rule D39).
func TestTemplateExtensionImages(t *testing.T) {
	h := loopHost(t, "tplimg")
	d := startDaemonIn(t, h, "tplimg", "--no-host=false", "--resync=5s")
	rel := "usr/lib/extension-release.d/extension-release."
	good := ext4Image(t, []repoFile{{path: rel + "bbt", content: "ID=debian\nVERSION_ID=13\n"}, {path: "usr/share/bbt/hello", content: "from the template's image\n"}})
	bad := ext4Image(t, []repoFile{{path: rel + "bbx", content: "ID=fedora\nVERSION_ID=41\n"}, {path: "usr/share/bbx/hello", content: "wrong base\n"}})
	base := containerTemplate(t)
	_, goodCommit, _ := addTemplateRepo(t, d, withFiles(t, base, map[string][]byte{"extensions/bbt.sysext.raw": good}), "debimg", "container")
	addTemplateRepo(t, d, withFiles(t, base, map[string][]byte{"extensions/bbx.sysext.raw": bad}), "debbad", "container")

	// Refused at Template.Add: a file in extensions/ that is not NAME.sysext.raw or NAME.confext.raw.
	junk := withFiles(t, base, map[string][]byte{"extensions/notes.txt": []byte("not an image\n")})
	guest := "/srv/templates/tplimg-junk.git"
	copyRepoIntoHost(t, h, junk, guest)
	if r := varlinkctl(t, h, asRoot, "call", "--more", "--json=short", d.socket, "io.bitbuilder.Template.Add", `{"name":"junk","url":"file://`+guest+`","ref":"main"}`); r.exit == 0 ||
		!strings.Contains(r.stdout+r.stderr, "D39") || !strings.Contains(r.stdout+r.stderr, "extensions/notes.txt") {
		t.Errorf("Template.Add of a template with extensions/notes.txt: want ValidationFailed naming D39 and the file, got %v", r)
	}

	d.create(t, `{"name":"ta","templates":[{"role":"container","name":"img","template":"debimg"}],"machines":[{"name":"web","kind":"container","template":"img"}]}`)
	waitRunning(t, d, "ta")
	var a tenant
	eventually(t, machineBootTimeout, func() (bool, string) {
		a = d.tenantCall(t, asRoot, "Get", `{"name":"ta"}`)
		cs := conditions(t, a)
		return cs["ExtensionsApplied"].Status == "true" && strings.Contains(cs["ExtensionsApplied"].Message, "merged in 1 running containers"), fmt.Sprintf("conditions %v", cs)
	})
	if c := conditions(t, a)["ExtensionsCompatible"]; c.Status != "true" || !strings.Contains(c.Message, "bbt.sysext.raw (no Verity, unsigned) of container template debimg") {
		t.Errorf("ExtensionsCompatible: %+v, want compatible, naming the template's image and its integrity", c)
	}
	t.Logf("ExtensionsCompatible: %s", conditions(t, a)["ExtensionsCompatible"].Message)
	web := machineOf(t, a, "web")
	if got := strings.Join(web.Status.Extensions, " "); got != "sysext/bbt@"+goodCommit {
		t.Errorf("ta-web's extensions: %q, want sysext/bbt@%s", got, goodCommit)
	}
	if r := inMachine(t, d, web.Status.Leader, "cat", "/usr/share/bbt/hello"); r.exit != 0 || r.stdout != "from the template's image\n" {
		t.Errorf("in ta-web, cat /usr/share/bbt/hello: %v", r)
	}
	// Extracted once per template commit, beside the shared tree; the machine's copy is hard-linked from there.
	cache := d.stateDir + "/trees/debimg/" + goodCommit + ".extensions/sysext/bbt/usr/share/bbt/hello"
	handed := d.stateDir + "/tenants/ta/machines/web/extensions/sysext/bbt/usr/share/bbt/hello"
	if a, b := run(t, h, "", "stat", "-c", "%i", cache), run(t, h, "", "stat", "-c", "%i", handed); a.exit != 0 || b.exit != 0 || a.stdout != b.stdout {
		t.Errorf("the cache %s and the handed-over %s are not one file: %v %v", cache, handed, a, b)
	}
	if n := strings.Count(mustRun(t, h, "cat", "/proc/self/mountinfo"), d.stateDir+"/trees"); n != 0 {
		t.Errorf("%d mounts under the shared trees on the host", n)
	}

	// A machine of the other template: its image does not match the base and is refused, naming image and
	// rule; nothing of it is handed over. web does not get it either (it is not made from that template).
	d.tenantCall(t, asRoot, "Update", `{"name":"ta","templates":[{"role":"container","name":"img","template":"debimg"},{"role":"container","name":"bad","template":"debbad"}],`+
		`"machines":[{"name":"web","kind":"container","template":"img"},{"name":"other","kind":"container","template":"bad"}]}`)
	var other machine
	eventually(t, machineBootTimeout, func() (bool, string) {
		a = d.tenantCall(t, asRoot, "Get", `{"name":"ta"}`)
		c := conditions(t, a)["ExtensionsCompatible"]
		other = machineOf(t, a, "other")
		ok := c.Status == "false" && strings.Contains(c.Message, "disk image extensions/bbx.sysext.raw of container template debbad") &&
			strings.Contains(c.Message, "for machine other") && strings.Contains(c.Message, "DC") &&
			strings.Contains(c.Message, "ID=fedora matches neither the base's ID=debian") && other.Status != nil && other.Status.State == "running" && other.Status.Leader > 0
		return ok, fmt.Sprintf("%+v, other %+v", c, other.Status)
	})
	t.Logf("ExtensionsCompatible: %s", conditions(t, a)["ExtensionsCompatible"].Message)
	if len(other.Status.Extensions) != 0 {
		t.Errorf("ta-other was handed %v", other.Status.Extensions)
	}
	if r := inMachine(t, d, other.Status.Leader, "ls", "-A", "/run/extensions"); r.exit != 0 || strings.TrimSpace(r.stdout) != "" {
		t.Errorf("/run/extensions in ta-other: %v, want it empty", r)
	}
	if r := inMachine(t, d, other.Status.Leader, "test", "-e", "/usr/share/bbx/hello"); r.exit == 0 {
		t.Error("ta-other has a file of the refused image")
	}
	if r := inMachine(t, d, web.Status.Leader, "ls", "/run/extensions"); strings.TrimSpace(r.stdout) != "bbt" {
		t.Errorf("/run/extensions in ta-web: %q, want bbt only", r.stdout)
	}

	// The tenant's own sysext named like the template's image: the template's is refused, web keeps the tenant's.
	own, _ := extensionRepo(t, "sysext", "bbt", []repoFile{{path: rel + "bbt", content: "ID=debian\nVERSION_ID=13\n"}, {path: "usr/share/bbt/hello", content: "from the tenant\n"}})
	addTemplateRepo(t, d, own, "bbt", "sysext")
	d.tenantCall(t, asRoot, "Update", `{"name":"ta","templates":[{"role":"container","name":"img","template":"debimg"},{"role":"sysext","name":"own","template":"bbt"}],`+
		`"machines":[{"name":"web","kind":"container","template":"img"}]}`)
	eventually(t, machineBootTimeout, func() (bool, string) {
		a = d.tenantCall(t, asRoot, "Get", `{"name":"ta"}`)
		c := conditions(t, a)["ExtensionsCompatible"]
		r := inMachine(t, d, web.Status.Leader, "cat", "/usr/share/bbt/hello")
		ok := c.Status == "false" && strings.Contains(c.Message, "disk image extensions/bbt.sysext.raw of container template debimg") &&
			strings.Contains(c.Message, "is also the image of the tenant's") && r.stdout == "from the tenant\n"
		return ok, fmt.Sprintf("%+v; in web: %v", c, r)
	})
	t.Logf("ExtensionsCompatible: %s", conditions(t, a)["ExtensionsCompatible"].Message)

	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"ta"}`)
	eventually(t, 2*time.Minute, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"ta"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
}
