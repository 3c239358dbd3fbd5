package template

import (
	"bufio"
	"compress/zlib"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// packIndexer keeps a fetched pack: packGuard writes the pack's checked bytes to file (a tmp_pack_* file in
// objects/pack) and records each object while it scans them, hashing every whole object as it inflates it.
// finish then resolves the deltas (reading their bases back from the file), writes the index and moves both
// into place as pack-<checksum>.{pack,idx}, as go-git's PackWriter does. It replaces that writer, whose parser
// inflates every object twice more (once to hash it, once again to resolve deltas) and holds up to 96 MiB of
// delta bases.
//
// Memory: the objects' records (about 100 bytes each), and while resolving a delta its base and, when
// other deltas build on it, its result (each at most MaxObjectSize), plus deltaBaseCacheSize of bases kept
// for other deltas and the last base too large for them. A delta's own instructions are streamed, never held.
type packIndexer struct {
	st       *filesystem.Storage
	dir      string
	file     billy.File
	max      int64
	objects  []packObject
	byOffset map[int64]int
	checksum plumbing.Hash

	cache    map[int][]byte // resolved bases, by object index
	order    []int          // cache entries, oldest first
	cached   int64
	large    []byte // the last base too large for the cache, so that its other deltas do not inflate it again
	largeAt  int
	resolved int
}

// deltaBaseCacheSize bounds the resolved delta bases the indexer keeps for other deltas.
const deltaBaseCacheSize = 16 << 20

// maxDeltaChain is the longest chain of deltas resolved (git's pack-objects makes at most 4095).
const maxDeltaChain = 4095

// packObject is what the scan learned of one object of the pack.
type packObject struct {
	offset   int64 // of its header
	data     int64 // of its compressed data
	typ      plumbing.ObjectType
	size     int64 // inflated, as its header says (of a delta: of its instructions)
	crc      uint32
	hash     plumbing.Hash // zero for a delta until resolved
	base     int           // the base of an ofs-delta, or of a resolved ref-delta; -1 otherwise
	baseHash plumbing.Hash // the base of a ref-delta
	children int           // deltas on this object
}

func (ix *packIndexer) start(count uint32) {
	hint := min(int(count), 1<<16)
	ix.objects = make([]packObject, 0, hint)
	ix.byOffset = make(map[int64]int, hint)
}

func (ix *packIndexer) setOFSBase(o *packObject, at int64) error {
	i, ok := ix.byOffset[at]
	if !ok || at >= o.offset {
		return fmt.Errorf("%w: delta base at offset %d is not an object before it", packfile.ErrMalformedPackFile, at)
	}
	o.base = i
	ix.objects[i].children++
	return nil
}

func (ix *packIndexer) add(o packObject) {
	ix.byOffset[o.offset] = len(ix.objects)
	ix.objects = append(ix.objects, o)
}

// abort removes the temporary pack.
func (ix *packIndexer) abort() {
	ix.file.Close()
	ix.st.Filesystem().Remove(ix.file.Name())
}

// finish resolves the deltas, writes the index and moves the pack and its index into place; on failure it
// removes what it wrote.
func (ix *packIndexer) finish() error {
	err := ix.resolveAll()
	if err == nil {
		err = ix.save()
	}
	if err != nil {
		ix.abort()
		return err
	}
	// The storage read the list of packs before the fetch; let it read it again.
	ix.st.ObjectStorage.Reindex()
	return nil
}

// resolveAll finds the hash of every delta. A ref-delta may name a base that follows it in the pack, or
// that is itself a delta: those are resolved in further rounds. A base outside the pack (a thin pack) is
// refused, as go-git's own parser does.
func (ix *packIndexer) resolveAll() error {
	ix.cache = map[int][]byte{}
	defer func() { ix.cache, ix.order, ix.cached, ix.large = nil, nil, 0, nil }()
	byHash := map[plumbing.Hash]int{}
	pendingRef := 0
	for i := range ix.objects {
		o := &ix.objects[i]
		switch {
		case !o.hash.IsZero():
			byHash[o.hash] = i
		case o.typ == plumbing.REFDeltaObject:
			pendingRef++
		}
	}
	for {
		// Link the ref-deltas whose base is known by now.
		for i := range ix.objects {
			o := &ix.objects[i]
			if o.typ == plumbing.REFDeltaObject && o.base < 0 {
				if b, ok := byHash[o.baseHash]; ok {
					o.base = b
					ix.objects[b].children++
					pendingRef--
				}
			}
		}
		progress := false
		for i := range ix.objects {
			o := &ix.objects[i]
			if !o.hash.IsZero() {
				byHash[o.hash] = i // also the bases resolved on the way to another delta
				continue
			}
			if o.base < 0 || !ix.chainKnown(i) {
				continue
			}
			if _, _, err := ix.content(i, 0, false); err != nil {
				return err
			}
			byHash[ix.objects[i].hash] = i
			progress = true
		}
		if pendingRef == 0 || !progress {
			break
		}
	}
	for i := range ix.objects {
		if o := &ix.objects[i]; o.hash.IsZero() {
			if o.typ == plumbing.REFDeltaObject && o.base < 0 {
				return fmt.Errorf("%w: %s (a thin pack's base is not in the pack)", packfile.ErrReferenceDeltaNotFound, o.baseHash)
			}
			return fmt.Errorf("%w: object at offset %d: its delta base cannot be resolved", packfile.ErrMalformedPackFile, o.offset)
		}
	}
	return nil
}

// chainKnown says whether every base down the delta chain of object i is linked.
func (ix *packIndexer) chainKnown(i int) bool {
	for n := 0; n <= maxDeltaChain; n++ {
		o := &ix.objects[i]
		if !o.typ.IsDelta() {
			return true
		}
		if o.base < 0 {
			return false
		}
		i = o.base
	}
	return true // content refuses it
}

// content returns object i's type and, with keep, its inflated content (resolving it from its base if it is a
// delta); a delta's hash is recorded the first time it is resolved. A delta with other deltas on it is kept
// whole (it is their base), in the cache while that has room.
func (ix *packIndexer) content(i, depth int, keep bool) ([]byte, plumbing.ObjectType, error) {
	if depth > maxDeltaChain {
		return nil, 0, fmt.Errorf("%w: delta chain longer than %d", packfile.ErrMalformedPackFile, maxDeltaChain)
	}
	o := &ix.objects[i]
	if b, ok := ix.cache[i]; ok {
		return b, ix.typeOf(i), nil
	}
	if ix.large != nil && ix.largeAt == i {
		return ix.large, ix.typeOf(i), nil
	}
	keep = keep || o.children > 0
	if !o.typ.IsDelta() {
		if !keep {
			return nil, o.typ, nil
		}
		buf := make([]byte, o.size)
		zr, err := ix.inflate(o)
		if err != nil {
			return nil, 0, err
		}
		_, err = io.ReadFull(zr, buf)
		zr.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("%w: object at offset %d: %w", packfile.ErrMalformedPackFile, o.offset, err)
		}
		ix.remember(i, buf)
		return buf, o.typ, nil
	}
	base, typ, err := ix.content(o.base, depth+1, true)
	if err != nil {
		return nil, 0, err
	}
	o = &ix.objects[i]
	zr, err := ix.inflate(o)
	if err != nil {
		return nil, 0, err
	}
	defer zr.Close()
	dr := bufio.NewReaderSize(&countReader{r: zr, max: o.size}, 32<<10)
	var out []byte
	if err := ix.applyDelta(o, typ, base, dr, keep, &out); err != nil {
		return nil, 0, fmt.Errorf("%w: delta at offset %d: %w", packfile.ErrMalformedPackFile, o.offset, err)
	}
	if keep {
		ix.remember(i, out)
	}
	return out, typ, nil
}

