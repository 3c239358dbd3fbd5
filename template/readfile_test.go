package template

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// TestReadFile reads files of a registered commit from the cache: a regular file, bounded; a missing one, a path
// through a file and a symlink are errors of their own.
func TestReadFile(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	if b, err := r.ReadFile("web", "", "rootfs/usr/lib/os-release", 1<<10); err != nil || string(b) != "ID=test\nVERSION_ID=1\n" {
		t.Fatalf("ReadFile(os-release) = %q, %v", b, err)
	}
	if _, err := r.ReadFile("web", "", "rootfs/usr/lib/os-release", 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
	for _, p := range []string{"rootfs/etc/passwd", "nope/x", "metadata.json/x"} {
		if _, err := r.ReadFile("web", "", p, 1<<10); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile(%q): %v, want not found", p, err)
		}
	}
	if _, err := r.ReadFile("web", "", "rootfs/etc/os-release", 1<<10); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a symlink: %v", err)
	}
}
