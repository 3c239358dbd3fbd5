package template

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// objectReader reads the objects a checkout needs straight from a repository's packs (the packs the fetch
// kept, indexed by packIndexer), safe for concurrent use, so that the checkout's writers inflate files in
// parallel. It replaces go-git's object reading there, which read each object's compressed bytes one at a time
// through its scanner and computed every object's hash again to put it in its object cache. An object in no
// pack (a loose object) is read through go-git's storage.
//
// Memory: each pack's index, the bases of deltas (and trees) kept for later reads, at most objectCacheSize in
// all, and what the callers hold: one object at a time each, or for a delta read into a stream (stream), its base.
type objectReader struct {
	store objectStore // for objects in no pack
	packs []readPack
	max   int64 // the largest object read (Limits.MaxObjectSize)

	mu     sync.Mutex
	cache  map[packPos]cachedObject
	order  []packPos // cache entries, oldest first
	cached int64
	sizes  map[plumbing.Hash]objectSize // of deltas, as size found them, up to maxSizeMemo

	zpool sync.Pool // of *inflater
}

type readPack struct {
	f   *os.File
	idx *idxfile.MemoryIndex
}

// packPos is where an object is: its pack (an index into packs) and its offset there.
type packPos struct {
	pack int
	off  int64
}

// maxSizeMemo bounds the sizes of deltas size remembers (about 50 bytes each): a checkout asks for each blob's
// size twice (measure, then writeFile), and a delta's size is at the start of its instructions, which cost an
// inflate to reach.
const maxSizeMemo = 1 << 16

type objectSize struct {
	typ  plumbing.ObjectType
	size int64
}

type cachedObject struct {
	typ  plumbing.ObjectType
	data []byte
}

// inflater is a reusable zlib reader over a buffered section of a pack file.
type inflater struct {
	br  *bufio.Reader // of the pack file
	zr  io.ReadCloser
	dr  *bufio.Reader // of zr, for delta instructions
	buf []byte        // for copying out of zr
	src packSection
}

// packSection reads a pack file from off on. Its first read is at most first bytes: an object's compressed
// data is usually a small part of the buffer's 32 KiB, and the rest would be read (copied) for nothing.
type packSection struct {
	f     *os.File
	off   int64
	first int64
}

func (s *packSection) Read(p []byte) (int, error) {
	if s.first > 0 && int64(len(p)) > s.first {
		p = p[:s.first]
	}
	s.first = 0
	n, err := s.f.ReadAt(p, s.off)
	s.off += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// zlibBound is the most bytes zlib's deflate makes of n bytes (its compressBound), plus a margin: a hint only,
// since another compressor may make more (packSection reads on).
func zlibBound(n int64) int64 {
	return n + n>>12 + n>>14 + n>>25 + 13 + 64
}

// openObjects opens the packs of st's repository for reading; close releases them.
func openObjects(st *filesystem.Storage, limits Limits) (*objectReader, error) {
	r := &objectReader{store: st, max: limits.withDefaults().MaxObjectSize, cache: map[packPos]cachedObject{},
		sizes: map[plumbing.Hash]objectSize{}}
	hashes, err := st.ObjectPacks()
	if err != nil {
		return nil, fmt.Errorf("%w: listing packs: %w", ErrStorage, err)
	}
	dir := filepath.Join(st.Filesystem().Root(), "objects", "pack")
	for _, h := range hashes {
		base := filepath.Join(dir, "pack-"+h.String())
		p, err := openReadPack(base)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("%w: %w", ErrStorage, err)
		}
		r.packs = append(r.packs, p)
	}
	return r, nil
}

func openReadPack(base string) (readPack, error) {
	idxf, err := os.Open(base + ".idx")
	if err != nil {
		return readPack{}, err
	}
	defer idxf.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(bufio.NewReader(idxf)).Decode(idx); err != nil {
		return readPack{}, fmt.Errorf("%s.idx: %w", base, err)
	}
	f, err := os.Open(base + ".pack")
	if err != nil {
		return readPack{}, err
	}
	return readPack{f: f, idx: idx}, nil
}

func (r *objectReader) close() {
	for _, p := range r.packs {
		p.f.Close()
	}
	r.packs = nil
	r.cache, r.order, r.cached, r.sizes = nil, nil, 0, nil
}

// find is where object h is in the packs.
func (r *objectReader) find(h plumbing.Hash) (packPos, bool) {
	for i, p := range r.packs {
		if off, ok := idxOffset(p.idx, h); ok {
			return packPos{i, off}, true
		}
	}
	return packPos{}, false
}