// typeOf is the type of the object object i is or makes.
func (ix *packIndexer) typeOf(i int) plumbing.ObjectType {
	for range maxDeltaChain + 1 {
		o := &ix.objects[i]
		if !o.typ.IsDelta() {
			return o.typ
		}
		i = o.base
	}
	return plumbing.InvalidObject
}

// remember caches b as object i's content while the cache has room, dropping the oldest entries first.
func (ix *packIndexer) remember(i int, b []byte) {
	if ix.objects[i].children == 0 {
		return
	}
	if int64(len(b)) > deltaBaseCacheSize {
		ix.large, ix.largeAt = b, i
		return
	}
	for ix.cached+int64(len(b)) > deltaBaseCacheSize && len(ix.order) > 0 {
		old := ix.order[0]
		ix.order = ix.order[1:]
		ix.cached -= int64(len(ix.cache[old]))
		delete(ix.cache, old)
	}
	ix.cache[i] = b
	ix.order = append(ix.order, i)
	ix.cached += int64(len(b))
}

// inflate reads object o's compressed data back from the pack file.
func (ix *packIndexer) inflate(o *packObject) (io.ReadCloser, error) {
	zr, err := zlib.NewReader(bufio.NewReaderSize(io.NewSectionReader(ix.file, o.data, 1<<62), 32<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: object at offset %d: %w", packfile.ErrMalformedPackFile, o.offset, err)
	}
	return zr, nil
}

// applyDelta applies the delta instructions read from dr (git's pack-format.txt) to base, hashing what they
// make as an object of type typ when o's hash is not known yet, and with keep also collecting it in out.
func (ix *packIndexer) applyDelta(o *packObject, typ plumbing.ObjectType, base []byte, dr *bufio.Reader, keep bool, out *[]byte) error {
	srcSize, size, err := deltaSizes(dr)
	if err != nil {
		return err
	}
	if srcSize != int64(len(base)) {
		return fmt.Errorf("its base has %d bytes, the delta expects %d", len(base), srcSize)
	}
	if size > ix.max {
		return tooLarge("a delta makes %d bytes, more than %d", size, ix.max)
	}
	var hasher plumbing.Hasher
	hashing := o.hash.IsZero()
	if hashing {
		hasher = plumbing.NewHasher(typ, size)
	}
	var buf []byte
	if keep {
		buf = make([]byte, 0, size)
	}
	if err := patchDelta(base, dr, size, func(b []byte) {
		if hashing {
			hasher.Write(b)
		}
		if keep {
			buf = append(buf, b...)
		}
	}); err != nil {
		return err
	}
	if hashing {
		o.hash = hasher.Sum()
		ix.resolved++
	}
	*out = buf
	return nil
}

// deltaSizes reads the start of a delta's instructions: the sizes of its base and of what it makes.
func deltaSizes(dr io.ByteReader) (src, dst int64, err error) {
	if src, err = readVarint(dr); err != nil {
		return 0, 0, err
	}
	if dst, err = readVarint(dr); err != nil {
		return 0, 0, err
	}
	return src, dst, nil
}

// patchDelta applies the delta instructions read from dr, after deltaSizes, to base, passing what they make,
// size bytes in all, to emit a piece at a time (pieces of base, or of a buffer reused for the next insert).
func patchDelta(base []byte, dr *bufio.Reader, size int64, emit func([]byte)) error {
	var lit [0x80]byte
	var made int64
	for {
		cmd, err := dr.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case cmd&0x80 != 0: // copy from the base
			var off, n int64
			for k := range 4 {
				if cmd&(1<<k) != 0 {
					c, err := dr.ReadByte()
					if err != nil {
						return err
					}
					off |= int64(c) << (8 * k)
				}
			}
			for k := range 3 {
				if cmd&(0x10<<k) != 0 {
					c, err := dr.ReadByte()
					if err != nil {
						return err
					}
					n |= int64(c) << (8 * k)
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if off+n > int64(len(base)) || made+n > size {
				return errors.New("a copy reaches past its base or its result")
			}
			emit(base[off : off+n])
			made += n
		case cmd != 0: // insert the next cmd bytes
			n := int64(cmd)
			if made+n > size {
				return errors.New("an insert reaches past its result")
			}
			if _, err := io.ReadFull(dr, lit[:n]); err != nil {
				return err
			}
			emit(lit[:n])
			made += n
		default:
			return errors.New("instruction 0 is reserved")
		}
	}
	if made != size {
		return fmt.Errorf("makes %d bytes, its header says %d", made, size)
	}
	return nil
}

// save writes the index and moves the pack into place, named by its checksum; an empty pack is dropped.
func (ix *packIndexer) save() error {
	if len(ix.objects) == 0 {
		ix.abort()
		return nil
	}
	w := new(idxfile.Writer)
	w.OnHeader(uint32(len(ix.objects)))
	for i := range ix.objects {
		o := &ix.objects[i]
		w.Add(o.hash, uint64(o.offset), o.crc)
	}
	if err := w.OnFooter(ix.checksum); err != nil {
		return err
	}
	idx, err := w.Index()
	if err != nil {
		return err
	}
	if err := ix.file.Close(); err != nil {
		return err
	}
	fs := ix.st.Filesystem()
	base := fs.Join(ix.dir, "pack-"+ix.checksum.String())
	if _, err := fs.Lstat(base + ".pack"); err == nil { // fetched before: keep the one there
		return fs.Remove(ix.file.Name())
	}
	tmpIdx, err := fs.TempFile(ix.dir, "tmp_idx_")
	if err != nil {
		return err
	}
	if _, err := idxfile.NewEncoder(tmpIdx).Encode(idx); err != nil {
		tmpIdx.Close()
		fs.Remove(tmpIdx.Name())
		return err
	}
	if err := tmpIdx.Close(); err != nil {
		fs.Remove(tmpIdx.Name())
		return err
	}
	if err := fs.Rename(tmpIdx.Name(), base+".idx"); err != nil {
		fs.Remove(tmpIdx.Name())
		return err
	}
	if err := fs.Rename(ix.file.Name(), base+".pack"); err != nil {
		fs.Remove(base + ".idx")
		return err
	}
	return nil
}
