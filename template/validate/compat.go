package validate

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// Class is the class of an extension image.
type Class string

// Extension classes.
const (
	// ClassSysext is a system extension: it extends /usr and /opt.
	ClassSysext Class = "sysext"
	// ClassConfext is a configuration extension: it extends /etc.
	ClassConfext Class = "confext"
)

func (c Class) valid() bool { return c == ClassSysext || c == ClassConfext }

// levelKey is the release key holding the class's compatibility level.
func (c Class) levelKey() string {
	if c == ClassConfext {
		return "CONFEXT_LEVEL"
	}
	return "SYSEXT_LEVEL"
}

// scopeKey is the release key holding the class's scope list.
func (c Class) scopeKey() string {
	if c == ClassConfext {
		return "CONFEXT_SCOPE"
	}
	return "SYSEXT_SCOPE"
}

// releaseDir is the directory, relative to the extension root, of the class's release files.
func (c Class) releaseDir() string {
	if c == ClassConfext {
		return "etc/extension-release.d"
	}
	return "usr/lib/extension-release.d"
}

// architectures are systemd's architecture identifiers (src/basic/architecture.c, v257).
var architectures = []string{
	"alpha", "arc", "arc-be", "arm", "arm-be", "arm64", "arm64-be", "cris", "ia64", "loongarch64", "m68k",
	"mips", "mips-le", "mips64", "mips64-le", "nios2", "parisc", "parisc64", "ppc", "ppc-le", "ppc64",
	"ppc64-le", "riscv32", "riscv64", "s390", "s390x", "sh", "sh64", "sparc", "sparc64", "tilegx", "x86",
	"x86-64",
}

// IsArchitecture reports whether s is one of systemd's architecture identifiers.
func IsArchitecture(s string) bool { return slices.Contains(architectures, s) }

// goArch maps GOARCH values to systemd architecture identifiers.
var goArch = map[string]string{
	"386": "x86", "amd64": "x86-64", "arm": "arm", "arm64": "arm64", "loong64": "loongarch64",
	"mips": "mips", "mipsle": "mips-le", "mips64": "mips64", "mips64le": "mips64-le", "ppc64": "ppc64",
	"ppc64le": "ppc64-le", "riscv64": "riscv64", "s390x": "s390x",
}

// NativeArchitecture returns the systemd architecture identifier of the running program (runtime.GOARCH), or
// "" when there is none.
func NativeArchitecture() string { return goArch[runtime.GOARCH] }

// Compatible reports whether systemd-sysext / systemd-confext (v257) would merge an extension with release
// data ext onto a base root with os-release base, for the target architecture arch (a systemd identifier).
// baseIsInitrd is true when the base has /etc/initrd-release. reason says why not, or how it matched.
// The steps and their order are those of the spec, section D, "Compatibility of an extension with a base root".
func Compatible(ext Release, class Class, base Release, baseIsInitrd bool, arch string) (ok bool, reason string) {
	if base["ID"] == "" {
		return false, "the base os-release has no ID=: systemd refuses to merge any extension"
	}
	if len(ext) == 0 {
		return false, "the extension-release file is empty"
	}
	hostScope := "system"
	if baseIsInitrd {
		hostScope = "initrd"
	}
	if scope := ext[class.scopeKey()]; scope != "" {
		if !slices.Contains(strings.Fields(scope), hostScope) {
			return false, fmt.Sprintf("%s=%q does not include the base's scope %q", class.scopeKey(), scope, hostScope)
		}
	}
	if a := ext["ARCHITECTURE"]; a != "" && a != "_any" && a != arch {
		return false, fmt.Sprintf("ARCHITECTURE=%s does not match the target architecture %s", a, arch)
	}
	id := ext["ID"]
	if id == "" {
		return false, "the extension-release has no ID="
	}
	if id == "_any" {
		return true, "ID=_any matches every base"
	}
	if id != base["ID"] && !slices.Contains(strings.Fields(base["ID_LIKE"]), id) {
		return false, fmt.Sprintf("ID=%s matches neither the base's ID=%s nor its ID_LIKE=%q", id, base["ID"], base["ID_LIKE"])
	}
	lk := class.levelKey()
	baseVersion, baseLevel := base["VERSION_ID"], base[lk]
	if baseVersion == "" && baseLevel == "" {
		return true, "the base has neither VERSION_ID nor " + lk + " (rolling release)"
	}
	if extLevel := ext[lk]; extLevel != "" && baseLevel != "" {
		if extLevel != baseLevel {
			return false, fmt.Sprintf("%s=%s differs from the base's %s=%s", lk, extLevel, lk, baseLevel)
		}
		return true, lk + " matches"
	}
	if baseVersion != "" {
		extVersion := ext["VERSION_ID"]
		if extVersion == "" {
			return false, fmt.Sprintf("the extension has neither a matching %s nor VERSION_ID, and the base has VERSION_ID=%s", lk, baseVersion)
		}
		if extVersion != baseVersion {
			return false, fmt.Sprintf("VERSION_ID=%s differs from the base's VERSION_ID=%s", extVersion, baseVersion)
		}
		return true, "VERSION_ID matches"
	}
	return true, "the base has no VERSION_ID and the levels do not apply"
}

// refuses reports whether an error finding of an extension of class is one for which systemd-sysext /
// systemd-confext (v257) itself skips or refuses the extension, as opposed to a rule where the spec is stricter
// than systemd (TestOracleSysext checks both kinds against systemd).
func refuses(f Finding, class Class) bool {
	switch f.Rule {
	case "DC", "D26", "D27", "D28":
		// Incompatible; no release file, a misnamed one or several candidates; an invalid image name.
		return true
	case "D29":
		// systemd-sysext refuses an extension with usr/lib/os-release; systemd-confext merges one, and one
		// with etc/os-release (the spec forbids both).
		return class == ClassSysext && (f.Path == "usr/lib/os-release" || strings.HasSuffix(f.Path, "/usr/lib/os-release"))
	}
	return false
}

// Compatibility is the compatibility verdict of a report of Extension, or of Tree of kind sysext or confext,
// made with Options.BaseRoot: ok is true only when systemd-sysext / systemd-confext v257 would merge the
// extension onto the base root and the report has no error. An error that makes systemd refuse the extension
// (rule DC; D26, D27: no release file, a misnamed one, several candidates; D28; D29: a sysext's
// usr/lib/os-release) gives false with that reason. An error of a rule where the spec is stricter than systemd
// (D29 for a confext's os-release, a D33 scope token systemd ignores, the release file's syntax, ...) gives
// false too, and the reason says that systemd itself would merge the extension but BitBuilder does not.
func Compatibility(r Report, class Class) (ok bool, reason string) {
	errs := r.Errors()
	for _, f := range errs {
		if refuses(f, class) {
			return false, fmt.Sprintf("systemd would not merge the %s onto this base (%s, %s): %s", class, f.Rule, f.Path, f.Message)
		}
	}
	if len(errs) > 0 {
		f := errs[0]
		return false, fmt.Sprintf("systemd 257 itself would merge the %s, but it breaks rule %s (%s: %s), so BitBuilder does not use it", class, f.Rule, f.Path, f.Message)
	}
	return true, fmt.Sprintf("systemd would merge the %s onto this base", class)
}
