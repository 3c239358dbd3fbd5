package validate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

const goodExtRelease = "ID=bitbuilder\nVERSION_ID=1.0\nSYSEXT_LEVEL=1.0\nCONFEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n"

func goodSysext(name string) []node {
	return []node{
		file("usr/lib/extension-release.d/extension-release."+name, goodExtRelease),
		exe("usr/bin/tool", "#!/bin/sh\n"),
		file("opt/bitbuilder/tools/README", "x"),
	}
}

func goodConfext(name string) []node {
	return []node{
		file("etc/extension-release.d/extension-release."+name, goodExtRelease),
		file("etc/foo/foo.conf", "x=1\n"),
	}
}

func TestExtensionGood(t *testing.T) {
	for _, class := range []Class{ClassSysext, ClassConfext} {
		t.Run(string(class), func(t *testing.T) {
			dir := t.TempDir()
			if class == ClassSysext {
				build(t, dir, goodSysext("foo")...)
			} else {
				build(t, dir, goodConfext("foo")...)
			}
			rep, err := Extension(t.Context(), dir, class, "foo", testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Findings) != 0 {
				t.Fatalf("findings:\n%s", dump(rep))
			}
		})
	}
}

func TestExtensionRules(t *testing.T) {
	rel := "usr/lib/extension-release.d/extension-release."
	crel := "etc/extension-release.d/extension-release."
	tests := []struct {
		name        string
		class       Class
		image       string // image name, default "foo"
		rm          []string
		add         []node
		xattr       string // file that gets user.extension-release.strict=0
		xattrOpaque string // directory marked as an opaque overlay directory
		base        []node // a base root, when set
		rule        string
		sev         Severity
		allowed     []string
	}{
		{name: "D26 no release file", rm: []string{rel + "foo"}, rule: "D26", sev: SeverityError},
		{name: "D26 confext release in sysext place", class: ClassConfext, rm: []string{crel + "foo"}, add: []node{file(rel+"foo", goodExtRelease)}, rule: "D26", sev: SeverityError, allowed: []string{"D34"}},
		{name: "D26 release file is a directory", rm: []string{rel + "foo"}, add: []node{dir(rel+"foo", 0o755)}, rule: "D26", sev: SeverityError},
		{name: "D27 name mismatch", rm: []string{rel + "foo"}, add: []node{file(rel+"bar", goodExtRelease)}, rule: "D27", sev: SeverityError},
		{name: "D27 fallback cut at underscore", image: "foo_1.2", rule: "D27", sev: SeverityInfo},
		{name: "D27 fallback cut at plus", image: "foo+3", rule: "D27", sev: SeverityInfo},
		{name: "D27 fallback by xattr", rm: []string{rel + "foo"}, add: []node{file(rel+"other", goodExtRelease)}, xattr: rel + "other", rule: "D27", sev: SeverityInfo},
		{name: "D27 ambiguous", image: "foo_1", add: []node{file(rel+"bar", goodExtRelease)}, xattr: rel + "bar", rule: "D27", sev: SeverityError},
		{name: "D27 symlinked release file not a fallback candidate", rm: []string{rel + "foo"}, add: []node{file("usr/lib/real", goodExtRelease), link(rel+"foo_x", "../real")}, rule: "D26", sev: SeverityError},
		{name: "D28 temporary name", image: ".#foo", rm: []string{rel + "foo"}, add: []node{file(rel+".#foo", goodExtRelease)}, rule: "D28", sev: SeverityError, allowed: []string{"D26"}},
		{name: "D28 control character", image: "fo\x01o", rule: "D28", sev: SeverityError, allowed: []string{"D26", "D27"}},
		{name: "D29 os-release in sysext", add: []node{file("usr/lib/os-release", "ID=x\n")}, rule: "D29", sev: SeverityError},
		{name: "D29 os-release in confext", class: ClassConfext, add: []node{file("etc/os-release", "ID=x\n")}, rule: "D29", sev: SeverityError},
		{name: "D29 etc/os-release in sysext", add: []node{file("etc/os-release", "ID=x\n")}, rule: "D29", sev: SeverityWarning, allowed: []string{"D34"}},
		{name: "D30 no ID", add: []node{file(rel+"foo", "VERSION_ID=1.0\n")}, rule: "D30", sev: SeverityError},
		{name: "D30 bad ID characters", add: []node{file(rel+"foo", "ID=Foo\nVERSION_ID=1.0\n")}, rule: "D30", sev: SeverityError},
		{name: "D31 no version", add: []node{file(rel+"foo", "ID=bitbuilder\n")}, rule: "D31", sev: SeverityWarning},
		{name: "D32 bad architecture", add: []node{file(rel+"foo", "ID=_any\nARCHITECTURE=x86_64\n")}, rule: "D32", sev: SeverityError},
		{name: "D32 native is not an architecture", add: []node{file(rel+"foo", "ID=_any\nARCHITECTURE=native\n")}, rule: "D32", sev: SeverityError},
		{name: "D33 bad scope", add: []node{file(rel+"foo", "ID=_any\nSYSEXT_SCOPE=\"system host\"\n")}, rule: "D33", sev: SeverityError},
		{name: "D34 content outside usr", add: []node{file("var/lib/x", "")}, rule: "D34", sev: SeverityWarning},
		{name: "D34 confext with usr", class: ClassConfext, add: []node{file("usr/bin/x", "")}, rule: "D34", sev: SeverityWarning},
		{name: "D35 executable in confext", class: ClassConfext, add: []node{exe("etc/foo/run.sh", "#!/bin/sh\n")}, rule: "D35", sev: SeverityWarning},
		{name: "D36 whiteout", add: []node{whiteout("usr/bin/gone")}, rule: "D36", sev: SeverityWarning},
		{name: "D36 opaque directory", add: []node{dir("usr/share/opaque", 0o755)}, xattrOpaque: "usr/share/opaque", rule: "D36", sev: SeverityWarning},
		{name: "D36 shadows base", base: []node{file("usr/lib/os-release", "ID=bitbuilder\nVERSION_ID=1.0\n"), exe("usr/bin/tool", "")}, rule: "D36", sev: SeverityWarning},
		{name: "DC wrong architecture", add: []node{file(rel+"foo", "ID=_any\nARCHITECTURE=arm64\n")}, rule: "DC", sev: SeverityError},
		{name: "DC incompatible base", base: []node{file("usr/lib/os-release", "ID=fedora\nVERSION_ID=40\n")}, rule: "DC", sev: SeverityError},
		{name: "B syntax in release file", add: []node{file(rel+"foo", "ID=bitbuilder\nVERSION_ID=1.0\nVERSION_ID=1.0\n")}, rule: "B15", sev: SeverityError},
		{name: "X1 huge release file", add: []node{file(rel+"foo", "ID=_any\n"+strings.Repeat("#", releaseLimit))}, rule: "X1", sev: SeverityError},
		{name: "C21 FIFO in extension", add: []node{fifo("usr/lib/fifo")}, rule: "C21", sev: SeverityWarning},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			class := tc.class
			if class == "" {
				class = ClassSysext
			}
			image := tc.image
			if image == "" {
				image = "foo"
			}
			dir := t.TempDir()
			if class == ClassSysext {
				build(t, dir, goodSysext("foo")...)
			} else {
				build(t, dir, goodConfext("foo")...)
			}
			remove(t, dir, tc.rm...)
			build(t, dir, tc.add...)
			if tc.xattr != "" {
				if err := unix.Lsetxattr(filepath.Join(dir, tc.xattr), "user.extension-release.strict", []byte("0"), 0); err != nil {
					testpolicy.Require(t, !errors.Is(err, unix.ENOTSUP), "the file system of the temporary directory does not support user xattrs")
					t.Fatal(err)
				}
			}
			if tc.xattrOpaque != "" {
				if err := unix.Lsetxattr(filepath.Join(dir, tc.xattrOpaque), "user.overlay.opaque", []byte("y"), 0); err != nil {
					testpolicy.RequireNoError(t, err, "user xattrs")
				}
			}
			opts := testOptions()
			if tc.base != nil {
				opts.BaseRoot = t.TempDir()
				build(t, opts.BaseRoot, tc.base...)
			}
			rep, err := Extension(t.Context(), dir, class, image, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, rep, tc.rule, tc.sev, tc.allowed...)
		})
	}
}