// idxOffset looks object h up in a pack index (git's pack-format.txt, index version 2) read by go-git. Its own
// FindOffset also records every offset it returned in a map, which for a checkout is every object read.
func idxOffset(idx *idxfile.MemoryIndex, h plumbing.Hash) (int64, bool) {
	k := idx.FanoutMapping[h[0]]
	if k < 0 || k >= len(idx.Names) || k >= len(idx.Offset32) {
		return 0, false
	}
	names, offs := idx.Names[k], idx.Offset32[k]
	n := min(len(names)/len(h), len(offs)/4)
	i, found := sort.Find(n, func(i int) int { return bytes.Compare(h[:], names[i*len(h):(i+1)*len(h)]) })
	if !found {
		return 0, false
	}
	off := binary.BigEndian.Uint32(offs[i*4:])
	if off&(1<<31) == 0 {
		return int64(off), true
	}
	at := 8 * uint64(off&^(1<<31))
	if at+8 > uint64(len(idx.Offset64)) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(idx.Offset64[at:])), true
}

// packHeader is an object's header in a pack (git's pack-format.txt).
type packHeader struct {
	typ      plumbing.ObjectType
	size     int64 // inflated (of a delta: of its instructions)
	back     int64 // an ofs-delta's base is this many bytes before it
	baseHash plumbing.Hash
}

// readPackHeader reads an object's header: its type and size and, for a delta, where its base is.
func readPackHeader(r io.ByteReader) (packHeader, error) {
	c, err := r.ReadByte()
	if err != nil {
		return packHeader{}, err
	}
	h := packHeader{typ: plumbing.ObjectType((c >> 4) & 7), size: int64(c & 15)}
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return packHeader{}, errors.New("pack object header: size overflows")
		}
		if c, err = r.ReadByte(); err != nil {
			return packHeader{}, err
		}
		h.size |= int64(c&0x7f) << shift
	}
	switch h.typ {
	case plumbing.OFSDeltaObject: // the base's offset backwards, as git encodes it
		for n := 0; ; n++ {
			if n > 9 {
				return packHeader{}, errors.New("pack: delta offset overflows")
			}
			if c, err = r.ReadByte(); err != nil {
				return packHeader{}, err
			}
			if n > 0 {
				h.back++
			}
			h.back = h.back<<7 | int64(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
	case plumbing.REFDeltaObject:
		for k := range h.baseHash {
			if h.baseHash[k], err = r.ReadByte(); err != nil {
				return packHeader{}, err
			}
		}
	}
	return h, nil
}

// header reads the header of the object at pos, and returns it with the offset of its compressed data.
func (r *objectReader) header(pos packPos) (packHeader, int64, error) {
	var buf [32]byte // the longest header: 10 bytes of type and size, 20 of a ref-delta's base
	n, err := r.packs[pos.pack].f.ReadAt(buf[:], pos.off)
	if n == 0 && err != nil {
		return packHeader{}, 0, fmt.Errorf("%w: object at offset %d of a pack: %w", ErrStorage, pos.off, err)
	}
	br := bytes.NewReader(buf[:n])
	h, err := readPackHeader(br)
	if err == nil {
		switch h.typ {
		case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject, plumbing.OFSDeltaObject, plumbing.REFDeltaObject:
		default:
			err = fmt.Errorf("bad type %d", h.typ)
		}
	}
	if err == nil && h.size > r.max {
		err = fmt.Errorf("%d bytes, more than %d", h.size, r.max)
	}
	if err != nil {
		return packHeader{}, 0, fmt.Errorf("%w: object at offset %d of a pack: %w", ErrStorage, pos.off, err)
	}
	return h, pos.off + int64(n-br.Len()), nil
}

// inflate opens an inflater on the compressed data at offset data of pack, which inflates to size bytes; release
// it with done.
func (r *objectReader) inflate(pack int, data, size int64) (*inflater, error) {
	inf, _ := r.zpool.Get().(*inflater)
	if inf == nil {
		inf = &inflater{br: bufio.NewReaderSize(nil, 32<<10), dr: bufio.NewReaderSize(nil, 32<<10), buf: make([]byte, 32<<10)}
	}
	inf.src = packSection{f: r.packs[pack].f, off: data, first: zlibBound(size)}
	inf.br.Reset(&inf.src)
	var err error
	if inf.zr == nil {
		inf.zr, err = zlib.NewReader(inf.br)
	} else {
		err = inf.zr.(zlib.Resetter).Reset(inf.br, nil)
	}
	if err != nil {
		r.zpool.Put(inf)
		return nil, fmt.Errorf("%w: object data at offset %d of a pack: %w", ErrStorage, data, err)
	}
	return inf, nil
}

func (r *objectReader) done(inf *inflater) { r.zpool.Put(inf) }

// base is where the base of the delta at pos is.
func (r *objectReader) base(pos packPos, h packHeader) (packPos, error) {
	if h.typ == plumbing.OFSDeltaObject {
		if h.back <= 0 || h.back > pos.off {
			return packPos{}, fmt.Errorf("%w: delta at offset %d: base offset out of the pack", ErrStorage, pos.off)
		}
		return packPos{pos.pack, pos.off - h.back}, nil
	}
	if p, ok := r.find(h.baseHash); ok {
		return p, nil
	}
	return packPos{}, fmt.Errorf("%w: delta at offset %d: base %s not in the packs", ErrStorage, pos.off, h.baseHash)
}

// size is the type and size of object h, read from its header (a delta's from the start of its instructions),
// without inflating it whole.
func (r *objectReader) size(h plumbing.Hash) (plumbing.ObjectType, int64, error) {
	pos, ok := r.find(h)
	if !ok {
		obj, err := r.store.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return 0, 0, err
		}
		return obj.Type(), obj.Size(), nil
	}
	r.mu.Lock()
	known, ok := r.sizes[h]
	r.mu.Unlock()
	if ok {
		return known.typ, known.size, nil
	}
	var size int64 = -1
	for depth := 0; depth <= maxDeltaChain; depth++ {
		hdr, data, err := r.header(pos)
		if err != nil {
			return 0, 0, err
		}
		if !hdr.typ.IsDelta() {
			if size < 0 {
				return hdr.typ, hdr.size, nil
			}
			r.mu.Lock()
			if len(r.sizes) < maxSizeMemo {
				r.sizes[h] = objectSize{hdr.typ, size}
			}
			r.mu.Unlock()
			return hdr.typ, size, nil
		}
		if size < 0 {
			inf, err := r.inflate(pos.pack, data, hdr.size)
			if err != nil {
				return 0, 0, err
			}
			inf.dr.Reset(inf.zr)
			_, size, err = deltaSizes(inf.dr)
			r.done(inf)
			if err != nil {
				return 0, 0, fmt.Errorf("%w: delta at offset %d: %w", ErrStorage, pos.off, err)
			}
		}
		if pos, err = r.base(pos, hdr); err != nil {
			return 0, 0, err
		}
	}
	return 0, 0, fmt.Errorf("%w: delta chain longer than %d", ErrStorage, maxDeltaChain)
}

