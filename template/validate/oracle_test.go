package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// Base os-release variations of the oracle.
const (
	baseDebian      = "ID=debian\nVERSION_ID=13\n"
	baseDebianLevel = "ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=1.0\nCONFEXT_LEVEL=1.0\n"
	baseUbuntu      = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n"
	baseRolling     = "ID=arch\n"
	baseNoID        = "NAME=nothing\nVERSION_ID=13\n"
)

// oracleCase is one extension tree checked by the validator and merged by systemd 257.
type oracleCase struct {
	name  string
	class Class
	base  string // base os-release
	image string // image directory name (default "foo")
	// release is the extension-release content at the class path under the image name; "" for none.
	release   string
	extra     []node // more nodes of the extension (relative to the image)
	rootExtra []node // more nodes of the root (relative to the root)
	xattr     string // extension file to mark user.extension-release.strict=0
	// place overrides the search directory the image goes to (relative to the root).
	place   string
	mutable bool // merge with --mutable=auto
	// policy marks cases where the validator is deliberately stricter than systemd: it reports an error,
	// systemd merges anyway. The test asserts both.
	policy string
}

func oracleCases() []oracleCase {
	rel := "usr/lib/extension-release.d/extension-release."
	return []oracleCase{
		// Valid extensions and the compatibility algorithm.
		{name: "version-match", base: baseDebian, release: "ID=debian\nVERSION_ID=13\n"},
		{name: "version-mismatch", base: baseDebian, release: "ID=debian\nVERSION_ID=12\n"},
		{name: "any", base: baseDebian, release: "ID=_any\n"},
		{name: "no-version-on-versioned-base", base: baseDebian, release: "ID=debian\n"},
		{name: "rolling-base", base: baseRolling, release: "ID=arch\n"},
		{name: "rolling-base-ignores-version", base: baseRolling, release: "ID=arch\nVERSION_ID=9\n"},
		{name: "id-like", base: baseUbuntu, release: "ID=debian\nVERSION_ID=24.04\n"},
		{name: "other-id", base: baseDebian, release: "ID=fedora\nVERSION_ID=13\n"},
		{name: "level-match-version-differs", base: baseDebianLevel, release: "ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=99\n"},
		{name: "level-mismatch", base: baseDebianLevel, release: "ID=debian\nSYSEXT_LEVEL=2.0\nVERSION_ID=13\n"},
		{name: "level-without-base-level", base: baseDebian, release: "ID=debian\nSYSEXT_LEVEL=1.0\n"},
		{name: "arch-native", base: baseDebian, release: "ID=_any\nARCHITECTURE=" + NativeArchitecture() + "\n"},
		{name: "arch-other", base: baseDebian, release: "ID=_any\nARCHITECTURE=s390x\n"},
		{name: "arch-any", base: baseDebian, release: "ID=_any\nARCHITECTURE=_any\n"},
		{name: "scope-initrd", base: baseDebian, release: "ID=_any\nSYSEXT_SCOPE=initrd\n"},
		{name: "scope-system-portable", base: baseDebian, release: "ID=_any\nSYSEXT_SCOPE=\"system portable\"\n"},
		// systemd-sysext --root=DIR takes the scope from the running system (in_initrd()), not from DIR's
		// etc/initrd-release, so the oracle cannot check initrd bases; TestCompatible covers them.
		{name: "base-without-id", base: baseNoID, release: "ID=_any\n"},
		{name: "fallback-underscore", base: baseDebian, image: "foo_1.2", release: "", extra: []node{file(rel+"foo", "ID=_any\n")}},
		{name: "confext-version", class: ClassConfext, base: baseDebian, release: "ID=debian\nVERSION_ID=13\n"},
		{name: "confext-level", class: ClassConfext, base: baseDebianLevel, release: "ID=debian\nCONFEXT_LEVEL=1.0\n"},
		{name: "confext-level-mismatch", class: ClassConfext, base: baseDebianLevel, release: "ID=debian\nCONFEXT_LEVEL=2.0\n"},
		{name: "confext-ignores-sysext-level", class: ClassConfext, base: baseDebianLevel, release: "ID=debian\nSYSEXT_LEVEL=1.0\n"},
		{name: "confext-scope-initrd", class: ClassConfext, base: baseDebian, release: "ID=_any\nCONFEXT_SCOPE=initrd\n"},
		{name: "confext-rolling", class: ClassConfext, base: baseRolling, release: "ID=arch\n"},
		{name: "quoted-values-and-comments", base: "# base\nID=\"debian\"\n\nVERSION_ID='13'\n", release: "# extension\nID='debian'\nVERSION_ID=\"13\"\n"},
		{name: "confext-id-like", class: ClassConfext, base: baseUbuntu, release: "ID=debian\nVERSION_ID=24.04\n"},
		{name: "confext-fallback-plus", class: ClassConfext, base: baseDebian, image: "foo+2", release: "", extra: []node{file("etc/extension-release.d/extension-release.foo", "ID=_any\n")}},
		// Warnings only: systemd merges.
		{name: "w-sysext-etc-os-release", base: baseDebian, release: "ID=_any\n", extra: []node{file("etc/os-release", "ID=x\n")}},
		{name: "w-content-outside", base: baseDebian, release: "ID=_any\n", extra: []node{file("var/lib/x", "x")}},
		{name: "w-whiteout", base: baseDebian, release: "ID=_any\n", extra: []node{whiteout("usr/share/gone")}},
		{name: "w-confext-executable", class: ClassConfext, base: baseDebian, release: "ID=_any\n", extra: []node{exe("etc/run.sh", "#!/bin/sh\n")}},
		// Each error rule of section D broken once.
		{name: "d26-no-release", base: baseDebian, release: ""},
		{name: "d26-release-of-other-class", base: baseDebian, release: "", extra: []node{file("etc/extension-release.d/extension-release.foo", "ID=_any\n")}},
		{name: "d26-confext-release-of-other-class", class: ClassConfext, base: baseDebian, release: "", extra: []node{file(rel+"foo", "ID=_any\n")}},
		{name: "d27-name-mismatch", base: baseDebian, release: "", extra: []node{file(rel+"bar", "ID=_any\n")}},
		{name: "d27-ambiguous", base: baseDebian, image: "foo_1", release: "", extra: []node{file(rel+"foo", "ID=_any\n"), file(rel+"bar", "ID=_any\n")}, xattr: rel + "bar"},
		{name: "d28-temporary-name", base: baseDebian, image: ".#foo", release: "ID=_any\n"},
		{name: "d29-sysext-os-release", base: baseDebian, release: "ID=_any\n", extra: []node{file("usr/lib/os-release", "ID=debian\nVERSION_ID=13\n")}},
		// systemd 257 merges a confext that ships etc/os-release (it then shadows the base's identity); the
		// spec makes it an error.
		{name: "d29-confext-os-release", class: ClassConfext, base: baseDebian, release: "ID=_any\n", extra: []node{file("etc/os-release", "ID=debian\nVERSION_ID=13\n")}, policy: "D29"},
		{name: "d30-no-id", base: baseDebian, release: "VERSION_ID=13\n"},
		{name: "d30-bad-id", base: baseDebian, release: "ID=Debian\nVERSION_ID=13\n"},
		{name: "d32-arch-x86_64", base: baseDebian, release: "ID=_any\nARCHITECTURE=x86_64\n"},
		{name: "d32-arch-native-word", base: baseDebian, release: "ID=_any\nARCHITECTURE=native\n"},
		{name: "d33-bad-scope", base: baseDebian, release: "ID=_any\nSYSEXT_SCOPE=host\n"},
		{name: "d33-bad-scope-token", base: baseDebian, release: "ID=_any\nSYSEXT_SCOPE=\"system host\"\n", policy: "D33"},
		{name: "d27-confext-name-mismatch", class: ClassConfext, base: baseDebian, release: "", extra: []node{file("etc/extension-release.d/extension-release.bar", "ID=_any\n")}},
		{name: "d30-confext-no-id", class: ClassConfext, base: baseDebian, release: "VERSION_ID=13\n"},
		{name: "d32-confext-arch", class: ClassConfext, base: baseDebian, release: "ID=_any\nARCHITECTURE=amd64\n"},
		{name: "d33-confext-bad-scope", class: ClassConfext, base: baseDebian, release: "ID=_any\nCONFEXT_SCOPE=host\n"},
		// The compatibility verdict (Compatibility, Template.Validate's "compatible") on trees whose release is
		// compatible but that systemd refuses for another reason.
		{name: "v-no-release-any", base: baseRolling, release: ""},
		{name: "v-confext-no-release", class: ClassConfext, base: baseDebian, release: ""},
		{name: "v-misnamed-compatible", base: baseDebian, release: "", extra: []node{file(rel+"bar", "ID=debian\nVERSION_ID=13\n")}},
		{name: "v-confext-misnamed", class: ClassConfext, base: baseDebian, release: "", extra: []node{file("etc/extension-release.d/extension-release.bar", "ID=_any\n")}},
		{name: "v-two-candidates-compatible", base: baseDebian, image: "foo_1", release: "", extra: []node{file(rel+"foo", "ID=debian\nVERSION_ID=13\n"), file(rel+"bar", "ID=debian\nVERSION_ID=13\n")}, xattr: rel + "bar"},
		{name: "v-confext-two-candidates", class: ClassConfext, base: baseDebian, image: "foo_1", release: "", extra: []node{file("etc/extension-release.d/extension-release.foo", "ID=_any\n"), file("etc/extension-release.d/extension-release.bar", "ID=_any\n")}, xattr: "etc/extension-release.d/extension-release.bar"},
		{name: "v-os-release-compatible", base: baseDebian, release: "ID=debian\nVERSION_ID=13\n", extra: []node{file("usr/lib/os-release", "ID=debian\nVERSION_ID=13\n")}},
		// systemd-confext 257 merges a confext that ships usr/lib/os-release (only systemd-sysext refuses
		// one); the spec forbids it in every extension.
		{name: "v-confext-usr-os-release", class: ClassConfext, base: baseDebian, release: "ID=_any\n", extra: []node{file("usr/lib/os-release", "ID=debian\nVERSION_ID=13\n")}, policy: "D29"},
		{name: "d37-sysext-under-usr", base: baseDebian, release: "ID=_any\n", place: "usr/lib/extensions"},
		{name: "d37-sysext-in-confext-path", base: baseDebian, release: "ID=_any\n", place: "var/lib/confexts"},
		{name: "d38-mutable-mode", base: baseDebian, release: "ID=_any\n", mutable: true, rootExtra: []node{dir("var/lib/extensions.mutable/usr", 0o700)}},
	}
}

