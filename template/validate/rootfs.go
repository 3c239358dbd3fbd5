package validate

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"unicode/utf8"
)

// RootFS validates a root file system tree (rules A1-A10, B11-B16 on its os-release, C17-C25, D37-D39 for
// extensions embedded in it, E40-E48 for its VOA hierarchy). Rule C25 (an init exists) applies only when
// opts.Bootable is set.
func RootFS(ctx context.Context, dir string, opts Options) (Report, error) {
	r, err := openRoot(dir)
	if err != nil {
		return Report{}, err
	}
	c := &collector{}
	if err := checkRootFS(ctx, r, c, opts.withDefaults()); err != nil {
		return Report{}, err
	}
	return c.report(), nil
}

func checkRootFS(ctx context.Context, r *root, c *collector, opts Options) error {
	checkOSRelease(r, c, opts)
	checkRootLayout(r, c, opts)
	w := rootWalker{r: r, c: c}
	if err := r.walk(ctx, ".", w.visit, w.walkError); err != nil {
		return err
	}
	if err := w.checkEmbedded(ctx, opts); err != nil {
		return err
	}
	checkMutableDirs(r, c)
	return checkVOA(ctx, r, c)
}

// findOSRelease returns the path of the os-release systemd would read in r (rule A1), or "" and why not.
func findOSRelease(r *root) (string, string) {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		_, fi, err := r.stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", p + ": " + fileError(err)
		}
		if !fi.Mode().IsRegular() {
			return "", p + " is not a regular file (systemd does not fall back to the next location)"
		}
		return p, ""
	}
	return "", "neither etc/os-release nor usr/lib/os-release exists (symlinks resolved inside the root)"
}

// readRelease reads and parses a release file, reporting syntax findings and read errors at path.
func readRelease(r *root, c *collector, p string) (Release, bool) {
	data, err := r.readFile(p, releaseLimit)
	if err != nil {
		c.errorf("X1", p, "cannot read the release file: %s", fileError(err))
		return nil, false
	}
	rel, fs := ParseRelease(data)
	c.addAll(p, fs)
	return rel, true
}

func checkOSRelease(r *root, c *collector, opts Options) {
	p, why := findOSRelease(r)
	if p == "" {
		c.errorf("A1", "etc/os-release", "no os-release: %s; add usr/lib/os-release and a symlink etc/os-release -> ../usr/lib/os-release", why)
		return
	}
	checkOSReleaseLinks(r, c)
	if r.exists("etc/initrd-release") {
		c.errorf("A4", "etc/initrd-release", "a normal root must not have etc/initrd-release (systemd would treat it as an initrd): remove it")
	}
	// Findings about the content go to the file to edit: the symlink's target.
	if res, err := r.resolve(p, true); err == nil {
		p = res
	}
	rel, ok := readRelease(r, c, p)
	if !ok {
		return
	}
	checkHostRelease(c, p, rel, opts.Now())
}