// read returns object h's type and content, whole. keep caches it for later reads (trees, read once to
// measure and once to write).
func (r *objectReader) read(h plumbing.Hash, keep bool) (plumbing.ObjectType, []byte, error) {
	pos, ok := r.find(h)
	if !ok {
		return r.readStore(h)
	}
	var data []byte
	typ, kept, err := r.content(pos, 0, keep, func(_ plumbing.ObjectType, size int64) (io.Writer, error) {
		if keep {
			return nil, nil
		}
		data = make([]byte, 0, size)
		return (*sliceWriter)(&data), nil
	})
	if keep {
		data = kept
	}
	return typ, data, err
}

func (r *objectReader) readStore(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	obj, err := r.store.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return 0, nil, err
	}
	if obj.Size() > r.max {
		return 0, nil, fmt.Errorf("%w: object %s: %d bytes, more than %d", ErrStorage, h, obj.Size(), r.max)
	}
	rd, err := obj.Reader()
	if err != nil {
		return 0, nil, err
	}
	defer rd.Close()
	data, err := io.ReadAll(io.LimitReader(rd, obj.Size()))
	return obj.Type(), data, err
}

// stream writes object h's content to the writer open returns once it knows the type and size (nil: skip it),
// without holding it whole (a delta's base is held while it is applied).
func (r *objectReader) stream(h plumbing.Hash, open func(typ plumbing.ObjectType, size int64) (io.Writer, error)) error {
	pos, ok := r.find(h)
	if !ok {
		typ, data, err := r.readStore(h)
		if err != nil {
			return err
		}
		w, err := open(typ, int64(len(data)))
		if err == nil && w != nil {
			_, err = w.Write(data)
		}
		return err
	}
	_, _, err := r.content(pos, 0, false, open)
	return err
}

type sliceWriter []byte

func (s *sliceWriter) Write(p []byte) (int, error) {
	*s = append(*s, p...)
	return len(p), nil
}