func TestExtensionArguments(t *testing.T) {
	dir := t.TempDir()
	if _, err := Extension(t.Context(), dir, "portable", "foo", Options{}); !errors.Is(err, ErrUnknownClass) {
		t.Errorf("unknown class: err = %v", err)
	}
	if _, err := Extension(t.Context(), filepath.Join(dir, "missing"), ClassSysext, "foo", Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: err = %v", err)
	}
	f := filepath.Join(dir, "file")
	build(t, dir, file("file", ""))
	if _, err := Extension(t.Context(), f, ClassSysext, "foo", Options{}); !errors.Is(err, ErrNotDirectory) {
		t.Errorf("file: err = %v", err)
	}
}

func TestImageNameSuffix(t *testing.T) {
	for in, want := range map[string]string{
		"foo.sysext.raw": "foo", "foo.confext.raw": "foo", "foo_1.2.raw": "foo_1.2", "foo": "foo", "foo.raw.d": "foo.raw.d",
	} {
		if got := trimImageSuffix(in); got != want {
			t.Errorf("trimImageSuffix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompatible(t *testing.T) {
	base := Release{"ID": "debian", "ID_LIKE": "ubuntu-like other", "VERSION_ID": "13", "SYSEXT_LEVEL": "2", "CONFEXT_LEVEL": "c1"}
	tests := []struct {
		name   string
		ext    Release
		class  Class
		base   Release
		initrd bool
		arch   string
		want   bool
	}{
		{"base without ID", Release{"ID": "_any"}, ClassSysext, Release{"VERSION_ID": "1"}, false, "x86-64", false},
		{"empty extension release", Release{}, ClassSysext, base, false, "x86-64", false},
		{"scope system on a system", Release{"ID": "_any", "SYSEXT_SCOPE": "system"}, ClassSysext, base, false, "x86-64", true},
		{"scope initrd on a system", Release{"ID": "_any", "SYSEXT_SCOPE": "initrd"}, ClassSysext, base, false, "x86-64", false},
		{"default scope on an initrd", Release{"ID": "_any"}, ClassSysext, base, true, "x86-64", true},
		{"scope system portable on an initrd", Release{"ID": "_any", "SYSEXT_SCOPE": "system portable"}, ClassSysext, base, true, "x86-64", false},
		{"confext scope uses CONFEXT_SCOPE", Release{"ID": "_any", "SYSEXT_SCOPE": "initrd"}, ClassConfext, base, false, "x86-64", true},
		{"arch mismatch with _any ID", Release{"ID": "_any", "ARCHITECTURE": "arm64"}, ClassSysext, base, false, "x86-64", false},
		{"arch _any", Release{"ID": "_any", "ARCHITECTURE": "_any"}, ClassSysext, base, false, "x86-64", true},
		{"arch match", Release{"ID": "_any", "ARCHITECTURE": "x86-64"}, ClassSysext, base, false, "x86-64", true},
		{"no ID", Release{"VERSION_ID": "13"}, ClassSysext, base, false, "x86-64", false},
		{"_any skips versions", Release{"ID": "_any", "VERSION_ID": "1"}, ClassSysext, base, false, "x86-64", true},
		{"other ID", Release{"ID": "fedora", "VERSION_ID": "13"}, ClassSysext, base, false, "x86-64", false},
		{"ID_LIKE match", Release{"ID": "ubuntu-like", "VERSION_ID": "13"}, ClassSysext, base, false, "x86-64", true},
		{"rolling base", Release{"ID": "arch"}, ClassSysext, Release{"ID": "arch"}, false, "x86-64", true},
		{"rolling base ignores extension version", Release{"ID": "arch", "VERSION_ID": "9"}, ClassSysext, Release{"ID": "arch"}, false, "x86-64", true},
		{"levels equal, versions differ", Release{"ID": "debian", "SYSEXT_LEVEL": "2", "VERSION_ID": "12"}, ClassSysext, base, false, "x86-64", true},
		{"levels differ, versions equal", Release{"ID": "debian", "SYSEXT_LEVEL": "3", "VERSION_ID": "13"}, ClassSysext, base, false, "x86-64", false},
		{"confext uses CONFEXT_LEVEL", Release{"ID": "debian", "CONFEXT_LEVEL": "c1"}, ClassConfext, base, false, "x86-64", true},
		{"confext ignores SYSEXT_LEVEL", Release{"ID": "debian", "SYSEXT_LEVEL": "2"}, ClassConfext, base, false, "x86-64", false},
		{"extension level, base only version", Release{"ID": "debian", "SYSEXT_LEVEL": "2"}, ClassSysext, Release{"ID": "debian", "VERSION_ID": "13"}, false, "x86-64", false},
		{"version match", Release{"ID": "debian", "VERSION_ID": "13"}, ClassSysext, Release{"ID": "debian", "VERSION_ID": "13"}, false, "x86-64", true},
		{"version mismatch", Release{"ID": "debian", "VERSION_ID": "12"}, ClassSysext, Release{"ID": "debian", "VERSION_ID": "13"}, false, "x86-64", false},
		{"base level only, extension version only", Release{"ID": "debian", "VERSION_ID": "13"}, ClassSysext, Release{"ID": "debian", "SYSEXT_LEVEL": "2"}, false, "x86-64", true},
		{"base level only, extension nothing", Release{"ID": "debian"}, ClassSysext, Release{"ID": "debian", "SYSEXT_LEVEL": "2"}, false, "x86-64", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := Compatible(tc.ext, tc.class, tc.base, tc.initrd, tc.arch)
			if ok != tc.want {
				t.Errorf("Compatible = %v (%s), want %v", ok, why, tc.want)
			}
			if why == "" {
				t.Error("no reason")
			}
		})
	}
}