func (oc oracleCase) imageName() string {
	if oc.image == "" {
		return "foo"
	}
	return oc.image
}

func (oc oracleCase) cls() Class {
	if oc.class == "" {
		return ClassSysext
	}
	return oc.class
}

// marker is the file every oracle extension carries in its hierarchy: visible in the root after a merge.
func (oc oracleCase) marker() string {
	if oc.cls() == ClassConfext {
		return "etc/oracle-marker"
	}
	return "usr/share/oracle-marker"
}

func (oc oracleCase) imageDir() string {
	place := oc.place
	if place == "" {
		place = "var/lib/extensions"
		if oc.cls() == ClassConfext {
			place = "var/lib/confexts"
		}
	}
	return place + "/" + oc.imageName()
}

// buildOracleRoot makes the base root and the extension of one case under dir.
func buildOracleRoot(t *testing.T, root string, oc oracleCase) {
	t.Helper()
	build(t, root, file("usr/lib/os-release", oc.base), link("etc/os-release", "../usr/lib/os-release"), dir("usr/share", 0o755))
	img := filepath.Join(root, filepath.FromSlash(oc.imageDir()))
	nodes := []node{file(oc.marker(), "merged\n")}
	if oc.release != "" {
		nodes = append(nodes, file(oc.cls().releaseDir()+"/extension-release."+oc.imageName(), oc.release))
	}
	build(t, img, append(nodes, oc.extra...)...)
	build(t, root, oc.rootExtra...)
	if oc.xattr != "" {
		if err := unix.Lsetxattr(filepath.Join(img, oc.xattr), "user.extension-release.strict", []byte("0"), 0); err != nil {
			t.Fatalf("xattr: %v", err)
		}
	}
}

