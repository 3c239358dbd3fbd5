package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRootFSGood(t *testing.T) {
	dir := t.TempDir()
	build(t, dir, goodRoot()...)
	opts := testOptions()
	opts.Bootable = true
	rep, err := RootFS(t.Context(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Fatalf("good root has findings:\n%s", dump(rep))
	}
}

func TestRootFSRules(t *testing.T) {
	tests := []struct {
		name    string
		rm      []string
		add     []node
		bootOff bool
		rule    string
		sev     Severity
		allowed []string
	}{
		{name: "A1 no os-release", rm: []string{"usr/lib/os-release", "etc/os-release"}, rule: "A1", sev: SeverityError},
		{name: "A1 dangling etc link falls back", rm: []string{"usr/lib/os-release"}, add: []node{link("etc/os-release", "/nowhere")}, rule: "A1", sev: SeverityError},
		{name: "A1 symlink escaping the root resolves inside", rm: []string{"usr/lib/os-release"}, add: []node{link("etc/os-release", "../../../../../../etc/hostname")}, rule: "A1", sev: SeverityError},
		{name: "A1 symlink loop", rm: []string{"usr/lib/os-release"}, add: []node{link("etc/os-release", "os-release")}, rule: "A1", sev: SeverityError},
		{name: "A1 os-release is a FIFO", rm: []string{"usr/lib/os-release", "etc/os-release"}, add: []node{fifo("etc/os-release")}, rule: "A1", sev: SeverityError, allowed: []string{"C21"}},
		{name: "A2 absolute link", add: []node{link("etc/os-release", "/usr/lib/os-release")}, rule: "A2", sev: SeverityWarning},
		{name: "A2 seed direction", rm: []string{"etc/os-release", "usr/lib/os-release"}, add: []node{file("etc/os-release", goodOSRelease), link("usr/lib/os-release", "../../etc/os-release")}, rule: "A2", sev: SeverityWarning},
		{name: "A2 copy", add: []node{file("etc/os-release", goodOSRelease)}, rule: "A2", sev: SeverityWarning},
		{name: "A2 missing etc link", rm: []string{"etc/os-release"}, rule: "A2", sev: SeverityWarning},
		{name: "A3 different copies", add: []node{file("etc/os-release", goodOSRelease+"VARIANT_ID=x\n")}, rule: "A3", sev: SeverityWarning},
		{name: "A4 initrd-release", add: []node{file("etc/initrd-release", "")}, rule: "A4", sev: SeverityError},
		{name: "A5 no ID", add: []node{file("usr/lib/os-release", "NAME=x\nVERSION_ID=1\n")}, rule: "A5", sev: SeverityError},
		{name: "A6 uppercase ID", add: []node{file("usr/lib/os-release", "ID=Debian\nVERSION_ID=1\n")}, rule: "A6", sev: SeverityError},
		{name: "A6 bad ID_LIKE", add: []node{file("usr/lib/os-release", "ID=x\nID_LIKE=\"debian Ubuntu\"\nVERSION_ID=1\n")}, rule: "A6", sev: SeverityError},
		{name: "A6 bad VERSION_ID", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=\"1 LTS\"\n")}, rule: "A6", sev: SeverityError},
		{name: "A7 rolling", add: []node{file("usr/lib/os-release", "ID=arch\n")}, rule: "A7", sev: SeverityWarning},
		{name: "A8 bad date", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nSUPPORT_END=2026-13-01\n")}, rule: "A8", sev: SeverityWarning},
		{name: "A8 past", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nSUPPORT_END=2020-01-01\n")}, rule: "A8", sev: SeverityWarning},
		{name: "A9 hostname", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nDEFAULT_HOSTNAME=bad_host\n")}, rule: "A9", sev: SeverityWarning},
		{name: "A9 url", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nHOME_URL=\"ftp://x/\"\n")}, rule: "A9", sev: SeverityWarning},
		{name: "A9 scope in host", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nSYSEXT_SCOPE=system\n")}, rule: "A9", sev: SeverityWarning},
		{name: "A10 unknown key", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nDEBIAN_BTS=1\n")}, rule: "A10", sev: SeverityInfo},
		{name: "B syntax in os-release", add: []node{file("usr/lib/os-release", "ID=x\nVERSION_ID=1\nNAME=a b\n")}, rule: "B13", sev: SeverityError},
		{name: "X1 huge os-release", add: []node{file("usr/lib/os-release", "ID=x\n"+strings.Repeat("#", releaseLimit))}, rule: "X1", sev: SeverityError},
		{name: "C17 no usr", rm: []string{"usr", "sbin"}, add: []node{file("etc/os-release", goodOSRelease), file("sbin/init", "")}, bootOff: true, rule: "C17", sev: SeverityError, allowed: []string{"A2", "C20"}},
		{name: "C18 missing proc", rm: []string{"proc"}, rule: "C18", sev: SeverityWarning},
		{name: "C18 wrong mode", add: []node{dir("root", 0o755)}, rule: "C18", sev: SeverityWarning},
		{name: "C18 run not empty", add: []node{file("run/x", ""), dir("run", 0o555)}, rule: "C18", sev: SeverityWarning},
		{name: "C19 tmp mode", add: []node{dir("tmp", 0o755)}, rule: "C19", sev: SeverityWarning},
		{name: "C20 absolute compat link", add: []node{link("lib64", "/usr/lib64")}, rule: "C20", sev: SeverityWarning},
		{name: "C20 file in /", add: []node{file("README", "x")}, rule: "C20", sev: SeverityWarning},
		{name: "C20 var/run directory", rm: []string{"var/run"}, add: []node{dir("var/run", 0o755)}, rule: "C20", sev: SeverityWarning},
		{name: "C21 FIFO outside run", add: []node{fifo("var/fifo")}, rule: "C21", sev: SeverityWarning},
		{name: "C21 device outside dev", add: []node{whiteout("etc/null")}, rule: "C21", sev: SeverityWarning},
		{name: "C22 non-UTF-8 name", add: []node{file("etc/bad\xff", "")}, rule: "C22", sev: SeverityWarning},
		{name: "C23 real machine-id", add: []node{file("etc/machine-id", "0123456789abcdef0123456789abcdef\n")}, rule: "C23", sev: SeverityError},
		{name: "C23 garbage machine-id", add: []node{file("etc/machine-id", "hello\n")}, rule: "C23", sev: SeverityError},
		{name: "C23 uninitialized", add: []node{file("etc/machine-id", "uninitialized\n")}, rule: "C23", sev: SeverityInfo},
		{name: "C24 random seed", add: []node{file("var/lib/systemd/random-seed", "x")}, rule: "C24", sev: SeverityWarning},
		{name: "C25 no init", rm: []string{"usr/lib/systemd/systemd"}, rule: "C25", sev: SeverityError},
		{name: "C25 init not executable", add: []node{file("usr/lib/systemd/systemd", "")}, rule: "C25", sev: SeverityError},
		{name: "D37 sysext under usr", add: []node{file("usr/lib/extensions/foo/usr/lib/extension-release.d/extension-release.foo", "ID=_any\n")}, rule: "D37", sev: SeverityError},
		{name: "D37 sysext in confext path", add: []node{file("var/lib/confexts/foo/usr/lib/extension-release.d/extension-release.foo", "ID=_any\n")}, rule: "D37", sev: SeverityError, allowed: []string{"D26", "D34"}},
		{name: "D37 confext elsewhere", add: []node{file("srv/foo/etc/extension-release.d/extension-release.foo", "ID=_any\n")}, rule: "D37", sev: SeverityWarning},
		{name: "D37 embedded extension is validated", add: []node{file("var/lib/extensions/foo/usr/lib/extension-release.d/extension-release.foo", "VERSION_ID=1\n")}, rule: "D30", sev: SeverityError, allowed: []string{"DC"}},
		{name: "D37 embedded extension is checked against its root", add: []node{file("var/lib/extensions/foo/usr/lib/extension-release.d/extension-release.foo", "ID=bitbuilder\nVERSION_ID=2.0\n")}, rule: "DC", sev: SeverityError},
		{name: "D37 embedded extension shadowing its root", add: []node{file("var/lib/extensions/foo/usr/lib/extension-release.d/extension-release.foo", "ID=_any\n"), exe("var/lib/extensions/foo/usr/lib/systemd/systemd", "")}, rule: "D36", sev: SeverityWarning},
		{name: "D37 every directory in a search path is checked", add: []node{file("etc/extensions/foo/usr/bin/tool", "")}, rule: "D26", sev: SeverityError},
		{name: "D38 mutable mode", add: []node{dir("var/lib/extensions.mutable/usr", 0o700)}, rule: "D38", sev: SeverityError},
		{name: "D39 not a raw image", add: []node{file("var/lib/extensions/foo.img", "")}, rule: "D39", sev: SeverityWarning},
		{name: "D39 raw name", add: []node{file("var/lib/extensions/foo-1.2.raw", "")}, rule: "D39", sev: SeverityInfo},
		{name: "E40 misplaced voa", add: []node{dir("usr/lib/voa", 0o755)}, rule: "E40", sev: SeverityError},
		{name: "E40 run/voa in an image", add: []node{dir("run/voa", 0o755), dir("run", 0o555)}, rule: "E40", sev: SeverityWarning, allowed: []string{"C18"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, goodRoot()...)
			for _, p := range tc.rm {
				os.Chmod(filepath.Join(dir, filepath.Dir(p)), 0o755)
				remove(t, dir, p)
			}
			build(t, dir, tc.add...)
			opts := testOptions()
			opts.Bootable = !tc.bootOff
			rep, err := RootFS(t.Context(), dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, rep, tc.rule, tc.sev, tc.allowed...)
		})
	}
}
