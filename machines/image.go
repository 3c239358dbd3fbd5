package machines

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Dissect is the default path of systemd-dissect(1).
const Dissect = "/usr/bin/systemd-dissect"

// ImageInfo is what systemd-dissect v257 reports of a disk image (`systemd-dissect --json=short IMAGE`), the
// part BitBuilder uses.
type ImageInfo struct {
	Name string `json:"name"`
	Size int64  `json:"size,omitempty"`
	// SysextRelease and ConfextRelease are the lines of the extension-release file systemd-dissect found in
	// the image (for the image's own name, or the one fallback candidate), absent when there is none.
	SysextRelease  []string `json:"sysextRelease,omitempty"`
	ConfextRelease []string `json:"confextRelease,omitempty"`
	// UseSystemExtension and UseConfigurationExtension say whether systemd would use the image as a sysext or
	// confext on a system (its release's scope includes "system").
	UseSystemExtension        bool             `json:"useSystemExtension"`
	UseConfigurationExtension bool             `json:"useConfigurationExtension"`
	Mounts                    []ImagePartition `json:"mounts"`
}

// ImagePartition is one file system of an image systemd-dissect would mount.
type ImagePartition struct {
	Designator string `json:"designator"` // root, usr, esp, ...
	Fstype     string `json:"fstype"`
	// Verity is systemd-dissect's verity column: "signed" (a Verity partition with a signature partition),
	// "yes" (Verity data, no signature), "no" or null (none).
	Verity *string `json:"verity"`
	Node   string  `json:"node"`
}

// ParseImageInfo decodes the output of `systemd-dissect --json=short IMAGE`.
func ParseImageInfo(b []byte) (ImageInfo, error) {
	var info ImageInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return ImageInfo{}, fmt.Errorf("cannot parse systemd-dissect's JSON: %w", err)
	}
	return info, nil
}

// Release returns the extension-release lines the image carries for class (sysext or confext).
func (i ImageInfo) Release(class string) []string {
	if class == ClassConfext {
		return i.ConfextRelease
	}
	return i.SysextRelease
}

// Integrity says what protects the image's content: "Verity and signature", "Verity, unsigned" or "no Verity,
// unsigned", from the partition that holds the extension's files (root or usr).
func (i ImageInfo) Integrity() string {
	verity := "no"
	for _, m := range i.Mounts {
		if m.Designator != "root" && m.Designator != "usr" || m.Verity == nil {
			continue
		}
		if *m.Verity == "signed" || *m.Verity == "yes" && verity == "no" {
			verity = *m.Verity
		}
	}
	switch verity {
	case "signed":
		return "Verity and signature"
	case "yes":
		return "Verity, unsigned"
	}
	return "no Verity, unsigned"
}

// CheckExtensionImage says why an image systemd-dissect described as info cannot be an extension of class, or
// "": it must hold one file system for / (a plain file system, or a GPT image with a root or usr partition), and
// systemd-dissect must have found an extension-release file of that class in it (rule D26; the release is then
// checked like a tree's, on the extracted files).
func CheckExtensionImage(info ImageInfo, class string) string {
	var root bool
	for _, m := range info.Mounts {
		if m.Designator == "root" || m.Designator == "usr" {
			root = true
		}
	}
	if !root {
		return "systemd-dissect finds no root or usr file system in the image"
	}
	if len(info.Release(class)) == 0 {
		return fmt.Sprintf("systemd-dissect finds no %s extension-release file in the image (rule D26): it is not a %s", class, class)
	}
	return ""
}

