package template

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"golang.org/x/sys/unix"
)

// sandbox is a directory holding the cache, the tenants' trees and a
// directory "outside" that no operation may touch.
type sandbox struct {
	root, cache, tenants, outside string
}

func newSandbox(t *testing.T) sandbox {
	root := t.TempDir()
	s := sandbox{root: root, cache: filepath.Join(root, "cache"), tenants: filepath.Join(root, "tenants"),
		outside: filepath.Join(root, "outside")}
	os.MkdirAll(s.tenants, 0o755)
	os.MkdirAll(s.outside, 0o755)
	os.WriteFile(filepath.Join(s.outside, "secret"), []byte("do not touch\n"), 0o600)
	return s
}

// untouched returns a snapshot of everything but the cache and the tenants.
func (s sandbox) untouched(t *testing.T) []string {
	return snapshot(t, s.root, s.cache, s.tenants)
}

func rootfsFiles(sb sandbox) map[string]string {
	return map[string]string{
		"metadata.json":              metaJSON("container", "1.0.0"),
		"rootfs/usr/lib/os-release":  "ID=test\nVERSION_ID=1\n",
		"rootfs/etc/os-release":      "->../usr/lib/os-release",
		"rootfs/usr/bin/tool*":       "#!/bin/sh\nexit 0\n",
		"rootfs/bin":                 "->usr/bin",
		"rootfs/escape":              "->../../../outside/secret",
		"rootfs/shadow":              "->/etc/shadow",
		"rootfs/outside-dir":         "->" + sb.outside,
		"rootfs/var/lib/infra/.keep": "",
		"config/settings.conf":       "[Exec]\n",
	}
}

var layoutDirs = []Dir{
	{Path: "tmp", Mode: 0o1777},
	{Path: "var/tmp", Mode: fs.ModeSticky | 0o777},
	{Path: "proc", Mode: 0o555}, {Path: "sys", Mode: 0o555}, {Path: "dev", Mode: 0o555}, {Path: "run", Mode: 0o555},
	{Path: "root", Mode: 0o750},
	{Path: "var/lib/infra", Mode: 0o700},
}

