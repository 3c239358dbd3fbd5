package validate

import "strings"

// RuleInfo is one entry of the validator's rule catalogue: what a finding's Rule means.
type RuleInfo struct {
	// ID is the stable rule identifier used in Finding.Rule.
	ID string `json:"id"`
	// Severities lists the severities the rule's findings can have, most severe first.
	Severities []Severity `json:"severities"`
	// Title says in one line what the rule requires.
	Title string `json:"title"`
	// Explanation says why the rule exists (what systemd or the spec does otherwise) and how to satisfy it.
	Explanation string `json:"explanation"`
}

var (
	sevE   = []Severity{SeverityError}
	sevW   = []Severity{SeverityWarning}
	sevI   = []Severity{SeverityInfo}
	sevEW  = []Severity{SeverityError, SeverityWarning}
	sevEI  = []Severity{SeverityError, SeverityInfo}
	sevEWI = []Severity{SeverityError, SeverityWarning, SeverityInfo}
)

// rules is the catalogue, in rule order: the one table both the validator's findings and the CLI's
// `bbctl template rules` (through io.bitbuilder.Template.Rules) read.
var rules = []RuleInfo{
	{"A1", sevE, "an os-release exists (etc/os-release, else usr/lib/os-release; symlinks resolved inside the root)",
		"systemd-nspawn and systemd-vmspawn refuse a tree without an os-release, and extensions are matched against it. systemd reads /etc/os-release first and falls back to /usr/lib/os-release; a dangling /etc link falls back too. Ship usr/lib/os-release."},
	{"A2", sevW, "usr/lib/os-release is the file, etc/os-release a relative symlink to it",
		"os-release(5): the vendor's file lives in /usr, /etc/os-release is a relative symlink ../usr/lib/os-release so the tree works under any root. The reverse direction (the seed's) or an absolute link still works but breaks /usr-only updates."},
	{"A3", sevW, "etc/os-release and usr/lib/os-release do not differ",
		"When both are regular files, /etc wins and /usr is silently ignored. Keep one file and make the other a symlink to it."},
	{"A4", sevE, "no etc/initrd-release in a normal root",
		"systemd treats a root with /etc/initrd-release as an initrd: it runs initrd units and tries to switch root. Remove the file."},
	{"A5", sevE, "ID= is set",
		"Without ID= systemd-sysext and systemd-confext merge nothing onto this root, and tools cannot tell the distribution. Set ID= in os-release."},
	{"A6", sevE, "identifier fields match [a-z0-9._-]+, ID_LIKE is a list of them",
		"ID, VERSION_ID, VERSION_CODENAME, VARIANT_ID, IMAGE_ID, IMAGE_VERSION, RELEASE_TYPE, SYSEXT_LEVEL and CONFEXT_LEVEL are compared byte for byte by systemd; other characters make matching fail. Use lower case letters, digits, '.', '_' and '-'."},
	{"A7", sevW, "VERSION_ID= or a level is set (else extensions treat the root as rolling)",
		"With neither VERSION_ID= nor SYSEXT_LEVEL=/CONFEXT_LEVEL=, systemd-sysext accepts any extension of the same ID, whatever version it was built for. Set VERSION_ID=."},
	{"A8", sevW, "SUPPORT_END= is a YYYY-MM-DD date not in the past",
		"systemd warns at boot when SUPPORT_END is past, and a malformed date is ignored. Use YYYY-MM-DD and update the template before the date."},
	{"A9", sevW, "DEFAULT_HOSTNAME= is a hostname, URL fields are http(s) URLs, no *_SCOPE= in a root",
		"os-release(5) gives these fields a fixed form; readers ignore values outside it. SYSEXT_SCOPE= belongs in an extension-release file, not in a root's os-release."},
	{"A10", sevI, "unknown keys are noted",
		"Readers ignore keys they do not know; the finding only points out a possible typo."},
	{"B11", sevE, "the release file is UTF-8",
		"os-release and extension-release files are UTF-8 text (os-release(5)); systemd refuses other encodings."},
	{"B12", sevE, "every line is a comment, blank, or KEY=VALUE with a valid key",
		"The format is a subset of shell variable assignments: KEY matches [A-Za-z_][A-Za-z0-9_]*. Other lines make systemd's parser fail."},
	{"B13", sevE, "values with whitespace or shell specials are quoted",
		"Values with whitespace or $ ` \\ \" ' ; & | < > ( ) * ? [ ] # ~ ! { } must be in quotes, since the file may be sourced by a shell; inside double quotes only \\$ \\` \\\\ \\\" are escapes."},
	{"B14", sevE, "quotes are terminated and not concatenated",
		"An unterminated quote, or A=\"a\"\"b\" and A=\"a\"b, is parsed differently by systemd and by shells. Quote each value once."},
	{"B15", sevE, "no key is repeated",
		"A repeated key makes readers disagree (systemd takes the later one). Keep one line per key."},
	{"B16", sevW, "no CR line endings, continuations or non-printable characters",
		"CR line endings become part of the value, and backslash-newline continuations are not supported by every reader. Use plain LF lines."},
	{"C17", sevE, "usr is a directory",
		"systemd-nspawn refuses a tree without /usr (\"doesn't look like it has an OS tree\"). The template's root must contain usr/."},
	{"C18", sevEW, "etc, var, proc, sys, dev, run and root exist with their modes; proc, sys, dev, run are empty",
		"The runtime mounts proc, sys, dev and run over these directories, so content in them is hidden. In a template checkout, the directories Git cannot carry (empty ones) and their modes are made at materialization: only a non-directory or non-empty mount point is reported there."},
	{"C19", sevW, "tmp and var/tmp are 1777",
		"Programs in the machine expect world-writable sticky temporary directories; systemd's tmpfiles fix the mode at boot. In a template checkout the materializer creates them with 1777."},
	{"C20", sevW, "only standard directories and relative merged-/usr symlinks in /; var/run -> ../run",
		"file-hierarchy(7): / holds the standard directories and the compatibility symlinks bin -> usr/bin, sbin, lib, lib64 -> usr/...; an absolute symlink points at the host when the tree is not the root. Move other entries below /usr, /etc, /var or /srv."},
	{"C21", sevW, "no device nodes outside /dev, no sockets or FIFOs outside /run",
		"Device nodes in a template give every machine made from it access to host devices; the runtime creates /dev and /run itself. Remove them."},
	{"C22", sevW, "file names are UTF-8",
		"systemd and most tools assume UTF-8 file names; others may be unreadable or refused. Rename the file."},
	{"C23", sevEI, "etc/machine-id is empty (or \"uninitialized\"), never a real ID",
		"machine-id(5): every machine made from a template with a real ID would share it (D-Bus, journal, DHCP client ids). Ship an empty etc/machine-id (recommended) or none."},
	{"C24", sevW, "no per-instance state (random seeds, credential secret)",
		"var/lib/systemd/random-seed and credential.secret belong to one installation; every machine made from the template would share them. Remove them."},
	{"C25", sevE, "a bootable root has an init",
		"A booted container or VM runs /usr/lib/systemd/systemd, /lib/systemd/systemd or /sbin/init; without one it cannot start. Install systemd or set Boot=no in config/nspawn-settings.conf, or provide it through artifacts.json."},
	{"D26", sevE, "the extension-release file exists at the class's path",
		"systemd-sysext merges only images with usr/lib/extension-release.d/extension-release.NAME (confext: etc/extension-release.d/extension-release.NAME)."},
	{"D27", sevEI, "the release file's name matches the image name (or systemd's fallback finds exactly one)",
		"NAME must be the image name (the directory name, or the file name without .sysext.raw/.confext.raw/.raw). systemd's fallback accepts exactly one other candidate; more than one is refused."},
	{"D28", sevE, "image and release names are valid file names (no control characters, UTF-8, no .# prefix)",
		"systemd refuses such names for images and release files."},
	{"D29", sevEW, "no os-release inside an extension",
		"An extension with usr/lib/os-release makes systemd-sysext's merge fail; a confext with etc/os-release too. A sysext's etc/os-release is ignored (warning)."},
	{"D30", sevE, "ID= is set (or _any) with the identifier character rules",
		"An extension without ID= is ignored by systemd-sysext. Set it to the base's ID, or _any for any base."},
	{"D31", sevW, "a level or VERSION_ID= is set unless ID=_any",
		"Without SYSEXT_LEVEL/CONFEXT_LEVEL or VERSION_ID the extension is refused on every base that has a VERSION_ID."},
	{"D32", sevE, "ARCHITECTURE= is a systemd architecture id or _any",
		"systemd compares ARCHITECTURE= with its own ids (x86-64, arm64, ...); x86_64, aarch64, amd64, native and any never match, so the extension would never merge."},
	{"D33", sevE, "*_SCOPE= tokens are system, initrd or portable",
		"Other tokens are not understood by systemd and the extension may be skipped."},
	{"D34", sevW, "content only in the merged hierarchies (sysext: usr, opt; confext: etc)",
		"systemd-sysext overlays only /usr and /opt, systemd-confext only /etc; anything else in the image has no effect. A template's own metadata.json, artifacts.json and Git files are not content."},
	{"D35", sevW, "no executables or setuid bits in a confext (mounted noexec, nosuid)",
		"confexts are mounted nosuid,nodev,noexec: executables in them cannot run and setuid bits do nothing."},
	{"D36", sevW, "additive content only: no whiteouts, opaque directories or shadowed base files",
		"Overlay whiteouts and files that replace the base's hide parts of the host; extensions are meant to add."},
	{"D37", sevEW, "extensions in a root sit in their class's search paths",
		"systemd looks for sysexts in /etc/extensions, /run/extensions and /var/lib/extensions, and for confexts in /run/confexts, /var/lib/confexts, /usr/local/lib/confexts and /usr/lib/confexts; elsewhere they are never merged."},
	{"D38", sevE, "mutable directories have their hierarchy's mode",
		"/var/lib/extensions.mutable/{usr,opt,etc} must have the mode of the hierarchy they make writable, or the merge fails."},
	{"D39", sevEWI, "disk-image extensions are NAME[_VERSION].{sysext,confext}.raw; an image template is one NAME.{sysext,confext}.raw; a container or machine template's extensions/ holds only NAME.{sysext,confext}.raw",
		"systemd finds raw images by these suffixes, and the version follows '_'. An extension template may hold, instead of a tree, exactly one image named after the template (metadata.json template.name), with no usr/, opt/ or etc/ beside it. A container or machine template's top-level extensions/ holds only regular files NAME.sysext.raw and NAME.confext.raw (NAME of A-Z, a-z, 0-9, _, ., +, -; at most 64), for the machines made from it. Their release, Verity and signature are read with systemd-dissect, and their files checked by the other D rules against each machine's root, when they are extracted for a machine."},
	{"DC", sevE, "the extension is compatible with the base root and target architecture (systemd-sysext v257)",
		"Checked only with a base: systemd-sysext's v257 algorithm (scope, ARCHITECTURE, ID/ID_LIKE, levels, VERSION_ID) would skip this extension on that base. The message names the step that fails."},
	{"E40", sevEW, "VOA verifiers are in the four load paths (not /run/voa in an image)",
		"UAPI.11 loads verifiers from /etc/voa, /run/voa, /usr/local/share/voa and /usr/share/voa only; /run is empty at boot, so /run/voa in an image has no effect."},
	{"E41", sevE, "VOA layout is os/purpose/context/technology/file",
		"UAPI.11 reads verifiers only at exactly this depth."},
	{"E42", sevEW, "the VOA os directory is ID[:VERSION_ID[:VARIANT_ID[:IMAGE_ID[:IMAGE_VERSION]]]]",
		"Each part uses [0-9a-z._-], the ID is required and trailing colons are left out; more than five parts is a warning."},
	{"E43", sevE, "the VOA purpose is ROLE or trust-anchor-ROLE",
		"ROLE uses [0-9a-z._-] and does not itself start with trust-anchor-; standard roles are package, repository-metadata and image."},
	{"E44", sevE, "the VOA context is [a-z0-9_.-]+",
		"Use \"default\" when there is no specific context."},
	{"E45", sevEW, "the VOA technology is a known one",
		"openpgp is fully specified; ssh, x509, minisign and signify are drafts; other technologies are ignored (warning)."},
	{"E46", sevE, "one armored public OpenPGP certificate per file, named by its fingerprint",
		"An OpenPGP verifier is one ASCII-armored certificate named <lowercase hex fingerprint>.openpgp matching its primary key, without secret key material."},
	{"E47", sevW, "VOA symlinks are relative, stay in the same or a lower-priority path, keep name and type",
		"Other symlinks (absolute, dangling, escaping, renaming or changing type) are ignored by VOA readers."},
	{"E48", sevW, "masking with /dev/null only for single verifiers in /etc/voa or /run/voa",
		"A /dev/null symlink masks one verifier, and only from the administrator's paths; a masked directory or a mask in an image is ignored."},
	{"F51", sevE, "GPT with a VFAT ESP (raw image); an ESP directory (directory form)",
		"The VM's firmware boots only from a VFAT EFI System Partition (type c12a7328-f81f-11d2-ba4b-00a0c93ec93b) on a GPT disk; a directory template needs disk-image/efi."},
	{"F52", sevE, "the ESP has the fallback loader and systemd-boot",
		"A new VM's NVRAM is empty, so the firmware starts EFI/BOOT/BOOTX64.EFI; systemd-boot is EFI/systemd/systemd-bootx64.efi. Both may come from the host through artifacts.json."},
	{"F53", sevE, "kernel and initrd on the ESP or XBOOTLDR with a Type #1 entry, or a UKI",
		"systemd-boot reads loader/entries/*.conf (Boot Loader Specification Type #1) or EFI/Linux/*.efi (Type #2) only from the ESP or XBOOTLDR, never from the root file system's /boot."},
	{"F54", sevW, "per-arch root partition type; the root's /boot and /efi are empty",
		"The Discoverable Partitions Specification finds the root by its per-architecture type (x86-64: 4f68bce3-e8cd-4db1-96e7-fbcaf984b709); /boot and /efi are mount points."},
	{"H1", sevE, "a homed template's config/user-record.json is a JSON user record: userName by systemd's rules, field types, disposition regular",
		"systemd's JSON User Record format (userdbctl, homectl): the record names the user by userName (systemd's strict user name rules), fields have their documented types, and a template's user is a regular user (disposition regular)."},
	{"H2", sevE, "no secrets in a homed template: no secret section, credentials or SSH keys in the record, no password hash in any file",
		"A template repository is shared and readable by whoever can fetch it: passwords, hashes and keys never belong there. SSH authorized keys come from the tenant record (bbctl tenant user add --ssh-key)."},
	{"H3", sevE, "a uid or gid the user record sets is in the regular range 1000-60000",
		"Ids below 1000 are system users (and 0 is root); above 60000 are reserved for dynamic users, containers and homed (systemd's UIDS-GIDS.md). Leave the uid out to have one assigned."},
	{"H4", sevE, "no symlink of the home skeleton leads out of the home",
		"The skeleton is copied into every machine's /home/NAME; a symlink leading out of it (absolute, or with enough ..) would point the user's files at the machine's system files."},
	{"X1", sevEW, "files the validator must read can be inspected",
		"A file the rules need (a release file, a certificate, the root's directories) is not a regular file, is larger than the read limit, cannot be read, or is a symlink loop or points out of the tree."},
	{"X2", sevE, "template files the validator understands are well-formed",
		"metadata.json (its schema), config/*.json, artifacts.json, config/nspawn-settings.conf and parameters.json (the parameters tenants give; checked by the daemon) are read by the daemon; the finding names the file and the problem."},
	{"X3", sevI, "a file is provided at materialization (artifacts.json)",
		"The path is not in the repository but artifacts.json asks for a host file of the administrator's list there, so the rules that need it count it as present."},
}

// Rules lists every rule the validator checks, in rule order. The IDs are the spec's section letters and
// numbers (uapi-compliance.md), plus DC, H1-H4 and X1-X3 (see the package documentation). The result is a copy.
func Rules() []RuleInfo {
	out := make([]RuleInfo, len(rules))
	copy(out, rules)
	return out
}

// Rule returns the catalogue entry of a rule id (case-insensitive: "c18" is C18).
func Rule(id string) (RuleInfo, bool) {
	for _, r := range rules {
		if strings.EqualFold(r.ID, id) {
			return r, true
		}
	}
	return RuleInfo{}, false
}