// verdict is the validator's answer: would the extension be merged, and the error rules behind a "no".
func verdict(t *testing.T, root string, oc oracleCase) (bool, []string) {
	t.Helper()
	opts := Options{BaseRoot: root}
	var rep Report
	var err error
	if oc.place != "" || oc.mutable {
		// Placement and mutable-directory rules are rules of the root that embeds the extension.
		rep, err = RootFS(t.Context(), root, opts)
	} else {
		rep, err = Extension(t.Context(), filepath.Join(root, filepath.FromSlash(oc.imageDir())), oc.cls(), oc.imageName(), opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, f := range rep.Errors() {
		if strings.HasPrefix(f.Rule, "D") || f.Rule == "X1" {
			rules = append(rules, f.Rule)
		}
	}
	return len(rules) == 0, rules
}

// verdictOf is the compatibility verdict (Compatibility) of the case's extension validated with the root as base.
func verdictOf(t *testing.T, root string, oc oracleCase) (bool, string) {
	t.Helper()
	rep, err := Extension(t.Context(), filepath.Join(root, filepath.FromSlash(oc.imageDir())), oc.cls(), oc.imageName(), Options{BaseRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	return Compatibility(rep, oc.cls())
}

// TestCompatibilityVerdict checks, without systemd, the verdict of the oracle's extension-form cases against
// the outcome systemd 257 had on them (TestOracleSysext checks it against systemd itself).
func TestCompatibilityVerdict(t *testing.T) {
	// What systemd 257 did with each case, as TestOracleSysext observed it.
	merges := map[string]bool{
		"version-match": true, "any": true, "rolling-base": true, "rolling-base-ignores-version": true,
		"id-like": true, "level-match-version-differs": true, "arch-native": true, "arch-any": true,
		"scope-system-portable": true, "fallback-underscore": true, "confext-version": true,
		"confext-level": true, "confext-rolling": true, "quoted-values-and-comments": true,
		"confext-id-like": true, "confext-fallback-plus": true, "w-sysext-etc-os-release": true,
		"w-content-outside": true, "w-whiteout": true, "w-confext-executable": true,
	}
	for _, oc := range oracleCases() {
		if oc.place != "" || oc.mutable || oc.policy != "" {
			continue
		}
		t.Run(oc.name, func(t *testing.T) {
			root := t.TempDir()
			buildOracleRoot(t, root, oc)
			if got, why := verdictOf(t, root, oc); got != merges[oc.name] {
				t.Errorf("Compatibility = %v (%s), systemd 257 merged=%v", got, why, merges[oc.name])
			}
		})
	}
}

// TestOracleSysext compares the validator's verdict on extension trees with real systemd-sysext and
// systemd-confext merges (systemd 257) in a booted test host.
func TestOracleSysext(t *testing.T) {
	testpolicy.RequireRoot(t, "the oracle boots the systemd 257 test host")
	cases := oracleCases()
	work := t.TempDir()
	var script strings.Builder
	script.WriteString("cd /oracle\n")
	for i, oc := range cases {
		root := filepath.Join(work, fmt.Sprintf("%02d", i))
		buildOracleRoot(t, root, oc)
		tool := "systemd-" + string(oc.cls())
		args := ""
		if oc.mutable {
			args = " --mutable=auto"
		}
		fmt.Fprintf(&script, "d=/oracle/%02d; %s --root=$d%s merge >$d.out 2>&1 && echo 0 >$d.rc || echo $? >$d.rc\n", i, tool, args)
		fmt.Fprintf(&script, "if [ -e $d/%s ]; then echo yes >$d.merged; else echo no >$d.merged; fi\n", oc.marker())
		fmt.Fprintf(&script, "%s --root=$d unmerge >>$d.out 2>&1 || true\n", tool)
	}
	h := testhost.Start(t, testhost.Options{Name: "oracle", Binds: []testhost.Bind{{Host: work, Guest: "/oracle"}}})
	if out, err := h.Shell(t.Context(), script.String()); err != nil {
		t.Fatalf("oracle script: %v\n%s", err, out)
	}
	agree, policy := 0, 0
	for i, oc := range cases {
		t.Run(oc.name, func(t *testing.T) {
			base := filepath.Join(work, fmt.Sprintf("%02d", i))
			got, err := os.ReadFile(base + ".merged")
			if err != nil {
				t.Fatal(err)
			}
			out, _ := os.ReadFile(base + ".out")
			merged := strings.TrimSpace(string(got)) == "yes"
			ok, rules := verdict(t, base, oc)
			// Compatible on its own: an incompatible release is never merged.
			if oc.release != "" && oc.place == "" {
				ext, _ := ParseRelease([]byte(oc.release))
				baseRel, _ := ParseRelease([]byte(oc.base))
				if compat, why := Compatible(ext, oc.cls(), baseRel, false, NativeArchitecture()); !compat && merged {
					t.Errorf("Compatible says no (%s) but systemd merged", why)
				}
			}
			if oc.policy != "" {
				if !merged || ok || !strings.Contains(strings.Join(rules, " "), oc.policy) {
					t.Errorf("policy case: want systemd to merge and the validator to report %s; merged=%v, validator errors %v\nsystemd:\n%s", oc.policy, merged, rules, out)
				}
				// The verdict is no, and says that systemd itself would merge it.
				if compat, why := verdictOf(t, base, oc); compat || !strings.Contains(why, "itself would merge") {
					t.Errorf("policy case: Compatibility = %v (%s), want false naming systemd's own verdict", compat, why)
				}
				policy++
				return
			}
			if merged != ok {
				t.Errorf("systemd merged=%v, validator says %v (errors %v)\nsystemd:\n%s", merged, ok, rules, out)
				return
			}
			// The verdict Template.Validate returns with a base: "would merge" exactly when systemd merged.
			if oc.place == "" && !oc.mutable {
				if compat, why := verdictOf(t, base, oc); compat != merged {
					t.Errorf("systemd merged=%v, Compatibility says %v (%s)\nsystemd:\n%s", merged, compat, why, out)
					return
				}
			}
			agree++
		})
	}
	if os.Getenv("ORACLE_DUMP") != "" {
		for i, oc := range cases {
			out, _ := os.ReadFile(filepath.Join(work, fmt.Sprintf("%02d.out", i)))
			t.Logf("%s:\n%s", oc.name, out)
		}
	}
	t.Logf("validator and systemd 257 agree on %d of %d extension trees; %d are policy cases where the validator is stricter by design", agree, len(cases), policy)
}