func TestMaterialize(t *testing.T) {
	sb := newSandbox(t)
	src := newWorkRepo(t, rootfsFiles(sb))
	c1 := src.git("rev-parse", "HEAD")
	r := newRegistry(t, Config{Dir: sb.cache})
	ctx := t.Context()
	if _, err := r.Add(ctx, "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	before := sb.untouched(t)
	target := filepath.Join(sb.tenants, "rootfs")
	if err := r.Materialize(ctx, "web", "", "rootfs", target, layoutDirs); err != nil {
		t.Fatalf("Materialize: %v", err)
	}

	type want struct {
		mode fs.FileMode
		data string // content, or link target for symlinks
	}
	wants := map[string]want{
		"":                    {fs.ModeDir | 0o755, ""},
		"usr/lib/os-release":  {0o644, "ID=test\nVERSION_ID=1\n"},
		"usr/bin/tool":        {0o755, "#!/bin/sh\nexit 0\n"},
		"etc/os-release":      {fs.ModeSymlink, "../usr/lib/os-release"},
		"bin":                 {fs.ModeSymlink, "usr/bin"},
		"escape":              {fs.ModeSymlink, "../../../outside/secret"},
		"shadow":              {fs.ModeSymlink, "/etc/shadow"},
		"outside-dir":         {fs.ModeSymlink, sb.outside},
		"tmp":                 {fs.ModeDir | fs.ModeSticky | 0o777, ""},
		"var/tmp":             {fs.ModeDir | fs.ModeSticky | 0o777, ""},
		"proc":                {fs.ModeDir | 0o555, ""},
		"run":                 {fs.ModeDir | 0o555, ""},
		"root":                {fs.ModeDir | 0o750, ""},
		"var/lib/infra":       {fs.ModeDir | 0o700, ""},
		"var/lib/infra/.keep": {0o644, ""},
		"usr":                 {fs.ModeDir | 0o755, ""},
	}
	for p, w := range wants {
		full := filepath.Join(target, p)
		info, err := os.Lstat(full)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		gotMode := info.Mode()
		if gotMode&fs.ModeSymlink != 0 {
			gotMode = fs.ModeSymlink
		}
		if gotMode != w.mode {
			t.Errorf("%s: mode %v, want %v", p, gotMode, w.mode)
		}
		switch {
		case w.mode == fs.ModeSymlink:
			if l, _ := os.Readlink(full); l != w.data {
				t.Errorf("%s -> %q, want %q", p, l, w.data)
			}
		case w.mode.IsRegular():
			if data, _ := os.ReadFile(full); string(data) != w.data {
				t.Errorf("%s = %q, want %q", p, data, w.data)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(target, "metadata.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("subdir checkout contains metadata.json: %v", err)
	}
	if after := sb.untouched(t); !slices.Equal(before, after) {
		t.Errorf("files outside cache and target changed:\n%v\n%v", before, after)
	}

	// A new commit replaces the tree atomically; files gone from the commit disappear.
	src.write(map[string]string{"rootfs/usr/bin/tool*": "<delete>", "rootfs/etc/hostname": "web\n"})
	c2 := src.commit("second")
	if _, err := r.Update(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Materialize(ctx, "web", c2, "rootfs", target, layoutDirs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(target, "usr/bin/tool")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed file still there: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(target, "etc/hostname")); string(data) != "web\n" {
		t.Errorf("etc/hostname = %q", data)
	}
	if es, _ := os.ReadDir(sb.tenants); len(es) != 1 {
		t.Errorf("tenants dir has leftovers: %v", es)
	}

	// Offline: the remote is gone, an older commit still materializes.
	os.RemoveAll(src.dir)
	whole := filepath.Join(sb.tenants, "whole")
	if err := r.Materialize(ctx, "web", c1, "", whole, nil); err != nil {
		t.Fatalf("offline Materialize: %v", err)
	}
	if info, err := os.Stat(filepath.Join(whole, "rootfs/usr/bin/tool")); err != nil || info.Mode() != 0o755 {
		t.Errorf("offline checkout: %v %v", info, err)
	}
	if _, err := r.Update(ctx, "web", nil); !errors.Is(err, ErrFetch) {
		t.Errorf("Update without remote = %v, want ErrFetch", err)
	}
	if after := sb.untouched(t); !slices.Equal(before, after) {
		t.Errorf("files outside cache and target changed:\n%v\n%v", before, after)
	}
}

func TestMaterializeBadArguments(t *testing.T) {
	sb := newSandbox(t)
	src := newWorkRepo(t, rootfsFiles(sb))
	r := newRegistry(t, Config{Dir: sb.cache})
	ctx := t.Context()
	if _, err := r.Add(ctx, "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(sb.tenants, "existing")
	os.MkdirAll(filepath.Join(existing, "keep"), 0o755)
	os.WriteFile(filepath.Join(existing, "keep", "file"), []byte("old"), 0o644)
	linkTarget := filepath.Join(sb.tenants, "link")
	os.Symlink(sb.outside, linkTarget)
	fileTarget := filepath.Join(sb.tenants, "file")
	os.WriteFile(fileTarget, []byte("x"), 0o644)

	tests := []struct {
		name, commit, subdir, target string
		dirs                         []Dir
		is                           error
		contains                     string
	}{
		{"relative target", "", "", "tenants/x", nil, ErrInvalidField, "clean absolute path"},
		{"unclean target", "", "", sb.tenants + "/a/../b", nil, ErrInvalidField, "clean absolute path"},
		{"target is symlink", "", "", linkTarget, nil, ErrInvalidField, "not a directory"},
		{"target is file", "", "", fileTarget, nil, ErrInvalidField, "not a directory"},
		{"parent missing", "", "", filepath.Join(sb.tenants, "no", "x"), nil, ErrInvalidField, "parent directory"},
		{"target in the cache", "", "", filepath.Join(sb.cache, "repos", "web.git"), nil, ErrInvalidField, "overlaps the template cache"},
		{"target holds the cache", "", "", sb.root, nil, ErrInvalidField, "overlaps the template cache"},
		{"subdir dotdot", "", "../x", existing, nil, ErrInvalidField, `".." component`},
		{"subdir absolute", "", "/rootfs", existing, nil, ErrInvalidField, "relative"},
		{"subdir missing", "", "disk-image", existing, nil, ErrInvalidField, `"disk-image" does not exist`},
		{"subdir is file", "", "metadata.json", existing, nil, ErrInvalidField, "not a directory"},
		{"subdir through symlink", "", "rootfs/bin", existing, nil, ErrInvalidField, `"rootfs/bin" is not a directory`},
		{"short commit", "abc", "", existing, nil, ErrInvalidField, "40-digit"},
		{"unknown commit", strings.Repeat("cd", 20), "", existing, nil, ErrNoSuchRef, "not in the cache"},
		{"dir setuid", "", "rootfs", existing, []Dir{{Path: "tmp", Mode: fs.ModeSetuid | 0o755}}, ErrInvalidField, "dirs[0].mode"},
		{"dir unix setgid", "", "rootfs", existing, []Dir{{Path: "run", Mode: 0o555}, {Path: "tmp", Mode: 0o2775}}, ErrInvalidField, "dirs[1].mode"},
		{"dir dotdot", "", "rootfs", existing, []Dir{{Path: "../outside", Mode: 0o755}}, ErrInvalidField, "dirs[0].path"},
		{"dir through symlink", "", "rootfs", existing, []Dir{{Path: "outside-dir/planted", Mode: 0o755}}, ErrLayout, `"outside-dir"`},
		{"dir over symlink", "", "rootfs", existing, []Dir{{Path: "escape", Mode: 0o755}}, ErrLayout, "file or symlink"},
		{"dir over file", "", "rootfs", existing, []Dir{{Path: "usr/lib/os-release/x", Mode: 0o755}}, ErrLayout, `"usr/lib/os-release"`},
	}
	before := snapshot(t, sb.root, sb.cache)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Materialize(ctx, "web", tt.commit, tt.subdir, tt.target, tt.dirs)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("Materialize = %v, want %v containing %q", err, tt.is, tt.contains)
			}
			if after := snapshot(t, sb.root, sb.cache); !slices.Equal(before, after) {
				t.Errorf("something changed:\n%v\n%v", before, after)
			}
		})
	}
	if err := r.Materialize(ctx, "nope", "", "", existing, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown template: %v", err)
	}
}

// TestUnsafeTrees crafts trees Git itself would never write and checks
// that neither Add nor Materialize writes anything for them.
func TestUnsafeTrees(t *testing.T) {
	sb := newSandbox(t)
	src := newWorkRepo(t, rootfsFiles(sb))
	big := strings.Repeat("x", 5000)
	tests := []struct {
		name     string
		entries  []rawEntry
		is       error
		contains string
	}{
		{"dotdot file", []rawEntry{{mode: "040000", name: "rootfs", sub: []rawEntry{{mode: "100644", name: "..", content: "x"}}}}, ErrUnsafeName, `"rootfs/.."`},
		{"dotdot dir", []rawEntry{{mode: "040000", name: "..", sub: []rawEntry{{mode: "100644", name: "passwd", content: "root::0:0::/:/bin/sh\n"}}}}, ErrUnsafeName, `component ".."`},
		{"dot", []rawEntry{{mode: "100644", name: ".", content: "x"}}, ErrUnsafeName, `component "."`},
		{"slash in name", []rawEntry{{mode: "100644", name: "../../outside/planted", content: "x"}}, ErrUnsafeName, "contains '/'"},
		{"absolute name", []rawEntry{{mode: "100644", name: "/etc/passwd", content: "x"}}, ErrUnsafeName, "contains '/'"},
		{"dot git", []rawEntry{{mode: "040000", name: ".git", sub: []rawEntry{{mode: "100644", name: "config", content: "[core]\n"}}}}, ErrUnsafeName, ".git entry"},
		{"dot GIT", []rawEntry{{mode: "040000", name: ".GIT", sub: []rawEntry{{mode: "100644", name: "config", content: "[core]\n"}}}}, ErrUnsafeName, ".git entry"},
		{"invalid utf8", []rawEntry{{mode: "100644", name: "caf\xe9", content: "x"}}, ErrUnsafeName, "not valid UTF-8"},
		{"setuid", []rawEntry{{mode: "104755", name: "su", content: "#!/bin/sh\n"}}, ErrUnsafeMode, "mode 104755 (setuid, regular file)"},
		{"setgid dir", []rawEntry{{mode: "042755", name: "d", sub: []rawEntry{{mode: "100644", name: "f", content: "x"}}}}, ErrUnsafeMode, "setgid, directory"},
		{"group writable", []rawEntry{{mode: "100666", name: "w", content: "x"}}, ErrUnsafeMode, "mode 100666"},
		{"fifo", []rawEntry{{mode: "010644", name: "fifo", content: ""}}, ErrUnsafeMode, "fifo"},
		{"device", []rawEntry{{mode: "020644", name: "sda", content: ""}}, ErrUnsafeMode, "character device"},
		{"submodule", []rawEntry{{mode: "160000", name: "vendor", hash: strings.Repeat("1", 40)}}, ErrSubmodule, "submodule"},
		{"duplicate", []rawEntry{{mode: "100644", name: "a", content: "1"}, {mode: "100644", name: "a", content: "2"}}, ErrDuplicate, `"a"`},
		{"duplicate dir and link", []rawEntry{{mode: "120000", name: "etc", content: sb.outside}, {mode: "040000", name: "etc", sub: []rawEntry{{mode: "100644", name: "planted", content: "x"}}}}, ErrDuplicate, `"etc"`},
		{"empty symlink", []rawEntry{{mode: "120000", name: "l", content: ""}}, ErrUnsafeName, "symlink target of 0 bytes"},
		{"file over limit", []rawEntry{{mode: "100644", name: "big", content: big}}, ErrTooLarge, "5000 bytes exceeds the per-file limit of 4096"},
		{"total over limit", []rawEntry{{mode: "100644", name: "a", content: big[:3000]}, {mode: "100644", name: "b", content: big[:3001]}, {mode: "100644", name: "c", content: big[:3002]}}, ErrTooLarge, "total limit of 8000"},
	}
	var commits []string
	for i, tt := range tests {
		commits = append(commits, craftCommit(t, filepath.Join(src.dir, ".git"), "bad"+string(rune('a'+i)), tt.entries))
	}
	limits := Limits{MaxFileSize: 4096, MaxTotalSize: 8000}
	r := newRegistry(t, Config{Dir: sb.cache, Limits: limits})
	ctx := t.Context()
	if _, err := r.Add(ctx, "good", src.dir, "main", nil); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(sb.tenants, "existing")
	if err := r.Materialize(ctx, "good", "", "", existing, nil); err != nil {
		t.Fatal(err)
	}
	r.cleanup.Wait()
	before := snapshot(t, sb.root)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Add(ctx, "bad", src.dir, "bad"+string(rune('a'+i)), nil)
			if !errors.Is(err, tt.is) || !errors.Is(err, ErrUnsafeTree) || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("Add = %v, want %v containing %q", err, tt.is, tt.contains)
			}
			err = r.Materialize(ctx, "good", commits[i], "", existing, nil)
			var te *TreeError
			if !errors.As(err, &te) || !errors.Is(err, tt.is) || te.Commit != commits[i] || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("Materialize = %v, want %v containing %q", err, tt.is, tt.contains)
			}
			r.cleanup.Wait() // the scratch checkouts of verification are removed in the background
			if after := snapshot(t, sb.root); !slices.Equal(before, after) {
				t.Errorf("something changed:\n%v\n%v", before, after)
			}
		})
	}
	r2 := newRegistry(t, Config{Limits: Limits{MaxEntries: 5}})
	if _, err := r2.Add(ctx, "good", src.dir, "main", nil); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "more than 5 entries") {
		t.Errorf("Add with MaxEntries 5 = %v", err)
	}
}

