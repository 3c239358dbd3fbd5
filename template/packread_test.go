package template

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// TestObjectReaderMatchesGit: every object of a fetched repository whose blobs are chains of deltas (ofs-deltas,
// in the packs Add and Update kept) reads, through objectReader, as git cat-file reads it: its type, its size
// (from the headers alone), its content whole (read, with and without the cache) and streamed (stream).
func TestObjectReaderMatchesGit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := make([]byte, 300<<10)
	for i := range base {
		base[i] = byte(rng.IntN(16))
	}
	files := map[string]string{"metadata.json": metaJSON("container", "1.0.0")}
	for v := range 12 {
		b := bytes.Clone(base[:(v+1)*20<<10])
		b[v*997] ^= 0xff
		files[fmt.Sprintf("rootfs/f%02d", v)] = string(b)
	}
	src := newWorkRepo(t, files)
	src.git("repack", "-adfq", "--window=50", "--depth=50")
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "objs", "file://"+src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	src.write(map[string]string{"rootfs/f03": files["rootfs/f03"] + "more\n", "rootfs/new": files["rootfs/f11"][:5000]})
	src.commit("second")
	if _, err := r.Update(t.Context(), "objs", nil); err != nil {
		t.Fatal(err)
	}
	repo := r.repoPath("objs")
	if packs := gitCmd(t, repo, "count-objects", "-v"); !strings.Contains(packs, "packs: 2") {
		t.Fatalf("want the two packs of Add and Update:\n%s", packs)
	}
	objs := testObjects(t, repo)
	deltas := 0
	for line := range strings.SplitSeq(gitCmd(t, repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype) %(objectsize) %(deltabase)"), "\n") {
		f := strings.Fields(line)
		h := plumbing.NewHash(f[0])
		wantType, _ := plumbing.ParseObjectType(f[1])
		wantSize, _ := strconv.ParseInt(f[2], 10, 64)
		if f[3] != plumbing.ZeroHash.String() {
			deltas++
		}
		cmd := exec.Command("git", "cat-file", f[1], f[0])
		cmd.Dir = repo
		want, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second from what size remembers of a delta
			typ, size, err := objs.size(h)
			if err != nil || typ != wantType || size != wantSize {
				t.Errorf("size(%s) = %v, %d, %v; git: %v, %d", f[0], typ, size, err, wantType, wantSize)
			}
		}
		for _, keep := range []bool{false, true, true} {
			typ, got, err := objs.read(h, keep)
			if err != nil || typ != wantType || !bytes.Equal(got, want) {
				t.Errorf("read(%s, keep %v) = %v, %d bytes, %v; git: %v, %d bytes", f[0], keep, typ, len(got), err, wantType, len(want))
			}
		}
		var streamed bytes.Buffer
		err = objs.stream(h, func(typ plumbing.ObjectType, size int64) (io.Writer, error) {
			if typ != wantType || size != wantSize {
				return nil, fmt.Errorf("a %v of %d bytes", typ, size)
			}
			return &streamed, nil
		})
		if err != nil || !bytes.Equal(streamed.Bytes(), want) {
			t.Errorf("stream(%s): %v, %d bytes; git: %d bytes", f[0], err, streamed.Len(), len(want))
		}
	}
	if deltas < 5 {
		t.Fatalf("only %d objects are deltas: the test does not cover delta resolution", deltas)
	}
	if _, _, err := objs.read(plumbing.NewHash(strings.Repeat("ab", 20)), false); err == nil {
		t.Error("read of an object in no pack and not loose succeeded")
	}
}

// TestBlobHasherMatchesGit: the checkout's check of each file's content computes git's blob id (git
// hash-object) and fails, naming the path, for content other than the object's.
func TestBlobHasherMatchesGit(t *testing.T) {
	for _, content := range []string{"", "a\n", strings.Repeat("template content\n", 5000)} {
		cmd := exec.Command("git", "hash-object", "--stdin")
		cmd.Stdin = strings.NewReader(content)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		want := plumbing.NewHash(strings.TrimSpace(string(out)))
		h := newBlobHasher(int64(len(content)))
		io.WriteString(h, content)
		if err := h.check(want, "f"); err != nil {
			t.Errorf("%d bytes: %v", len(content), err)
		}
		h = newBlobHasher(int64(len(content) + 1))
		io.WriteString(h, content+"x")
		if err := h.check(want, "etc/f"); err == nil || !strings.Contains(err.Error(), `"etc/f"`) {
			t.Errorf("%d bytes and one more: check = %v, want an error naming the path", len(content), err)
		}
	}
}