// content resolves the object at pos (from its base if it is a delta, the bases read through the cache) and
// writes it to the writer out returns once the type and size are known (out may be nil, or return nil: only
// keep it). With keep it also returns the content whole and caches it (while the cache has room). It returns
// the object's type.
func (r *objectReader) content(pos packPos, depth int, keep bool, out func(typ plumbing.ObjectType, size int64) (io.Writer, error)) (plumbing.ObjectType, []byte, error) {
	if depth > maxDeltaChain {
		return 0, nil, fmt.Errorf("%w: delta chain longer than %d", ErrStorage, maxDeltaChain)
	}
	open := func(typ plumbing.ObjectType, size int64) (io.Writer, error) {
		if out == nil {
			return nil, nil
		}
		return out(typ, size)
	}
	r.mu.Lock()
	c, ok := r.cache[pos]
	r.mu.Unlock()
	if ok {
		w, err := open(c.typ, int64(len(c.data)))
		if err == nil && w != nil {
			_, err = w.Write(c.data)
		}
		return c.typ, c.data, err
	}
	hdr, data, err := r.header(pos)
	if err != nil {
		return 0, nil, err
	}
	fail := func(err error) error {
		return fmt.Errorf("%w: object at offset %d of a pack: %w", ErrStorage, pos.off, err)
	}
	var kept []byte
	sink := func(typ plumbing.ObjectType, size int64) (io.Writer, error) {
		w, err := open(typ, size)
		if err != nil || !keep {
			return w, err
		}
		kept = make([]byte, 0, size)
		if w == nil {
			return (*sliceWriter)(&kept), nil
		}
		return io.MultiWriter(w, (*sliceWriter)(&kept)), nil
	}
	typ := hdr.typ
	if !hdr.typ.IsDelta() {
		w, err := sink(typ, hdr.size)
		if err != nil {
			return 0, nil, err
		}
		if w == nil {
			return typ, nil, nil
		}
		inf, err := r.inflate(pos.pack, data, hdr.size)
		if err != nil {
			return 0, nil, err
		}
		defer r.done(inf)
		n, err := io.CopyBuffer(w, &countReader{r: inf.zr, max: hdr.size}, inf.buf)
		if err != nil {
			return 0, nil, fail(err)
		}
		if n != hdr.size {
			return 0, nil, fail(fmt.Errorf("inflates to %d bytes, its header says %d", n, hdr.size))
		}
	} else {
		bpos, err := r.base(pos, hdr)
		if err != nil {
			return 0, nil, err
		}
		var base []byte
		if typ, base, err = r.content(bpos, depth+1, true, nil); err != nil {
			return 0, nil, err
		}
		// The base is resolved first, so that a chain holds one inflater at a time.
		inf, err := r.inflate(pos.pack, data, hdr.size)
		if err != nil {
			return 0, nil, err
		}
		defer r.done(inf)
		dr := inf.dr
		dr.Reset(&countReader{r: inf.zr, max: hdr.size})
		src, size, err := deltaSizes(dr)
		if err != nil {
			return 0, nil, fail(err)
		}
		if src != int64(len(base)) {
			return 0, nil, fail(fmt.Errorf("its base has %d bytes, the delta expects %d", len(base), src))
		}
		if size > r.max {
			return 0, nil, fail(fmt.Errorf("a delta makes %d bytes, more than %d", size, r.max))
		}
		w, err := sink(typ, size)
		if err != nil {
			return 0, nil, err
		}
		if w != nil {
			var werr error
			if err := patchDelta(base, dr, size, func(b []byte) {
				if werr == nil {
					_, werr = w.Write(b)
				}
			}); err != nil {
				return 0, nil, fail(err)
			}
			if werr != nil {
				return 0, nil, werr
			}
		}
	}
	if keep {
		r.remember(pos, typ, kept)
	}
	return typ, kept, nil
}

// remember caches an object's content while the cache has room, dropping the oldest entries first; an object
// larger than the whole cache is not kept.
func (r *objectReader) remember(pos packPos, typ plumbing.ObjectType, b []byte) {
	if int64(len(b)) > int64(objectCacheSize) || b == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[pos]; ok {
		return
	}
	for r.cached+int64(len(b)) > int64(objectCacheSize) && len(r.order) > 0 {
		old := r.order[0]
		r.order = r.order[1:]
		r.cached -= int64(len(r.cache[old].data))
		delete(r.cache, old)
	}
	r.cache[pos] = cachedObject{typ, b}
	r.order = append(r.order, pos)
	r.cached += int64(len(b))
}
