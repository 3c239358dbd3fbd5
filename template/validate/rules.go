package validate

// RuleInfo describes one rule the validator checks.
type RuleInfo struct {
	// ID is the stable rule identifier used in Finding.Rule.
	ID string `json:"id"`
	// Severities lists the severities the rule's findings can have, most severe first.
	Severities []Severity `json:"severities"`
	// Summary says what the rule requires.
	Summary string `json:"summary"`
}

var (
	sevE  = []Severity{SeverityError}
	sevW  = []Severity{SeverityWarning}
	sevI  = []Severity{SeverityInfo}
	sevEW = []Severity{SeverityError, SeverityWarning}
	sevEI = []Severity{SeverityError, SeverityInfo}
	sevWI = []Severity{SeverityWarning, SeverityInfo}
)

// Rules lists every rule the validator checks, in rule order. The IDs are the spec's section letters and
// numbers (uapi-compliance.md), plus DC, H1-H4 and X1-X3 (see the package documentation).
func Rules() []RuleInfo {
	return []RuleInfo{
		{"A1", sevE, "an os-release exists (etc/os-release, else usr/lib/os-release; symlinks resolved inside the root)"},
		{"A2", sevW, "usr/lib/os-release is the file, etc/os-release a relative symlink to it"},
		{"A3", sevW, "etc/os-release and usr/lib/os-release do not differ"},
		{"A4", sevE, "no etc/initrd-release in a normal root"},
		{"A5", sevE, "ID= is set"},
		{"A6", sevE, "identifier fields match [a-z0-9._-]+, ID_LIKE is a list of them"},
		{"A7", sevW, "VERSION_ID= or a level is set (else extensions treat the root as rolling)"},
		{"A8", sevW, "SUPPORT_END= is a YYYY-MM-DD date not in the past"},
		{"A9", sevW, "DEFAULT_HOSTNAME= is a hostname, URL fields are http(s) URLs, no *_SCOPE= in a root"},
		{"A10", sevI, "unknown keys are noted"},
		{"B11", sevE, "the release file is UTF-8"},
		{"B12", sevE, "every line is a comment, blank, or KEY=VALUE with a valid key"},
		{"B13", sevE, "values with whitespace or shell specials are quoted"},
		{"B14", sevE, "quotes are terminated and not concatenated"},
		{"B15", sevE, "no key is repeated"},
		{"B16", sevW, "no CR line endings, continuations or non-printable characters"},
		{"C17", sevE, "usr is a directory"},
		{"C18", sevW, "etc, var, proc, sys, dev, run and root exist with their modes; proc, sys, dev, run are empty"},
		{"C19", sevW, "tmp and var/tmp are 1777"},
		{"C20", sevW, "only standard directories and relative merged-/usr symlinks in /; var/run -> ../run"},
		{"C21", sevW, "no device nodes outside /dev, no sockets or FIFOs outside /run"},
		{"C22", sevW, "file names are UTF-8"},
		{"C23", sevEI, "etc/machine-id is empty (or \"uninitialized\"), never a real ID"},
		{"C24", sevW, "no per-instance state (random seeds, credential secret)"},
		{"C25", sevE, "a bootable root has an init"},
		{"D26", sevE, "the extension-release file exists at the class's path"},
		{"D27", sevEI, "the release file's name matches the image name (or systemd's fallback finds exactly one)"},
		{"D28", sevE, "image and release names are valid file names (no control characters, UTF-8, no .# prefix)"},
		{"D29", sevEW, "no os-release inside an extension"},
		{"D30", sevE, "ID= is set (or _any) with the identifier character rules"},
		{"D31", sevW, "a level or VERSION_ID= is set unless ID=_any"},
		{"D32", sevE, "ARCHITECTURE= is a systemd architecture id or _any"},
		{"D33", sevE, "*_SCOPE= tokens are system, initrd or portable"},
		{"D34", sevW, "content only in the merged hierarchies (sysext: usr, opt; confext: etc)"},
		{"D35", sevW, "no executables or setuid bits in a confext (mounted noexec, nosuid)"},
		{"D36", sevW, "additive content only: no whiteouts, opaque directories or shadowed base files"},
		{"D37", sevEW, "extensions in a root sit in their class's search paths"},
		{"D38", sevE, "mutable directories have their hierarchy's mode"},
		{"D39", sevWI, "disk-image extensions are NAME[_VERSION].{sysext,confext}.raw"},
		{"DC", sevE, "the extension is compatible with the base root and target architecture (systemd-sysext v257)"},
		{"E40", sevEW, "VOA verifiers are in the four load paths (not /run/voa in an image)"},
		{"E41", sevE, "VOA layout is os/purpose/context/technology/file"},
		{"E42", sevEW, "the VOA os directory is ID[:VERSION_ID[:VARIANT_ID[:IMAGE_ID[:IMAGE_VERSION]]]]"},
		{"E43", sevE, "the VOA purpose is ROLE or trust-anchor-ROLE"},
		{"E44", sevE, "the VOA context is [a-z0-9_.-]+"},
		{"E45", sevEW, "the VOA technology is a known one"},
		{"E46", sevE, "one armored public OpenPGP certificate per file, named by its fingerprint"},
		{"E47", sevW, "VOA symlinks are relative, stay in the same or a lower-priority path, keep name and type"},
		{"E48", sevW, "masking with /dev/null only for single verifiers in /etc/voa or /run/voa"},
		{"F51", sevE, "GPT with a VFAT ESP (raw image); an ESP directory (directory form)"},
		{"F52", sevE, "the ESP has the fallback loader and systemd-boot"},
		{"F53", sevE, "kernel and initrd on the ESP or XBOOTLDR with a Type #1 entry, or a UKI"},
		{"F54", sevW, "per-arch root partition type; the root's /boot and /efi are empty"},
		{"H1", sevE, "a homed template's config/user-record.json is a JSON user record: userName by systemd's rules, field types, disposition regular"},
		{"H2", sevE, "no secrets in a homed template: no secret section, credentials or SSH keys in the record, no password hash in any file"},
		{"H3", sevE, "a uid or gid the user record sets is in the regular range 1000-60000"},
		{"H4", sevE, "no symlink of the home skeleton leads out of the home"},
		{"X1", sevEW, "files the validator must read can be inspected"},
		{"X2", sevE, "template files the validator understands are well-formed"},
		{"X3", sevI, "a file is provided at materialization (artifacts.json)"},
	}
}