// checkOSReleaseLinks checks rules A2 and A3.
func checkOSReleaseLinks(r *root, c *collector) {
	const etc, usr = "etc/os-release", "usr/lib/os-release"
	_, etcFI, etcErr := r.lstat(etc)
	_, usrFI, usrErr := r.lstat(usr)
	etcLink := etcErr == nil && etcFI.Mode()&fs.ModeSymlink != 0
	usrLink := usrErr == nil && usrFI.Mode()&fs.ModeSymlink != 0
	etcReg := etcErr == nil && etcFI.Mode().IsRegular()
	usrReg := usrErr == nil && usrFI.Mode().IsRegular()
	switch {
	case usrReg && etcLink:
		target, _ := os.Readlink(r.abs(linkPath(r, etc)))
		res, err := r.resolve(etc, true)
		switch {
		case err != nil || res != usr:
			c.warnf("A2", etc, "symlink to %q does not resolve to usr/lib/os-release inside the root; point it to ../usr/lib/os-release", target)
		case strings.HasPrefix(target, "/"):
			c.warnf("A2", etc, "absolute symlink to %q; make it relative: ../usr/lib/os-release", target)
		}
	case usrLink && etcReg:
		c.warnf("A2", usr, "usr/lib/os-release is a symlink to etc/os-release (the seed's direction); the spec wants the reverse: move the file to usr/lib/os-release and make etc/os-release a symlink to ../usr/lib/os-release")
	case usrReg && etcReg:
		a, errA := r.readFile(etc, releaseLimit)
		b, errB := r.readFile(usr, releaseLimit)
		if errA == nil && errB == nil && !bytes.Equal(a, b) {
			c.warnf("A3", etc, "etc/os-release and usr/lib/os-release are different files; etc/os-release wins: keep one file in usr/lib and make etc/os-release a symlink to it")
		} else {
			c.warnf("A2", etc, "etc/os-release is a copy of usr/lib/os-release; make it a symlink to ../usr/lib/os-release")
		}
	case usrReg && errors.Is(etcErr, fs.ErrNotExist):
		c.warnf("A2", etc, "missing; add a symlink etc/os-release -> ../usr/lib/os-release")
	case etcReg && errors.Is(usrErr, fs.ErrNotExist):
		c.warnf("A2", usr, "missing; move etc/os-release to usr/lib/os-release and make etc/os-release a symlink to ../usr/lib/os-release")
	default:
		c.warnf("A2", etc, "usr/lib/os-release should be the real file and etc/os-release a relative symlink to ../usr/lib/os-release")
	}
}

// linkPath resolves the directories of p inside the root, not its last component: the path of the symlink
// p names, for os.Readlink. It returns p unchanged when it cannot be resolved (Readlink then fails).
func linkPath(r *root, p string) string {
	res, err := r.resolve(p, false)
	if err != nil {
		return p
	}
	return res
}

// dirPath resolves p, symlinks included, inside the root; ok is false unless it names a directory.
func dirPath(r *root, p string) (string, bool) {
	res, fi, err := r.stat(p)
	if err != nil || !fi.IsDir() {
		return "", false
	}
	return res, true
}

// dirSpec is a top-level directory that rule C18 or C19 expects.
type dirSpec struct {
	path  string
	mode  fs.FileMode
	empty bool
	rule  string
}

var rootDirs = []dirSpec{
	{"dev", 0o555, true, "C18"}, {"etc", 0o755, false, "C18"}, {"proc", 0o555, true, "C18"},
	{"root", 0o750, false, "C18"}, {"run", 0o555, true, "C18"}, {"sys", 0o555, true, "C18"},
	{"tmp", 0o777 | fs.ModeSticky, false, "C19"}, {"var", 0o755, false, "C18"},
	{"var/tmp", 0o777 | fs.ModeSticky, false, "C19"},
}

func permBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)
}

func checkRootLayout(r *root, c *collector, opts Options) {
	if !r.isDir("usr") {
		c.errorf("C17", "usr", "usr is missing or not a directory; systemd-nspawn refuses a tree without /usr")
	}
	for _, d := range rootDirs {
		res, fi, err := r.lstat(d.path)
		switch {
		case err != nil && opts.materialized:
			// Git cannot carry an empty directory: the materializer creates it.
		case err != nil:
			c.warnf(d.rule, d.path, "missing; create the directory with mode %04o", modeOctal(d.mode))
		case !fi.IsDir() && opts.materialized:
			c.errorf(d.rule, d.path, "not a directory: the materializer must create a directory with mode %04o here and refuses the tree; remove the file or symlink", modeOctal(d.mode))
		case !fi.IsDir():
			c.warnf(d.rule, d.path, "not a directory; make it a directory with mode %04o", modeOctal(d.mode))
		default:
			// The materializer sets a layout directory's mode; Git does not record directory modes.
			if permBits(fi.Mode()) != d.mode && !opts.materialized {
				c.warnf(d.rule, d.path, "mode %04o; use %04o", modeOctal(permBits(fi.Mode())), modeOctal(d.mode))
			}
			if d.empty {
				if ents, err := r.readDirResolved(res); err == nil && len(ents) > 0 {
					c.warnf(d.rule, d.path, "not empty (%d entries); a mount point that the runtime fills must be empty in a template", len(ents))
				}
			}
		}
	}
	checkTopLevel(r, c)
	checkMachineID(r, c)
	for _, p := range []string{"var/lib/systemd/random-seed", "var/lib/systemd/credential.secret"} {
		if _, _, err := r.lstat(p); err == nil {
			c.warnf("C24", p, "per-instance state must not be in a template: remove it")
		}
	}
	if opts.Bootable {
		checkInit(r, c)
	}
}

