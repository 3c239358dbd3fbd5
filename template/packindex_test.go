package template

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deltaRepo makes a repository whose history rewrites one 64 KiB file 40 times, a few lines at a time, so
// that its packs hold long delta chains.
func deltaRepo(t *testing.T) *workRepo {
	t.Helper()
	src := newWorkRepo(t, baseFiles())
	var lines []string
	for i := range 2000 {
		lines = append(lines, fmt.Sprintf("line %d of a configuration file that changes a little each commit", i))
	}
	for c := range 40 {
		for k := range 5 {
			lines[(c*37+k*101)%len(lines)] = fmt.Sprintf("changed in commit %d, edit %d", c, k)
		}
		src.write(map[string]string{"rootfs/etc/big.conf": strings.Join(lines, "\n") + "\n"})
		src.commit(fmt.Sprintf("edit %d", c))
	}
	return src
}

// packOf makes a pack of all the objects of the repository at dir with git pack-objects (extra flags
// choose the kind of deltas).
func packOf(t *testing.T, dir string, flags ...string) []byte {
	t.Helper()
	objects := gitCmd(t, dir, "rev-list", "--objects", "--all")
	cmd := exec.Command("git", append([]string{"pack-objects", "--stdout", "--depth=50", "-q"}, flags...)...)
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	cmd.Stdin = strings.NewReader(objects + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pack-objects: %v", err)
	}
	return out
}

// receivePack writes pack through the registry's pack writer into a new bare repository and returns the
// repository and Close's error.
func receivePack(t *testing.T, pack []byte, l Limits) (string, error) {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo.git")
	gitCmd(t, t.TempDir(), "init", "-q", "--bare", repo)
	st := openStore(repo)
	defer st.Close()
	w, err := guard(st, l.withDefaults()).PackfileWriter()
	if err != nil {
		t.Fatal(err)
	}
	// In pieces, as a transport hands them over.
	for p := pack; len(p) > 0; {
		n := min(len(p), 7919)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	return repo, w.Close()
}

// The index the registry writes for a fetched pack is the one git index-pack writes, byte for byte, for packs
// with offset deltas and with reference deltas, in chains; git fsck finds the repository whole.
func TestPackIndexMatchesGit(t *testing.T) {
	src := deltaRepo(t)
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"ofs-delta", []string{"--delta-base-offset"}}, {"ref-delta", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			pack := packOf(t, src.dir, tc.flags...)
			repo, err := receivePack(t, pack, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			packs, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*"))
			var packFile, idxFile string
			for _, p := range packs {
				switch {
				case strings.HasSuffix(p, ".pack"):
					packFile = p
				case strings.HasSuffix(p, ".idx"):
					idxFile = p
				default:
					t.Errorf("left in objects/pack: %s", filepath.Base(p))
				}
			}
			if packFile == "" || idxFile == "" || len(packs) != 2 {
				t.Fatalf("objects/pack holds %v, want one pack and its index", packs)
			}
			stats := gitCmd(t, repo, "verify-pack", "-s", idxFile)
			if !strings.Contains(stats, "chain length = 10") {
				t.Fatalf("the pack has no delta chain of length 10, so this test shows nothing:\n%s", stats)
			}
			want := filepath.Join(t.TempDir(), "git.idx")
			gitCmd(t, repo, "index-pack", "-o", want, packFile)
			got, _ := os.ReadFile(idxFile)
			wantData, _ := os.ReadFile(want)
			if !bytes.Equal(got, wantData) {
				t.Errorf("index differs from git index-pack's (%d and %d bytes)", len(got), len(wantData))
			}
			gitCmd(t, repo, "fsck", "--full", "--no-dangling")
		})
	}
}

// A pack that is corrupt (a flipped byte in a delta, a wrong checksum, a truncated end) or whose delta names a
// base it does not hold (a thin pack) is refused, and nothing of it stays in objects/pack.
func TestPackIndexRefusesBrokenPacks(t *testing.T) {
	src := deltaRepo(t)
	pack := packOf(t, src.dir, "--delta-base-offset")
	head := gitCmd(t, src.dir, "rev-parse", "HEAD")
	cmd := exec.Command("git", "pack-objects", "--stdout", "--thin", "--revs", "-q")
	cmd.Dir = src.dir
	cmd.Env = gitEnv(src.dir)
	cmd.Stdin = strings.NewReader(head + "\n^" + head + "~1\n")
	thin, err := cmd.Output()
	if err != nil {
		t.Fatalf("pack-objects --thin: %v", err)
	}
	flip := func(at int) []byte {
		p := bytes.Clone(pack)
		p[at] ^= 0x40
		return p
	}
	garbage := make([]byte, 4096)
	rand.Read(garbage)
	for _, tc := range []struct {
		name string
		pack []byte
		want string
	}{
		{"flipped byte near the end", flip(len(pack) - 200), ""},
		{"flipped checksum", flip(len(pack) - 1), "checksum"},
		{"truncated", pack[:len(pack)-100], "malformed"},
		{"not a pack", garbage, "not a pack"},
		{"thin pack", thin, "reference delta not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, err := receivePack(t, tc.pack, Limits{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Close = %v, want an error naming %q", err, tc.want)
			}
			if left, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*")); len(left) != 0 {
				t.Errorf("left in objects/pack: %v", left)
			}
		})
	}
	// A delta that makes more than MaxObjectSize is refused from its header.
	if _, err := receivePack(t, pack, Limits{MaxObjectSize: 32 << 10}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("with MaxObjectSize 32 KiB: %v, want ErrTooLarge", err)
	}
}

