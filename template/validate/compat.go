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
