package validate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// versionLike matches an image name that seems to carry a version without '_' (foo-1.2).
var versionLike = regexp.MustCompile(`-[0-9]+(\.[0-9]+)*$`)

// Extension validates an extension tree of the given class (rules D26-D36, B11-B16 on its release file, and
// the compatibility algorithm, rule "DC"). name is the image name: a directory name, or a file name from which
// .sysext.raw, .confext.raw or .raw is removed. With opts.BaseRoot set, the extension is checked for
// compatibility with that root's os-release and for files that shadow the base (D36); without it, only its
// ARCHITECTURE= is compared with opts.Architecture.
func Extension(ctx context.Context, dir string, class Class, name string, opts Options) (Report, error) {
	if !class.valid() {
		return Report{}, fmt.Errorf("%w: %q", ErrUnknownClass, class)
	}
	r, err := openRoot(dir)
	if err != nil {
		return Report{}, err
	}
	c := &collector{}
	if err := checkExtension(ctx, r, c, class, name, opts.withDefaults(), false); err != nil {
		return Report{}, err
	}
	return c.report(), nil
}

// trimImageSuffix removes .sysext.raw, .confext.raw or .raw from an image file name.
func trimImageSuffix(name string) string {
	for _, s := range []string{".sysext.raw", ".confext.raw", ".raw"} {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s)
		}
	}
	return name
}

// invalidImageName says why systemd's image_name_is_valid rejects s, or "" (rule D28).
func invalidImageName(s string) string {
	switch {
	case s == "" || s == "." || s == "..":
		return "empty, \".\" or \"..\""
	case strings.Contains(s, "/"):
		return "contains '/'"
	case len(s) > 255:
		return "longer than 255 bytes"
	case !utf8.ValidString(s):
		return "not valid UTF-8"
	case strings.HasPrefix(s, ".#"):
		return "starts with \".#\" (a temporary file)"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "contains control characters"
		}
	}
	return ""
}

// baseName cuts an image name at the first '_' or '+' (foo_1.2 -> foo), as the release file fallback does.
func baseName(name string) string {
	if i := strings.IndexAny(name, "_+"); i >= 0 {
		return name[:i]
	}
	return name
}

// strictXattrFalse reports whether the file carries user.extension-release.strict set to a false boolean.
func strictXattrFalse(abs string) bool {
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(abs, "user.extension-release.strict", buf)
	if err != nil {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(string(buf[:n]))) {
	case "0", "no", "n", "false", "f", "off":
		return true
	}
	return false
}

// findExtensionRelease locates the release file of an extension (rules D26, D27) as systemd v257 does.
func findExtensionRelease(r *root, c *collector, class Class, name string) string {
	dir := class.releaseDir()
	exact := dir + "/extension-release." + name
	_, fi, err := r.stat(exact)
	switch {
	case err == nil && fi.Mode().IsRegular():
		return exact
	case err == nil:
		c.errorf("D26", exact, "the release file is not a regular file")
		return ""
	case !errors.Is(err, fs.ErrNotExist):
		c.errorf("D26", exact, "cannot resolve the release file: %s", fileError(err))
		return ""
	}
	res, err := r.resolve(dir, true)
	if err != nil {
		c.errorf("D26", exact, "no release file: create %s with at least ID=", exact)
		return ""
	}
	ents, err := r.readDirResolved(res)
	if err != nil {
		c.errorf("D26", exact, "no release file (%s): create %s with at least ID=", fileError(err), exact)
		return ""
	}
	var others, candidates []string
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), "extension-release.")
		if !ok || !e.Type().IsRegular() || invalidImageName(suffix) != "" {
			continue
		}
		p := dir + "/" + e.Name()
		if suffix == baseName(name) || strictXattrFalse(r.abs(res+"/"+e.Name())) {
			candidates = append(candidates, p)
		} else {
			others = append(others, p)
		}
	}
	switch len(candidates) {
	case 0:
		if len(others) > 0 {
			c.errorf("D27", others[0], "the release file's name does not match the image name %q: rename it to %s (or, for a renamed image, set the xattr user.extension-release.strict=0)", name, exact)
		} else {
			c.errorf("D26", exact, "no release file: create %s with at least ID=", exact)
		}
		return ""
	case 1:
		c.infof("D27", candidates[0], "found by systemd's fallback, not by the exact name %s; rename it to match the image name", exact)
		return candidates[0]
	default:
		c.errorf("D27", dir, "several release files match the image name %q (%s): systemd refuses ambiguous images; keep one", name, strings.Join(candidates, ", "))
		return ""
	}
}