func modeOctal(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	return v
}

// standardTop are the directories expected in / (rule C20).
var standardTop = []string{"bin", "boot", "dev", "efi", "etc", "home", "lib", "lib32", "lib64", "libx32", "media",
	"mnt", "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"}

// compatLinks are the merged-/usr compatibility symlinks and their accepted targets.
var compatLinks = map[string][]string{
	"bin": {"usr/bin"}, "sbin": {"usr/sbin", "usr/bin"}, "lib": {"usr/lib"}, "lib64": {"usr/lib64", "usr/lib"},
	"lib32": {"usr/lib32"}, "libx32": {"usr/libx32"},
}

func checkTopLevel(r *root, c *collector) {
	ents, err := r.readDirResolved(".")
	if err != nil {
		c.errorf("X1", ".", "cannot list the root: %s", fileError(err))
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !slices.Contains(standardTop, name) {
			c.warnf("C20", name, "unexpected entry in /; only the standard directories and the merged-/usr symlinks belong there: move it below /usr, /etc, /var or /srv")
			continue
		}
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(r.abs(name))
		if err != nil {
			continue
		}
		want, ok := compatLinks[name]
		switch {
		case !ok:
			c.warnf("C20", name, "/%s is a symlink; it should be a directory", name)
		case strings.HasPrefix(target, "/"):
			c.warnf("C20", name, "absolute symlink to %q; make it relative: %s", target, want[0])
		case !slices.Contains(want, path.Clean(target)):
			c.warnf("C20", name, "symlink to %q; the merged-/usr link is %s", target, strings.Join(want, " or "))
		}
	}
	if _, fi, err := r.lstat("var/run"); err == nil {
		target, _ := os.Readlink(r.abs(linkPath(r, "var/run")))
		switch {
		case fi.Mode()&fs.ModeSymlink == 0:
			c.warnf("C20", "var/run", "var/run should be a symlink to ../run")
		case target != "../run":
			c.warnf("C20", "var/run", "symlink to %q; use the relative link ../run", target)
		}
	}
}

func checkMachineID(r *root, c *collector) {
	const p = "etc/machine-id"
	if _, _, err := r.lstat(p); err != nil {
		return
	}
	data, err := r.readFile(p, releaseLimit)
	if err != nil {
		c.errorf("C23", p, "cannot read etc/machine-id (%s); make it an empty regular file", fileError(err))
		return
	}
	s := string(data)
	switch {
	case s == "":
	case s == "uninitialized\n":
		c.infof("C23", p, "\"uninitialized\" is accepted; an empty file is recommended")
	case len(s) == 33 && s[32] == '\n' && isLowerHex(s[:32]) && strings.Trim(s[:32], "0") != "":
		c.errorf("C23", p, "the template carries a real machine ID; every instance would share it: make etc/machine-id an empty file")
	default:
		c.errorf("C23", p, "invalid machine-id content %q; make etc/machine-id an empty file", truncate(s))
	}
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

var initPaths = []string{"usr/lib/systemd/systemd", "lib/systemd/systemd", "sbin/init"}

// hasInit reports whether one of the init paths is an executable file (symlinks resolved inside the root).
func hasInit(r *root) bool {
	for _, p := range initPaths {
		if _, fi, err := r.stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return true
		}
	}
	return false
}