// TestIdxOffset: the reader's lookup in a pack index (written as packIndexer writes it) finds what go-git's
// FindOffset finds, an offset past 2 GiB too (the index's 64-bit table), and nothing for an object not in it
// (TestObjectReaderMatchesGit looks up every object of real indexes).
func TestIdxOffset(t *testing.T) {
	w := new(idxfile.Writer)
	w.OnHeader(3)
	objects := map[plumbing.Hash]uint64{
		plumbing.NewHash(strings.Repeat("1a", 20)): 12,
		plumbing.NewHash(strings.Repeat("1b", 20)): 5 << 30, // past 2 GiB
		plumbing.NewHash(strings.Repeat("f0", 20)): 4096,
	}
	for h, off := range objects {
		w.Add(h, off, 0)
	}
	if err := w.OnFooter(plumbing.ZeroHash); err != nil {
		t.Fatal(err)
	}
	idx, err := w.Index()
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range objects {
		if got, ok := idxOffset(idx, h); !ok || got != int64(want) {
			t.Errorf("idxOffset(%s) = %d, %v; want %d", h, got, ok, want)
		}
		if ref, err := idx.FindOffset(h); err != nil || ref != int64(want) {
			t.Errorf("go-git's FindOffset(%s) = %d, %v; want %d", h, ref, err, want)
		}
	}
	for _, h := range []string{strings.Repeat("1c", 20), strings.Repeat("00", 20), strings.Repeat("ff", 20)} {
		if got, ok := idxOffset(idx, plumbing.NewHash(h)); ok {
			t.Errorf("idxOffset(%s) = %d, want not found", h, got)
		}
	}
}

// TestObjectReaderReadsPastHint: an object whose compressed data is far larger than zlib would make of it (a
// flush after every byte, as another compressor may write) reads whole: the reader's first read of an object is
// sized from what zlib makes, and it reads on from there.
func TestObjectReaderReadsPastHint(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.NoCompression)
	for _, c := range content {
		zw.Write([]byte{c})
		zw.Flush()
	}
	zw.Close()
	if int64(z.Len()) <= zlibBound(int64(len(content))) {
		t.Fatalf("compressed %d bytes, not past the hint %d", z.Len(), zlibBound(int64(len(content))))
	}
	var pack bytes.Buffer
	pack.WriteString("PACK\x00\x00\x00\x02\x00\x00\x00\x01")
	size := len(content)
	hdr := []byte{byte(plumbing.BlobObject)<<4 | byte(size&15)}
	for size >>= 4; size > 0; size >>= 7 {
		hdr[len(hdr)-1] |= 0x80
		hdr = append(hdr, byte(size&0x7f))
	}
	pack.Write(hdr)
	pack.Write(z.Bytes())
	sum := sha1.Sum(pack.Bytes())
	pack.Write(sum[:])
	repo := filepath.Join(t.TempDir(), "r.git")
	gitCmd(t, t.TempDir(), "init", "-q", "--bare", repo)
	packPath := filepath.Join(repo, "objects", "pack", "pack-"+hex.EncodeToString(sum[:])+".pack")
	if err := os.WriteFile(packPath, pack.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	gitCmd(t, repo, "index-pack", packPath)
	objs := testObjects(t, repo)
	h := plumbing.ComputeHash(plumbing.BlobObject, content)
	typ, got, err := objs.read(h, false)
	if err != nil || typ != plumbing.BlobObject || !bytes.Equal(got, content) {
		t.Fatalf("read = %v, %d bytes, %v; want the blob's %d bytes", typ, len(got), err, len(content))
	}
}

// testObjects opens an objectReader on the bare repository repo, closed when the test ends.
func testObjects(t *testing.T, repo string) *objectReader {
	t.Helper()
	st := openStore(repo)
	t.Cleanup(func() { st.Close() })
	objs, err := openObjects(st, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(objs.close)
	return objs
}