// InspectImage runs `systemd-dissect --json=short` on img (dissect "" for Dissect). It reads the image through a
// loop device of its own and mounts nothing that stays.
func InspectImage(ctx context.Context, dissect, img string) (ImageInfo, error) {
	if dissect == "" {
		dissect = Dissect
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, dissect, "--json=short", "--no-pager", "--no-legend", img)
	cmd.Stdout, cmd.Stderr = &limitedBuffer{b: &stdout, n: 1 << 20}, &limitedBuffer{b: &stderr, n: 64 << 10}
	if err := cmd.Run(); err != nil {
		return ImageInfo{}, fmt.Errorf("systemd-dissect %s: %w: %s", filepath.Base(img), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return ParseImageInfo(stdout.Bytes())
}

// ImageLimits bound what ExtractImage writes.
type ImageLimits struct {
	MaxEntries int   // files, directories and links of the image
	MaxBytes   int64 // bytes of the extracted files
}

// ErrImageTooLarge: an image holds more than ImageLimits allow.
var ErrImageTooLarge = errors.New("the extension image is too large")

// ExtractImage copies the hierarchies of class (usr/ and opt/, or etc/) that the image img has into dst (an
// existing directory), read-only through systemd-dissect (--list, then --copy-from for each hierarchy): the host
// keeps no mount. The image's entries are counted against lim before anything is copied, its bytes after; on an
// error what was copied is removed.
func ExtractImage(ctx context.Context, dissect, img, dst, class string, lim ImageLimits) (err error) {
	if dissect == "" {
		dissect = Dissect
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, dissect, "--list", "--no-pager", img)
	cmd.Stdout, cmd.Stderr = &limitedBuffer{b: &stdout, n: 256 << 20}, &limitedBuffer{b: &stderr, n: 64 << 10}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemd-dissect --list %s: %w: %s", filepath.Base(img), err, bytes.TrimSpace(stderr.Bytes()))
	}
	have := map[string]bool{}
	entries := 0
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		entries++
		if top, ok := strings.CutSuffix(sc.Text(), "/"); ok && !strings.Contains(top, "/") {
			have[top] = true // a directory at the top of the image
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("systemd-dissect --list %s: %w", filepath.Base(img), err)
	}
	if lim.MaxEntries > 0 && entries > lim.MaxEntries {
		return fmt.Errorf("%w: %s has %d entries, more than %d", ErrImageTooLarge, filepath.Base(img), entries, lim.MaxEntries)
	}
	var copied []string
	defer func() {
		if err != nil {
			for _, p := range copied {
				RemoveTree(p)
			}
		}
	}()
	for _, top := range ExtensionHierarchies(class) {
		if !have[top] {
			continue
		}
		d := filepath.Join(dst, top)
		copied = append(copied, d)
		out, err := exec.CommandContext(ctx, dissect, "--copy-from", img, "/"+top, d).CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemd-dissect --copy-from %s /%s: %w: %s", filepath.Base(img), top, err, bytes.TrimSpace(out))
		}
	}
	var total int64
	for _, d := range copied {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return normalizeImageEntry(p, e, dst, &total)
		})
		if err != nil {
			return err
		}
	}
	if lim.MaxBytes > 0 && total > lim.MaxBytes {
		return fmt.Errorf("%w: %s holds %d bytes in /%s, more than %d", ErrImageTooLarge, filepath.Base(img), total, strings.Join(ExtensionHierarchies(class), " and /"), lim.MaxBytes)
	}
	return nil
}

// normalizeImageEntry makes one extracted entry what a Git checkout could hold, and adds a file's size to
// *total: it belongs to root (an image carries any owner, and a host user who owned an inode could change what
// the machines get through their hard links), loses its setuid and setgid bits (the tree lies on the host, where
// a setuid file of an untrusted template must not be runnable; in a user-namespaced container such a file
// belongs to nobody anyway), and is a regular file, a directory or a symlink: a device node, FIFO or socket is
// refused (rule C21), naming it.
func normalizeImageEntry(p string, e fs.DirEntry, dst string, total *int64) error {
	t := e.Type()
	if t&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
		rel, _ := filepath.Rel(dst, p)
		return fmt.Errorf("the image holds %s, a device node, FIFO or socket (rule C21): an extension carries files, directories and symlinks only", rel)
	}
	if err := os.Lchown(p, 0, 0); err != nil {
		return err
	}
	if t&fs.ModeSymlink != 0 {
		return nil
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		// After the chown: chown clears the bits of a regular file itself, but not always those of a directory.
		if err := os.Chmod(p, fi.Mode()&^(fs.ModeSetuid|fs.ModeSetgid)); err != nil {
			return err
		}
	}
	if fi.Mode().IsRegular() {
		*total += fi.Size()
	}
	return nil
}

// limitedBuffer keeps at most n bytes and fails the write beyond them (the command then fails).
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.n {
		return 0, fmt.Errorf("output longer than %d bytes", l.n)
	}
	return l.b.Write(p)
}

// ImageInfoFile is the file beside an extension checkout that records what systemd-dissect reported of the image
// it was extracted from.
func ImageInfoFile(checkout string) string { return checkout + ".image.json" }

// ReadImageInfo reads ImageInfoFile of checkout; ok is false when the checkout is not from an image.
func ReadImageInfo(checkout string) (ImageInfo, bool) {
	b, err := os.ReadFile(ImageInfoFile(checkout))
	if err != nil {
		return ImageInfo{}, false
	}
	info, err := ParseImageInfo(b)
	return info, err == nil
}