func checkInit(r *root, c *collector) {
	if hasInit(r) {
		return
	}
	c.errorf("C25", "sbin/init", "no init: none of /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init is an executable file; a booted container or VM needs one")
}

// embedded is an extension found inside a root.
type embedded struct {
	path  string // the extension's directory or .raw file
	class Class
	raw   bool
}

// rootWalker applies the per-entry rules C21, C22, D37 and E40 in one walk.
type rootWalker struct {
	r        *root
	c        *collector
	embedded []embedded
	base     *baseInfo
}

// voaMisplacedParents are places where a voa directory is a mistake (rule E40).
var voaMisplacedParents = []string{".", "usr", "usr/lib", "usr/local", "usr/local/lib", "var", "var/lib", "lib", "usr/etc", "opt", "srv"}

func (w *rootWalker) visit(rel string, d fs.DirEntry) error {
	name := d.Name()
	if !utf8.ValidString(name) {
		w.c.warnf("C22", strings.ToValidUTF8(rel, "\uFFFD"), "the file name is not valid UTF-8; rename it")
	}
	t := d.Type()
	switch {
	case t&fs.ModeDevice != 0:
		if !strings.HasPrefix(rel, "dev/") {
			w.c.warnf("C21", rel, "device node outside /dev; remove it (the runtime creates device nodes)")
		}
	case t&(fs.ModeNamedPipe|fs.ModeSocket) != 0:
		if !strings.HasPrefix(rel, "run/") {
			w.c.warnf("C21", rel, "socket or FIFO outside /run; remove it (services create them at runtime)")
		}
	case t.IsDir():
		dir := path.Dir(rel)
		switch {
		case rel == "proc" || rel == "sys":
			return errSkipDir
		case name == "extension-release.d" && strings.HasSuffix(rel, "/usr/lib/extension-release.d"):
			w.embedded = append(w.embedded, embedded{path: strings.TrimSuffix(rel, "/usr/lib/extension-release.d"), class: ClassSysext})
		case name == "extension-release.d" && strings.HasSuffix(rel, "/etc/extension-release.d"):
			w.embedded = append(w.embedded, embedded{path: strings.TrimSuffix(rel, "/etc/extension-release.d"), class: ClassConfext})
		case name == "voa" && slices.Contains(voaMisplacedParents, dir):
			w.c.errorf("E40", rel, "not a VOA load path; verifiers go to /etc/voa, /run/voa, /usr/local/share/voa or /usr/share/voa")
		}
		// Every directory in a search path is an image systemd will look at.
		if cl, ok := searchPathClass(dir); ok {
			w.embedded = append(w.embedded, embedded{path: rel, class: cl})
		}
	case t.IsRegular():
		switch {
		case strings.HasSuffix(name, ".sysext.raw"):
			w.embedded = append(w.embedded, embedded{path: rel, class: ClassSysext, raw: true})
		case strings.HasSuffix(name, ".confext.raw"):
			w.embedded = append(w.embedded, embedded{path: rel, class: ClassConfext, raw: true})
		case strings.HasSuffix(name, ".raw"):
			if cl, ok := searchPathClass(path.Dir(rel)); ok {
				w.embedded = append(w.embedded, embedded{path: rel, class: cl, raw: true})
			}
		default:
			if cl, ok := searchPathClass(path.Dir(rel)); ok {
				w.c.warnf("D39", rel, "systemd-%s picks up only directories and .raw images here: name a disk-image extension NAME.%s.raw", cl, cl)
			}
		}
	}
	return nil
}

func (w *rootWalker) walkError(rel string, err error) {
	w.c.warnf("X1", rel, "cannot inspect: %s", fileError(err))
}

// sysextPaths and confextPaths are the extension search paths inside a root (rule D37).
var (
	sysextPaths  = []string{"etc/extensions", "run/extensions", "var/lib/extensions"}
	confextPaths = []string{"run/confexts", "var/lib/confexts", "usr/local/lib/confexts", "usr/lib/confexts"}
)

