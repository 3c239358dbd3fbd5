package template

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// TestReadDir lists directories of a pinned commit from the cache: the root, a nested directory, a missing one
// and a file (neither gives names).
func TestReadDir(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"", []string{"config", "metadata.json", "rootfs", "scripts"}},
		{"rootfs/usr/lib", []string{"os-release"}},
		{"/rootfs/etc/", []string{"os-release"}},
		{"nope/x", nil},
		{"metadata.json", nil},
	} {
		got, err := r.ReadDir("web", "", tc.dir)
		if err != nil {
			t.Fatalf("ReadDir(%q): %v", tc.dir, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("ReadDir(%q) = %v, want %v", tc.dir, got, tc.want)
		}
	}
	if _, err := r.ReadDir("nope", "", ""); err == nil {
		t.Error("ReadDir of an unknown template succeeded")
	}
}

// TestReadFile reads a file at the root of a pinned commit from the cache, and refuses a missing file (as
// fs.ErrNotExist), a symlink (also one below the root), a directory, a path that is not plain names and a file
// over the limit.
func TestReadFile(t *testing.T) {
	files := baseFiles()
	files["parameters.json"] = `{"A":{"type":"port"}}`
	files["link.json"] = "->metadata.json"
	src := newWorkRepo(t, files)
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadFile("web", "", "parameters.json", 1024)
	if err != nil || string(got) != files["parameters.json"] {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	if _, err := r.ReadFile("web", "", "nope.json", 1024); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	for _, name := range []string{"link.json", "rootfs", "rootfs/etc/os-release", "", "/metadata.json", "rootfs/../metadata.json"} {
		if _, err := r.ReadFile("web", "", name, 1024); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile(%q): %v, want a refusal", name, err)
		}
	}
	if _, err := r.ReadFile("web", "", "parameters.json", 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
}

// TestReadFileNested reads files below the root of a registered commit from the cache: a regular file, bounded; a missing one, a path
// through a file and a symlink are errors of their own.
func TestReadFileNested(t *testing.T) {
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
