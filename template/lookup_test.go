package template

import (
	"slices"
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