func TestMaterializeManyFiles(t *testing.T) {
	testpolicy.Short(t, "100,000 files")
	// The test is about counts and correctness, not disk speed: on a busy
	// shared disk 100,000 files take minutes, so use tmpfs when there is one.
	tmp := t.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "bitbuilder-template-test-"); err == nil {
			tmp = d
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	src := manyFileRepoIn(t, filepath.Join(tmp, "src"), 100_000)
	r := newRegistry(t, Config{Dir: filepath.Join(tmp, "cache")})
	ctx := t.Context()
	if _, err := r.Add(ctx, "many", src, "", nil); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(tmp, "tree")
	if err := r.Materialize(ctx, "many", "", "", target, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if n != 100_001 { // plus metadata.json
		t.Errorf("%d files, want 100001", n)
	}
}

// The tree verified when a commit is pinned is kept and taken (renamed, not copied) by the first Materialize of
// that commit, which then writes exactly what a checkout writes; the next Materialize checks out. Moving the pin
// drops the kept tree of the old commit, Remove the current one.
func TestMaterializeTakesVerifiedTree(t *testing.T) {
	sb := newSandbox(t)
	src := newWorkRepo(t, rootfsFiles(sb))
	r := newRegistry(t, Config{Dir: sb.cache})
	ctx := t.Context()
	added, err := r.Add(ctx, "web", src.dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	kept := r.keptPath("web", added.Commit)
	var keptStat, takenStat unix.Stat_t
	if err := unix.Lstat(filepath.Join(kept, "rootfs", "usr", "lib", "os-release"), &keptStat); err != nil {
		t.Fatalf("no kept tree after Add: %v", err)
	}
	taken, checkedOut := filepath.Join(sb.tenants, "a"), filepath.Join(sb.tenants, "b")
	if err := r.Materialize(ctx, "web", "", "rootfs", taken, layoutDirs); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(taken, "usr", "lib", "os-release"), &takenStat); err != nil {
		t.Fatal(err)
	}
	if takenStat.Ino != keptStat.Ino {
		t.Errorf("the first Materialize wrote new files (inode %d), want the kept tree's (inode %d)", takenStat.Ino, keptStat.Ino)
	}
	if _, err := os.Lstat(kept); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("kept tree still there after it was taken: %v", err)
	}
	if err := r.Materialize(ctx, "web", "", "rootfs", checkedOut, layoutDirs); err != nil {
		t.Fatal(err)
	}
	if a, b := snapshot(t, taken), snapshot(t, checkedOut); !slices.Equal(a, b) {
		t.Errorf("the taken tree differs from a checkout:\n%v\n%v", a, b)
	}

	// Update keeps the new commit's tree and drops nothing else; a Materialize of the old commit checks out.
	src.write(map[string]string{"rootfs/etc/motd": "second\n"})
	c2 := src.commit("second")
	if _, err := r.Update(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(sb.tenants, "old")
	if err := r.Materialize(ctx, "web", added.Commit, "rootfs", old, layoutDirs); err != nil {
		t.Fatal(err)
	}
	if a, b := snapshot(t, old), snapshot(t, checkedOut); !slices.Equal(a, b) {
		t.Errorf("the old commit's checkout differs from before:\n%v\n%v", a, b)
	}
	if _, err := os.Lstat(r.keptPath("web", c2)); err != nil {
		t.Errorf("no kept tree for the updated pin: %v", err)
	}
	if err := r.Remove(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if left := cacheEntries(t, r); len(left) != 0 {
		t.Errorf("cache after Remove: %v", left)
	}
}