func checkExtension(ctx context.Context, r *root, c *collector, class Class, name string, opts Options, template bool) error {
	name = trimImageSuffix(name)
	if template && checkImageTemplate(r, c, class, name) {
		return nil
	}
	if why := invalidImageName(name); why != "" {
		c.errorf("D28", ".", "invalid image name %q: %s; systemd ignores the image", name, why)
	}
	if r.exists("usr/lib/os-release") {
		c.errorf("D29", "usr/lib/os-release", "an extension must not contain usr/lib/os-release (systemd-sysext refuses to merge): remove it")
	}
	if r.exists("etc/os-release") {
		if class == ClassConfext {
			c.errorf("D29", "etc/os-release", "a configuration extension must not ship etc/os-release: remove it")
		} else {
			c.warnf("D29", "etc/os-release", "a system extension's etc/os-release is ignored: remove it")
		}
	}
	if p := findExtensionRelease(r, c, class, name); p != "" {
		if rel, ok := readRelease(r, c, p); ok {
			checkExtensionRelease(c, p, rel, class, opts)
		}
	}
	return checkExtensionContent(ctx, r, c, class, opts, template)
}

// checkExtensionRelease applies rules D30-D33 and the compatibility algorithm.
func checkExtensionRelease(c *collector, p string, rel Release, class Class, opts Options) {
	if rel["ID"] == "" {
		c.errorf("D30", p, "ID= is missing or empty; set ID= to the base's ID (or ID=_any)")
	}
	checkIDFields(c, "D30", p, rel, true)
	lk := class.levelKey()
	if id := rel["ID"]; id != "" && id != "_any" && rel[lk] == "" && rel["VERSION_ID"] == "" {
		c.warnf("D31", p, "neither %s= nor VERSION_ID=: systemd rejects the extension on every base that has VERSION_ID", lk)
	}
	arch := rel["ARCHITECTURE"]
	archValid := arch == "" || arch == "_any" || IsArchitecture(arch)
	if !archValid {
		c.errorf("D32", p, "ARCHITECTURE=%q is not a systemd architecture id (e.g. x86-64, arm64) or _any", arch)
	}
	sk := class.scopeKey()
	if v, ok := rel[sk]; ok {
		for _, s := range strings.Fields(v) {
			if s != "system" && s != "initrd" && s != "portable" {
				c.errorf("D33", p, "%s= token %q: use system, initrd and/or portable", sk, s)
			}
		}
	}
	if opts.base != nil {
		if ok, why := Compatible(rel, class, opts.base.rel, opts.base.initrd, opts.Architecture); !ok {
			c.errorf("DC", p, "systemd would not merge this %s onto the base root: %s", class, why)
		}
	} else if archValid && arch != "" && arch != "_any" && arch != opts.Architecture {
		c.errorf("DC", p, "ARCHITECTURE=%s does not match the target architecture %s: systemd ignores the extension", arch, opts.Architecture)
	}
}

func classTop(class Class) []string {
	if class == ClassConfext {
		return []string{"etc"}
	}
	return []string{"usr", "opt"}
}

// checkExtensionContent applies rules D34-D36 and C21/C22 to the files of an extension.
func checkExtensionContent(ctx context.Context, r *root, c *collector, class Class, opts Options, template bool) error {
	ents, err := r.readDirResolved(".")
	if err != nil {
		c.errorf("X1", ".", "cannot list the extension: %s", fileError(err))
		return nil
	}
	tops := classTop(class)
	hasHierarchy := false
	for _, e := range ents {
		n := e.Name()
		if template && (n == "metadata.json" || n == ArtifactsFile || isGitFile(n)) {
			continue
		}
		if slices.Contains(tops, n) && e.IsDir() {
			hasHierarchy = true
			continue
		}
		c.warnf("D34", n, "a %s merges only %s: this has no effect; remove it", class, "/"+strings.Join(tops, " and /"))
	}
	if !hasHierarchy {
		c.warnf("D34", ".", "the %s has no %s directory: it extends nothing", class, "/"+strings.Join(tops, " or /"))
	}
	var base *root
	if opts.BaseRoot != "" {
		base, _ = openRoot(opts.BaseRoot)
	}
	for _, top := range tops {
		top, ok := dirPath(r, top)
		if !ok {
			continue
		}
		err := r.walk(ctx, top, func(rel string, d fs.DirEntry) error {
			return checkExtensionEntry(r, c, class, base, rel, d)
		}, func(rel string, err error) { c.warnf("X1", rel, "cannot inspect: %s", fileError(err)) })
		if err != nil {
			return err
		}
	}
	return nil
}