// Update after a large file changed a little fetches the change as deltas on what the cache holds, and
// the pinned tree is the new one.
func TestUpdateFetchesDeltas(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	var lines []string
	for i := range 4000 {
		lines = append(lines, fmt.Sprintf("line %d of a large file that changes a little", i))
	}
	src.write(map[string]string{"rootfs/etc/big.conf": strings.Join(lines, "\n")})
	src.commit("big")
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "big", src.dir, "main", nil); err != nil {
		t.Fatal(err)
	}
	lines[2000] = "changed"
	src.write(map[string]string{"rootfs/etc/big.conf": strings.Join(lines, "\n")})
	c2 := src.commit("small change")
	got, err := r.Update(t.Context(), "big", nil)
	if err != nil || got.Commit != c2 {
		t.Fatalf("Update = %+v, %v; want the pin at %s", got, err, c2)
	}
	target := filepath.Join(t.TempDir(), "tree")
	if err := r.Materialize(t.Context(), "big", "", "rootfs", target, nil); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(target, "etc", "big.conf")); string(data) != strings.Join(lines, "\n") {
		t.Errorf("materialized big.conf is not the updated one (%d bytes)", len(data))
	}
	gitCmd(t, r.repoPath("big"), "fsck", "--full", "--no-dangling")
}

// Add and Update of a template with a large file hold at most twice that file plus a fixed bound of heap: the
// pack is hashed as it arrives, its older versions of the file (deltas on the newest) are resolved holding their
// base (too large for the base cache, it is inflated again for each) and streaming the result, and the file is
// streamed from the pack into the checkout. The test holds no copy of the file itself (which would also raise the garbage collector's target).
func TestLargeFileMemory(t *testing.T) {
	const size = 24 << 20 // over deltaBaseCacheSize
	src := newWorkRepo(t, baseFiles())
	path := filepath.Join(src.dir, "rootfs", "big.bin")
	// writeBig writes size pseudo-random bytes (incompressible), with edit at the middle, and returns their hash.
	writeBig := func(edit string) [32]byte {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rng := mrand.New(mrand.NewChaCha8([32]byte{1}))
		h := sha256.New()
		chunk := make([]byte, 1<<20)
		for off := 0; off < size; off += len(chunk) {
			for k := 0; k < len(chunk); k += 8 {
				binary.LittleEndian.PutUint64(chunk[k:], rng.Uint64())
			}
			if off == size/2 {
				copy(chunk, edit)
			}
			f.Write(chunk)
			h.Write(chunk)
		}
		return [32]byte(h.Sum(nil))
	}
	for _, edit := range []string{"", "first change", "second change"} {
		writeBig(edit)
		src.commit("big " + edit)
	}
	src.git("repack", "-adq") // the newest version whole, the older ones deltas on it
	packs := must(filepath.Glob(filepath.Join(src.dir, ".git", "objects", "pack", "*.pack")))
	if fi, err := os.Stat(packs[0]); err != nil || fi.Size() > 2*size {
		t.Fatalf("the source's pack is not smaller than two versions of the file (%v, %v), so the older ones are not deltas and this test shows nothing", fi, err)
	}
	r := newRegistry(t, Config{})
	peak, err := peakHeap(t, func() error {
		_, err := r.Add(t.Context(), "big", src.dir, "main", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := writeBig("third change")
	c4 := src.commit("change")
	peakUpdate, err := peakHeap(t, func() error {
		_, err := r.Update(t.Context(), "big", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak heap above idle for a %d MiB file: Add %.1f MiB, Update %.1f MiB", size>>20, float64(peak)/(1<<20), float64(peakUpdate)/(1<<20))
	const bound = 2*size + 48<<20
	if peak > bound || peakUpdate > bound {
		t.Errorf("peak heap %d MiB (Add), %d MiB (Update); want at most 2x the file plus 48 MiB (%d MiB)", peak>>20, peakUpdate>>20, bound>>20)
	}
	target := filepath.Join(t.TempDir(), "tree")
	if err := r.Materialize(t.Context(), "big", c4, "rootfs", target, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(target, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	if [32]byte(h.Sum(nil)) != want {
		t.Error("the updated big.bin differs")
	}
	gitCmd(t, r.repoPath("big"), "fsck", "--full", "--no-dangling")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
