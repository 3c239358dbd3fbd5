package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/template/validate"
)

// extOracleCase is a machine root and an extension template checked by CheckExtension and merged by real
// systemd-sysext/confext 257 onto that root.
type extOracleCase struct {
	name  string
	class string
	// root is the machine's own os-release files (usr/lib/os-release, and etc/os-release when it differs).
	usrOSRelease, etcOSRelease string
	image                      string    // metadata.json's template.name (default "ext")
	files                      []extFile // the extension template's files besides metadata.json and the marker
	xattr                      string    // a file of the extension marked user.extension-release.strict=0
	// policy: BitBuilder refuses, systemd merges (the rule named).
	policy string
}

func (c extOracleCase) img() string {
	if c.image == "" {
		return "ext"
	}
	return c.image
}

func (c extOracleCase) marker() string {
	if c.class == machines.ClassConfext {
		return "etc/oracle-marker"
	}
	return "usr/share/oracle-marker"
}

func extOracleCases() []extOracleCase {
	debian := "ID=debian\nVERSION_ID=13\n"
	sys := func(content string) extFile { return sysextRelease("ext", content) }
	conf := func(content string) extFile { return confextRelease("ext", content) }
	return []extOracleCase{
		{name: "version-match", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=debian\nVERSION_ID=13\n")}},
		{name: "version-mismatch", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=debian\nVERSION_ID=12\n")}},
		{name: "any", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=_any\n"), {path: "opt/ext/data", content: "x"}}},
		{name: "other-id", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=fedora\nVERSION_ID=13\n")}},
		{name: "id-like", class: "sysext", usrOSRelease: "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n", files: []extFile{sys("ID=debian\nVERSION_ID=24.04\n")}},
		{name: "level-match", class: "sysext", usrOSRelease: "ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=2\n", files: []extFile{sys("ID=debian\nSYSEXT_LEVEL=2\n")}},
		{name: "level-mismatch", class: "sysext", usrOSRelease: "ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=2\n", files: []extFile{sys("ID=debian\nSYSEXT_LEVEL=3\nVERSION_ID=13\n")}},
		{name: "arch-other", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=_any\nARCHITECTURE=s390x\n")}},
		{name: "scope-initrd", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=_any\nSYSEXT_SCOPE=initrd\n")}},
		// The machine's own base: its /etc/os-release says something else than the template's usr/lib/os-release.
		{name: "machine-etc-os-release", class: "sysext", usrOSRelease: debian, etcOSRelease: "ID=custom\nVERSION_ID=1\n", files: []extFile{sys("ID=custom\nVERSION_ID=1\n")}},
		{name: "machine-etc-os-release-refuses", class: "sysext", usrOSRelease: debian, etcOSRelease: "ID=custom\nVERSION_ID=1\n", files: []extFile{sys("ID=debian\nVERSION_ID=13\n")}},
		// Bad input of the issue.
		{name: "ships-os-release", class: "sysext", usrOSRelease: debian, files: []extFile{sys("ID=_any\n"), {path: "usr/lib/os-release", content: "ID=evil\n"}}},
		{name: "no-release", class: "sysext", usrOSRelease: debian},
		{name: "release-named-after-use", class: "sysext", usrOSRelease: debian, files: []extFile{sysextRelease("use-name", "ID=_any\n")}},
		{name: "two-candidates", class: "sysext", usrOSRelease: debian, image: "ext_1",
			files: []extFile{sysextRelease("ext", "ID=_any\n"), sysextRelease("other", "ID=_any\n")},
			xattr: "usr/lib/extension-release.d/extension-release.other"},
		{name: "confext-any", class: "confext", usrOSRelease: debian, files: []extFile{conf("ID=_any\n")}},
		{name: "confext-version-mismatch", class: "confext", usrOSRelease: debian, files: []extFile{conf("ID=debian\nVERSION_ID=12\n")}},
		{name: "confext-no-release", class: "confext", usrOSRelease: debian, files: []extFile{sysextRelease("ext", "ID=_any\n")}},
		{name: "confext-executable", class: "confext", usrOSRelease: debian, files: []extFile{conf("ID=_any\n"), {path: "etc/ext/run.sh", content: "#!/bin/sh\n", mode: 0o755}}, policy: "D35"},
	}
}

// buildExtOracle makes case c under dir: the extension template's checkout at dir/src, and the machine root at
// dir/root with the extension handed over as the daemon hands it (LinkExtension), in a directory systemd-sysext
// searches under --root.
func buildExtOracle(t *testing.T, dir string, c extOracleCase) (src, root string) {
	t.Helper()
	src, root = filepath.Join(dir, "src"), filepath.Join(dir, "root")
	md := fmt.Sprintf(`{"template":{"type":%q,"version":"1.0.0","name":%q,"description":"oracle"}}`, c.class, c.img())
	writeTree(t, src, append(c.files, extFile{path: "metadata.json", content: md}, extFile{path: c.marker(), content: "merged\n"})...)
	if c.xattr != "" {
		if err := unix.Lsetxattr(filepath.Join(src, c.xattr), "user.extension-release.strict", []byte("0"), 0); err != nil {
			t.Fatalf("xattr: %v", err)
		}
	}
	writeTree(t, root, extFile{path: "usr/lib/os-release", content: c.usrOSRelease}, extFile{path: "usr/share/base", content: "base"}, extFile{path: "etc/base", content: "base"})
	if c.etcOSRelease != "" {
		writeTree(t, root, extFile{path: "etc/os-release", content: c.etcOSRelease})
	} else if err := os.Symlink("../usr/lib/os-release", filepath.Join(root, "etc/os-release")); err != nil {
		t.Fatal(err)
	}
	search := "var/lib/extensions"
	if c.class == machines.ClassConfext {
		search = "var/lib/confexts"
	}
	if err := os.MkdirAll(filepath.Join(root, search), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := machines.LinkExtension(t.Context(), src, filepath.Join(root, search, validate.ImageName(src)), c.class); err != nil {
		t.Fatal(err)
	}
	return src, root
}

// TestExtensionVerdictOracle: the verdict the daemon acts on before handing an extension to a machine
// (CheckExtension, against the machine's own root) is the verdict of real systemd-sysext/confext 257 merging the
// handed-over tree onto that root (`merge --root`), case by case; where BitBuilder is stricter by design (a confext
// with an executable) systemd merges and the verdict says why BitBuilder does not.
func TestExtensionVerdictOracle(t *testing.T) {
	testpolicy.RequireRoot(t, "the oracle boots the systemd 257 test host")
	cases := extOracleCases()
	work := t.TempDir()
	var script strings.Builder
	for i, c := range cases {
		buildExtOracle(t, filepath.Join(work, fmt.Sprintf("%02d", i)), c)
		tool := "systemd-" + c.class
		fmt.Fprintf(&script, "d=/oracle/%02d; %s --root=$d/root merge >$d/out 2>&1 && echo 0 >$d/rc || echo $? >$d/rc\n", i, tool)
		fmt.Fprintf(&script, "if [ -e $d/root/%s ]; then echo yes >$d/merged; else echo no >$d/merged; fi\n", c.marker())
		fmt.Fprintf(&script, "%s --root=$d/root unmerge >>$d/out 2>&1 || true\n", tool)
	}
	h := testhost.Start(t, testhost.Options{Name: "extoracle", Binds: []testhost.Bind{{Host: work, Guest: "/oracle"}}})
	if out, err := h.Shell(t.Context(), script.String()); err != nil {
		t.Fatalf("oracle script: %v\n%s", err, out)
	}
	agree := 0
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(work, fmt.Sprintf("%02d", i))
			got, err := os.ReadFile(filepath.Join(dir, "merged"))
			if err != nil {
				t.Fatal(err)
			}
			out, _ := os.ReadFile(filepath.Join(dir, "out"))
			merged := strings.TrimSpace(string(got)) == "yes"
			ok, reason, err := CheckExtension(t.Context(), filepath.Join(dir, "src"), c.class, filepath.Join(dir, "root"))
			if err != nil {
				t.Fatal(err)
			}
			if c.policy != "" {
				if !merged || ok || !strings.Contains(reason, c.policy) {
					t.Errorf("policy case: want systemd to merge and the daemon to refuse naming %s; merged=%v, verdict %v (%s)\nsystemd:\n%s", c.policy, merged, ok, reason, out)
				}
				return
			}
			if ok != merged {
				t.Errorf("systemd-%s merged=%v, the daemon's verdict %v (%s)\nsystemd:\n%s", c.class, merged, ok, reason, out)
				return
			}
			if !ok && reason == "" {
				t.Errorf("a refusal without a reason")
			}
			agree++
			t.Logf("merged=%v; verdict: %s", merged, reason)
		})
	}
	t.Logf("the daemon's verdict and systemd 257 agree on %d of %d cases (the rest are policy cases)", agree, len(cases))
}