func checkExtensionEntry(r *root, c *collector, class Class, base *root, rel string, d fs.DirEntry) error {
	if !utf8.ValidString(d.Name()) {
		c.warnf("C22", strings.ToValidUTF8(rel, "\uFFFD"), "the file name is not valid UTF-8; rename it")
	}
	t := d.Type()
	switch {
	case t&fs.ModeCharDevice != 0:
		var st unix.Stat_t
		if err := unix.Lstat(r.abs(rel), &st); err == nil && st.Rdev == 0 {
			c.warnf("D36", rel, "overlay whiteout: extensions must be additive; remove it")
			return nil
		}
		c.warnf("C21", rel, "device node in an extension; remove it")
	case t&fs.ModeDevice != 0:
		c.warnf("C21", rel, "device node in an extension; remove it")
	case t&(fs.ModeNamedPipe|fs.ModeSocket) != 0:
		c.warnf("C21", rel, "socket or FIFO in an extension; remove it")
	case t.IsDir():
		for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(r.abs(rel), x, buf); err == nil && n > 0 {
				c.warnf("D36", rel, "opaque overlay directory (%s): it hides the base's directory; extensions must be additive", x)
			}
		}
	default:
		if class == ClassConfext && t.IsRegular() {
			fi, err := d.Info()
			if err == nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				c.warnf("D35", rel, "setuid/setgid bit in a confext, which is mounted nosuid: it has no effect")
			} else if err == nil && fi.Mode().Perm()&0o111 != 0 {
				c.warnf("D35", rel, "executable file in a confext, which is mounted noexec: it cannot be executed")
			}
		}
		if base != nil && !strings.HasPrefix(rel, class.releaseDir()+"/") {
			if _, fi, err := base.lstat(rel); err == nil && !fi.IsDir() {
				c.warnf("D36", rel, "shadows the base's file of the same path; extensions should add files, not replace them")
			}
		}
	}
	return nil
}

// isGitFile reports whether a top-level name of a template working copy is Git's own (.git, a directory or a
// worktree's file, .gitignore, .gitattributes, .gitmodules): not content, and never part of a checkout.
func isGitFile(name string) bool {
	switch name {
	case ".git", ".gitignore", ".gitattributes", ".gitmodules":
		return true
	}
	return false
}

// ImageFile returns the file name of the disk image an extension template's tree at dir holds instead of a tree
// (a regular *.raw file at its top), or "".
func ImageFile(dir string) string {
	r, err := openRoot(dir)
	if err != nil {
		return ""
	}
	if imgs := topImages(r); len(imgs) > 0 {
		return imgs[0]
	}
	return ""
}

func topImages(r *root) []string {
	ents, err := r.readDirResolved(".")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".raw") && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// checkImageTemplate applies rule D39 to an extension template that holds a disk image at its top instead of a
// tree, and reports whether it does. The image's release and files cannot be read here (that needs a loop
// device): they are checked, by the same rules, on the files the daemon extracts from the image with
// systemd-dissect before they reach a machine.
func checkImageTemplate(r *root, c *collector, class Class, name string) bool {
	imgs := topImages(r)
	if len(imgs) == 0 {
		return false
	}
	if len(imgs) > 1 {
		c.errorf("D39", imgs[1], "an extension template holds one disk image, not %d (%s): keep one", len(imgs), strings.Join(imgs, ", "))
	}
	for _, top := range classTop(class) {
		if r.exists(top) {
			c.errorf("D39", top, "an extension template holds either a disk image (%s) or a tree, not both: remove %s/ or the image", imgs[0], top)
		}
	}
	if want := name + "." + string(class) + ".raw"; imgs[0] != want {
		c.errorf("D39", imgs[0], "name the image %s, after the template (metadata.json template.name): a machine gets it under that name, and its release file must be extension-release.%s", want, name)
	}
	c.infof("D39", imgs[0], "a disk-image %s: its release, Verity and signature are read with systemd-dissect, and its files checked by rules D26-D36 and DC, when it is extracted for a machine", class)
	return true
}
