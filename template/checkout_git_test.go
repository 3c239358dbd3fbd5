package template

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCheckoutMatchesGit: what Add and Materialize write is, byte for byte, what git checks out of the same
// commit, for files stored in the pack as deltas (chains of them, each from a few bytes to over a megabyte, on
// either side of the storage's large-object threshold) and after an Update whose files are deltas on the first
// commit's. go-git's lazy reader of large delta objects once wrote wrong bytes into machine roots (binaries of
// 20-60 KiB, deltas on one another) while every pack and index check passed.
func TestCheckoutMatchesGit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]byte, 2500<<10)
	for i := range base {
		base[i] = byte(rng.IntN(16)) // compressible, like binaries, so that git deltifies
	}
	variant := func(size, v int) string {
		b := bytes.Clone(base[:size])
		for j := 0; j < 8; j++ {
			b[(v*7919+j*104729)%size] ^= byte(v + 1)
		}
		return string(b)
	}
	files := map[string]string{"metadata.json": metaJSON("container", "1.0.0")}
	for _, size := range []int{20 << 10, 40 << 10, 200 << 10, 1200 << 10, 2500 << 10} {
		for v := range 4 {
			files[fmt.Sprintf("rootfs/usr/bin/f%d-%d", size, v)] = variant(size, v)
		}
	}
	// Real executables of this machine, which git deltifies against one another as in a root file system.
	bins, _ := filepath.Glob("/usr/bin/*")
	n := 0
	for _, p := range bins {
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < 16<<10 || fi.Size() > 4<<20 {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		files["rootfs/usr/bin/host-"+filepath.Base(p)] = string(data)
		if n++; n == 200 {
			break
		}
	}
	src := newWorkRepo(t, files)
	src.git("repack", "-adfq", "--window=50", "--depth=50")
	if out := src.git("count-objects", "-v"); !bytes.Contains([]byte(out), []byte("in-pack")) {
		t.Fatalf("no pack: %s", out)
	}
	r := newRegistry(t, Config{})
	tm, err := r.Add(t.Context(), "deltas", "file://"+src.dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	compare := func(commit string) {
		t.Helper()
		for _, kept := range []bool{true, false} {
			if !kept {
				r.dropKept("deltas")
			}
			target := filepath.Join(t.TempDir(), "m")
			if err := r.Materialize(t.Context(), "deltas", commit, "", target, nil); err != nil {
				t.Fatal(err)
			}
			ref := gitCheckoutOf(t, src.dir, commit)
			if out, err := exec.Command("diff", "-rq", "--no-dereference", ref, target).CombinedOutput(); err != nil {
				t.Errorf("commit %.12s (tree kept by Add or Update: %v): the checkout differs from git's:\n%s", commit, kept, out)
			}
		}
	}
	compare(tm.Commit)
	next := map[string]string{}
	for _, size := range []int{40 << 10, 1200 << 10} {
		next[fmt.Sprintf("rootfs/usr/bin/f%d-1", size)] = variant(size, 9)
	}
	src.write(next)
	src.commit("second")
	src.git("repack", "-adfq", "--window=50", "--depth=50")
	tm, err = r.Update(t.Context(), "deltas", nil)
	if err != nil {
		t.Fatal(err)
	}
	compare(tm.Commit)
}
