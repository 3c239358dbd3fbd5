package template

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUpdateStartsFromKeptTree: Update changes the tree Add verified and kept into the new commit's, writing only
// what differs: the result is what git checks out of the new commit (files changed, added, removed, a removed
// directory, a file that became a directory and a directory that became a file, a changed symlink, a changed
// mode), unchanged files are the files of the kept tree (a modification time set on them there stays; inode
// numbers cannot tell, the file system reuses them), and the removed directories are cleaned up.
func TestUpdateStartsFromKeptTree(t *testing.T) {
	src := newWorkRepo(t, map[string]string{
		"metadata.json":         metaJSON("container", "1.0.0"),
		"rootfs/same":           "unchanged\n",
		"rootfs/changed":        "before\n",
		"rootfs/gone":           "removed by the update\n",
		"rootfs/olddir/a":       "a\n",
		"rootfs/olddir/sub/b":   "b\n",
		"rootfs/f2d":            "a file, then a directory\n",
		"rootfs/d2f/y":          "a directory, then a file\n",
		"rootfs/link":           "->same",
		"rootfs/mode":           "made executable\n",
		"rootfs/keepdir/k":      "an unchanged subtree\n",
		"rootfs/subchg/u":       "unchanged in a changed directory\n",
		"rootfs/subchg/v":       "changed in a changed directory\n",
		"rootfs/subchg/deep/w":  "changed deeper\n",
		"rootfs/subchg/deep/x*": "executable, unchanged\n",
	})
	r := newRegistry(t, Config{})
	first, err := r.Add(t.Context(), "upd", "file://"+src.dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	kept := r.keptPath("upd", first.Commit)
	marker := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	marked := func(p string) bool {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime().Equal(marker)
	}
	unchanged := []string{"rootfs/same", "rootfs/keepdir/k", "rootfs/subchg/u", "rootfs/subchg/deep/x"}
	for _, p := range append(slices.Clone(unchanged), "rootfs/changed") {
		if err := os.Chtimes(filepath.Join(kept, p), marker, marker); err != nil {
			t.Fatal(err)
		}
	}

	src.write(map[string]string{
		"rootfs/gone": "<delete>", "rootfs/olddir/a": "<delete>", "rootfs/olddir/sub/b": "<delete>",
		"rootfs/f2d": "<delete>", "rootfs/d2f/y": "<delete>",
	})
	src.write(map[string]string{
		"metadata.json":        metaJSON("container", "1.0.1"),
		"rootfs/changed":       "after\n",
		"rootfs/new":           "added\n",
		"rootfs/f2d/inside":    "now in a directory\n",
		"rootfs/d2f":           "now a file\n",
		"rootfs/link":          "->changed",
		"rootfs/mode*":         "made executable\n",
		"rootfs/subchg/v":      "changed\n",
		"rootfs/subchg/deep/w": "changed too\n",
	})
	second := src.commit("second")
	tm, err := r.Update(t.Context(), "upd", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Commit != second {
		t.Fatalf("pinned %s, want %s", tm.Commit, second)
	}
	if _, err := os.Stat(kept); !os.IsNotExist(err) {
		t.Errorf("the first commit's kept tree is still there (%v): Update did not take it", err)
	}
	r.cleanup.Wait()
	tmps, _ := os.ReadDir(filepath.Join(r.dir, "tmp"))
	var names []string
	for _, e := range tmps {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(r.keptPath("upd", second))}; !slices.Equal(names, want) {
		t.Errorf("tmp/ holds %v, want only the kept tree %v (removed directories not cleaned up?)", names, want)
	}

	// Materialize takes the kept tree by rename: the files are those Update left.
	target := filepath.Join(t.TempDir(), "m")
	if err := r.Materialize(t.Context(), "upd", second, "", target, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range unchanged {
		if !marked(filepath.Join(target, p)) {
			t.Errorf("%s was written again: an unchanged file is kept", p)
		}
	}
	if marked(filepath.Join(target, "rootfs/changed")) {
		t.Error("rootfs/changed is the old file: a changed file is written anew")
	}
	got, want := snapshot(t, target), snapshot(t, gitCheckoutOf(t, src.dir, second))
	if !slices.Equal(got, want) {
		t.Errorf("the updated tree differs from git's checkout:\n got %s\nwant %s", strings.Join(got, "\n    "), strings.Join(want, "\n    "))
	}
}

// TestUpdateRefusedFromKeptTree: an Update whose commit the validator refuses, after it took and changed the
// kept tree of the pinned commit, leaves the pin where it was and nothing of its work behind; the pinned commit
// then materializes as git checks it out (checked out again: its kept tree is gone).
func TestUpdateRefusedFromKeptTree(t *testing.T) {
	src := newWorkRepo(t, map[string]string{
		"metadata.json": metaJSON("container", "1.0.0"),
		"rootfs/a":      "a\n",
		"rootfs/d/b":    "b\n",
	})
	r := newRegistry(t, Config{Validate: markerValidator(nil)})
	first, err := r.Add(t.Context(), "upd", "file://"+src.dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	src.write(map[string]string{"INVALID": "refused\n", "rootfs/a": "changed\n", "rootfs/d/b": "<delete>"})
	src.commit("refused")
	var ve *ValidationError
	if _, err := r.Update(t.Context(), "upd", nil); !errors.As(err, &ve) {
		t.Fatalf("Update = %v, want a *ValidationError", err)
	}
	if tm, _ := r.Get("upd"); tm.Commit != first.Commit {
		t.Fatalf("pin moved to %s", tm.Commit)
	}
	r.cleanup.Wait()
	if tmps, _ := os.ReadDir(filepath.Join(r.dir, "tmp")); len(tmps) != 0 {
		t.Errorf("tmp/ holds %d entries after the refused Update, want none", len(tmps))
	}
	target := filepath.Join(t.TempDir(), "m")
	if err := r.Materialize(t.Context(), "upd", first.Commit, "", target, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := snapshot(t, target), snapshot(t, gitCheckoutOf(t, src.dir, first.Commit)); !slices.Equal(got, want) {
		t.Errorf("the pinned commit's tree differs from git's checkout:\n got %v\nwant %v", got, want)
	}
}
