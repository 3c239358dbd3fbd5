package validate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ArtifactsFile is the name, at a template checkout's root, of the list of files the materializer copies in
// from the host. Templates are text-only Git repositories; binaries they need (a busybox, a boot loader, a
// kernel) are named there instead of committed.
const ArtifactsFile = "artifacts.json"

// Artifact is one file a template gets from the host when it is materialized.
type Artifact struct {
	// Path is where the file goes, slash-separated and relative to the checkout root
	// (e.g. "rootfs/usr/bin/busybox").
	Path string `json:"path"`
	// From lists absolute host paths or glob patterns, tried in order; for a pattern the lexically last match
	// is used (the newest kernel of /boot/vmlinuz-*). The file is copied with its permission bits.
	From []string `json:"from"`
}

// Source returns the host file the artifact is copied from: the first entry of From that names a regular file
// (after symlinks); for a glob pattern, its lexically last match that is a regular file. It fails with
// ErrArtifactMissing when the host has none.
func (a Artifact) Source() (string, error) {
	for _, f := range a.From {
		matches, err := filepath.Glob(f)
		if err != nil {
			return "", fmt.Errorf("%w: artifact %s: pattern %q: %w", ErrInvalidArtifacts, a.Path, f, err)
		}
		slices.Sort(matches)
		for i := len(matches) - 1; i >= 0; i-- {
			if fi, err := os.Stat(matches[i]); err == nil && fi.Mode().IsRegular() {
				return matches[i], nil
			}
		}
	}
	return "", fmt.Errorf("%w: %s (from %s)", ErrArtifactMissing, a.Path, strings.Join(a.From, ", "))
}

// DefaultArtifactSources are the host files templates may ask for unless the administrator configures others:
// the boot loader, kernel, initrd, busybox and BitBuilder's own binaries the example templates use. An entry is
// an absolute path or a glob pattern (path.Match).
var DefaultArtifactSources = []string{
	"/usr/bin/busybox", "/bin/busybox",
	"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
	"/boot/vmlinuz-*", "/vmlinuz", "/boot/initrd.img-*", "/initrd.img",
	"/usr/lib/bitbuilder/*", "/usr/local/lib/bitbuilder/*",
}

// ArtifactAllowed reports whether a template may name host path or pattern from in its artifacts.json: from is
// clean and absolute, and either is one of the allowed entries as written (a pattern the administrator
// allowed) or, having no pattern characters, matches one of them. nil allow means DefaultArtifactSources.
func ArtifactAllowed(from string, allow []string) bool {
	if allow == nil {
		allow = DefaultArtifactSources
	}
	if !strings.HasPrefix(from, "/") || path.Clean(from) != from {
		return false
	}
	literal := !strings.ContainsAny(from, `*?[\`)
	for _, a := range allow {
		if a == from {
			return true
		}
		if ok, err := path.Match(a, from); literal && err == nil && ok {
			return true
		}
	}
	return false
}

type artifactsDoc struct {
	Artifacts []Artifact `json:"artifacts"`
}

// ReadArtifacts reads and checks the artifacts.json of a template checkout, allowing only host files of allow
// (nil: DefaultArtifactSources; see ArtifactAllowed). A checkout without one has no artifacts (nil, nil).
func ReadArtifacts(dir string, allow []string) ([]Artifact, error) {
	r, err := openRoot(dir)
	if err != nil {
		return nil, err
	}
	c := &collector{}
	a, err := readArtifacts(r, c, allow)
	if err != nil {
		return nil, err
	}
	if errs := c.report().Errors(); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidArtifacts, errs[0].Message)
	}
	return a.list, nil
}

// artifacts is the parsed artifacts.json of a checkout.
type artifacts struct {
	list []Artifact
	set  map[string]bool
}

func (a artifacts) hasAny(dir string, paths []string) bool {
	for _, p := range paths {
		if a.set[joinRel(dir, p)] {
			return true
		}
	}
	return false
}

func readArtifacts(r *root, c *collector, allow []string) (artifacts, error) {
	a := artifacts{set: map[string]bool{}}
	data, err := r.readFile(ArtifactsFile, releaseLimit)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		c.errorf("X2", ArtifactsFile, "cannot read: %s", fileError(err))
		return a, nil
	}
	var doc artifactsDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		c.errorf("X2", ArtifactsFile, "not valid JSON: %v", err)
		return a, nil
	}
	for i, art := range doc.Artifacts {
		p := art.Path
		if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
			c.errorf("X2", ArtifactsFile, "artifact %d: path %q must be a clean relative path inside the template", i, p)
			continue
		}
		if len(art.From) == 0 {
			c.errorf("X2", ArtifactsFile, "artifact %s: \"from\" lists no host path", p)
			continue
		}
		bad := false
		for _, f := range art.From {
			if !strings.HasPrefix(f, "/") {
				c.errorf("X2", ArtifactsFile, "artifact %s: host path %q is not absolute", p, f)
				bad = true
			} else if !ArtifactAllowed(f, allow) {
				c.errorf("X2", ArtifactsFile, "artifact %s: host path %q is not one the host's administrator allows templates to ask for", p, f)
				bad = true
			}
		}
		if bad {
			continue
		}
		a.list = append(a.list, art)
		a.set[p] = true
	}
	return a, nil
}