func searchPathClass(dir string) (Class, bool) {
	switch {
	case slices.Contains(sysextPaths, dir):
		return ClassSysext, true
	case slices.Contains(confextPaths, dir):
		return ClassConfext, true
	}
	return "", false
}

func (w *rootWalker) checkEmbedded(ctx context.Context, opts Options) error {
	seen := map[embedded]bool{}
	for _, e := range w.embedded {
		if seen[e] {
			continue
		}
		seen[e] = true
		dir := path.Dir(e.path)
		cl, inPath := searchPathClass(dir)
		switch {
		case inPath && cl == e.class:
		case e.class == ClassSysext && (e.path == "usr" || strings.HasPrefix(e.path, "usr/")):
			w.c.errorf("D37", e.path, "a system extension under /usr is never found (and /usr is what it would extend): move it to /var/lib/extensions, /etc/extensions or /run/extensions")
			continue
		case inPath:
			w.c.errorf("D37", e.path, "a %s in the %s search path %s is never merged as a %s: move it to %s", e.class, cl, dir, e.class, strings.Join(classPaths(e.class), ", "))
			continue
		default:
			w.c.warnf("D37", e.path, "a %s outside the search paths is never merged: move it to %s", e.class, strings.Join(classPaths(e.class), ", "))
			continue
		}
		name := path.Base(e.path)
		if e.raw {
			checkRawName(w.c, e.path, e.class)
			continue
		}
		sub := w.c.sub(e.path)
		er := &root{dir: w.r.abs(e.path)}
		// An embedded extension is merged onto the root that carries it: that root is its base.
		o := opts
		o.BaseRoot = w.r.dir
		o.base = w.baseInfo()
		if err := checkExtension(ctx, er, sub, e.class, name, o, false); err != nil {
			return err
		}
		w.c.merge(sub)
	}
	return nil
}

// baseInfo returns the os-release and initrd flag of the walked root, read once.
func (w *rootWalker) baseInfo() *baseInfo {
	if w.base == nil {
		w.base = &baseInfo{rel: Release{}, initrd: w.r.exists("etc/initrd-release")}
		if p, _ := findOSRelease(w.r); p != "" {
			if data, err := w.r.readFile(p, releaseLimit); err == nil {
				w.base.rel, _ = ParseRelease(data)
			}
		}
	}
	return w.base
}

func classPaths(cl Class) []string {
	if cl == ClassConfext {
		return confextPaths
	}
	return sysextPaths
}

// checkRawName applies rules D28 and D39 to the file name of a disk-image extension.
func checkRawName(c *collector, p string, class Class) {
	file := path.Base(p)
	name := trimImageSuffix(file)
	if why := invalidImageName(name); why != "" {
		c.errorf("D28", p, "invalid image name %q: %s", name, why)
	}
	if !strings.HasSuffix(file, "."+string(class)+".raw") {
		c.infof("D39", p, "name disk-image extensions NAME.%s.raw so their class is visible", class)
	}
	if !strings.Contains(name, "_") && versionLike.MatchString(name) {
		c.infof("D39", p, "put the version after '_' (NAME_VERSION.raw) so the release file name can match NAME")
	}
}

func checkMutableDirs(r *root, c *collector) {
	for _, h := range []string{"usr", "opt", "etc"} {
		m := "var/lib/extensions.mutable/" + h
		if _, _, err := r.lstat(m); err != nil {
			continue
		}
		_, mfi, err := r.stat(m)
		if err != nil || !mfi.IsDir() {
			c.errorf("D38", m, "the mutable directory for /%s must be a directory", h)
			continue
		}
		_, hfi, err := r.stat(h)
		if err != nil || !hfi.IsDir() {
			continue
		}
		if permBits(mfi.Mode()) != permBits(hfi.Mode()) {
			c.errorf("D38", m, "mode %04o differs from /%s's %04o; systemd-sysext refuses a mutable directory whose mode differs from its hierarchy", modeOctal(permBits(mfi.Mode())), h, modeOctal(permBits(hfi.Mode())))
		}
	}
}
