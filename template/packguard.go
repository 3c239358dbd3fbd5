package template

import (
	"bufio"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// guardedStorage is a repository's storage whose fetched packs are received by packGuard and packIndexer
// (packindex.go) instead of go-git's PackWriter: each object is checked against the limits from the pack's
// bytes as they arrive, and hashed in the same pass, before anything is kept.
type guardedStorage struct {
	*filesystem.Storage
	maxObject int64
	// refused, when set, is told why a pack was refused (the fetch cancels itself with it, which also ends
	// the transport: git-upload-pack would otherwise block writing the rest of the pack).
	refused func(error)
}

func guard(st *filesystem.Storage, l Limits) *guardedStorage {
	return &guardedStorage{Storage: st, maxObject: l.MaxObjectSize}
}

// PackfileWriter implements storer.PackfileWriter, which go-git's fetch prefers over decoding into the storage.
func (g *guardedStorage) PackfileWriter() (io.WriteCloser, error) {
	fs := g.Storage.Filesystem()
	dir := fs.Join("objects", "pack")
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := fs.TempFile(dir, "tmp_pack_")
	if err != nil {
		return nil, err
	}
	ix := &packIndexer{st: g.Storage, dir: dir, file: f, max: g.maxObject}
	pg := newPackGuard(ix, g.maxObject)
	pg.refused = g.refused
	return pg, nil
}

// packGuard scans a pack stream as it is written and forwards to the indexer only bytes it has checked: the
// pack header, and for each object its header (its size and, for a delta, the size of the object it makes, at
// most max) and its compressed data, inflated here into the object's hash (never into memory) and refused when
// it inflates to more than its header says. So no object over max, whatever it compresses to, is kept. The
// scan records each object's offset, CRC-32 and (for a whole object) hash for the index, so the pack is
// inflated once while it arrives. The scanner needs a fixed few hundred KiB (the inflater's window and buffers).
type packGuard struct {
	w         *packIndexer
	max       int64
	in        chan []byte
	ack       chan int64 // the scanner's consumed offset each time it needs more bytes
	done      chan error // the scanner's result; then it consumed everything
	scanErr   error
	finished  bool
	pending   []byte // written, not yet forwarded
	forwarded int64
	refused   func(error)
}

func newPackGuard(w *packIndexer, max int64) *packGuard {
	g := &packGuard{w: w, max: max, in: make(chan []byte), ack: make(chan int64), done: make(chan error, 1)}
	go func() {
		fr := &feedReader{in: g.in, ack: g.ack, sum: sha1.New()}
		g.done <- scanPack(fr, max, w)
		// Let a writer that still sends see that the scanner is gone.
		for range g.in {
		}
	}()
	return g
}

// Write checks p and forwards what is checked. After a refusal it discards the rest of the stream rather than
// failing, so that the sender (git-upload-pack, whose exit go-git waits for) can finish writing; Close reports
// the refusal.
func (g *packGuard) Write(p []byte) (int, error) {
	if g.scanErr != nil {
		return len(p), nil
	}
	if g.finished {
		return g.forward(p)
	}
	g.pending = append(g.pending, p...)
	g.in <- p
	var upto int64
	select {
	case upto = <-g.ack:
	case err := <-g.done:
		if err != nil {
			g.scanErr = err
			g.pending = nil
			if g.refused != nil {
				g.refused(err)
			}
			return len(p), nil
		}
		g.finished = true
		upto = g.forwarded + int64(len(g.pending))
	}
	n := upto - g.forwarded
	if _, err := g.forward(g.pending[:n]); err != nil {
		return 0, err
	}
	g.pending = append(g.pending[:0], g.pending[n:]...)
	return len(p), nil
}

func (g *packGuard) forward(p []byte) (int, error) {
	n, err := g.w.file.Write(p)
	g.forwarded += int64(n)
	return n, err
}

// Close ends the scan; the indexer then resolves the deltas and keeps the pack and its index, or, after a
// refusal or a truncated or malformed pack, removes what it wrote.
func (g *packGuard) Close() error {
	close(g.in)
	if !g.finished && g.scanErr == nil && g.forwarded == 0 && len(g.pending) == 0 {
		<-g.done
		g.w.abort() // nothing was written: no pack, as with go-git's writer
		return nil
	}
	if !g.finished && g.scanErr == nil {
		g.scanErr = <-g.done
		if g.scanErr == nil {
			g.finished = true
			if _, err := g.forward(g.pending); err != nil {
				g.scanErr = err
			}
		} else if errors.Is(g.scanErr, io.ErrUnexpectedEOF) {
			g.scanErr = fmt.Errorf("%w: %w", packfile.ErrMalformedPackFile, g.scanErr)
		}
	}
	if g.scanErr != nil {
		g.w.abort()
		return g.scanErr
	}
	return g.w.finish()
}

// feedReader is the scanner's side: an io.ByteReader (so that the inflater reads exactly its stream and
// nothing beyond) over the chunks Write hands over, acknowledging how far it read whenever it needs more. It
// folds what was read into the pack's checksum and into a CRC-32 (the index's, of each object's bytes) a
// chunk at a time, not byte by byte.
type feedReader struct {
	in       chan []byte
	ack      chan int64
	buf      []byte // the current chunk
	pos      int    // read up to here
	folded   int    // summed up to here
	consumed int64
	started  bool
	sum      hash.Hash // of the pack, to its checksum
	crc      uint32
	nosum    bool // the checksum itself is being read
}

// fold adds what was read of the current chunk since the last fold to the checksum and the CRC.
func (f *feedReader) fold() {
	if f.pos > f.folded {
		b := f.buf[f.folded:f.pos]
		if !f.nosum {
			f.sum.Write(b)
		}
		f.crc = crc32.Update(f.crc, crc32.IEEETable, b)
		f.folded = f.pos
	}
}

// startCRC begins the CRC-32 of an object at the current position; objectCRC ends it.
func (f *feedReader) startCRC() {
	f.fold()
	f.crc = 0
}

func (f *feedReader) objectCRC() uint32 {
	f.fold()
	return f.crc
}

func (f *feedReader) fill() error {
	for f.pos == len(f.buf) {
		f.fold()
		if f.started {
			f.ack <- f.consumed
		}
		f.started = true
		b, ok := <-f.in
		if !ok {
			return io.ErrUnexpectedEOF
		}
		f.buf, f.pos, f.folded = b, 0, 0
	}
	return nil
}

func (f *feedReader) Read(p []byte) (int, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	n := copy(p, f.buf[f.pos:])
	f.pos += n
	f.consumed += int64(n)
	return n, nil
}

func (f *feedReader) ReadByte() (byte, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	b := f.buf[f.pos]
	f.pos++
	f.consumed++
	return b, nil
}

// tooLarge wraps what scanPack refuses.
func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: %s (Limits.MaxObjectSize)", ErrTooLarge, fmt.Sprintf(format, args...))
}

// scanPack reads a version 2 or 3 pack (git's pack-format.txt), checks each object's sizes against max and
// records each object in ix: where it is, its CRC-32 and, for a whole object, its hash.
func scanPack(r *feedReader, max int64, ix *packIndexer) error {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if string(hdr[:4]) != "PACK" {
		return errors.New("not a pack")
	}
	if v := binary.BigEndian.Uint32(hdr[4:8]); v != 2 && v != 3 {
		return fmt.Errorf("pack version %d", v)
	}
	count := binary.BigEndian.Uint32(hdr[8:12])
	ix.start(count)
	copyBuf := make([]byte, 32<<10)
	for i := uint32(0); i < count; i++ {
		offset := r.consumed
		r.startCRC()
		hdr, err := readPackHeader(r)
		if err != nil {
			return err
		}
		if hdr.size > max {
			return tooLarge("object %d of the pack is %d bytes, more than %d", i, hdr.size, max)
		}
		o := packObject{offset: offset, typ: hdr.typ, size: hdr.size, base: -1, baseHash: hdr.baseHash}
		switch o.typ {
		case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject, plumbing.REFDeltaObject:
		case plumbing.OFSDeltaObject:
			if err := ix.setOFSBase(&o, offset-hdr.back); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
		default:
			return fmt.Errorf("pack object %d: bad type %d", i, hdr.typ)
		}
		size := hdr.size
		o.data = r.consumed
		zr, err := zlib.NewReader(r)
		if err != nil {
			return fmt.Errorf("pack object %d: %w", i, err)
		}
		cr := &countReader{r: zr, max: size}
		if o.typ.IsDelta() {
			br := bufio.NewReaderSize(cr, 64)
			if _, err := readVarint(br); err != nil { // the base's size
				return fmt.Errorf("pack object %d: delta header: %w", i, err)
			}
			target, err := readVarint(br)
			if err != nil {
				return fmt.Errorf("pack object %d: delta header: %w", i, err)
			}
			if target > max {
				return tooLarge("object %d of the pack is a delta making %d bytes, more than %d", i, target, max)
			}
			if _, err := io.CopyBuffer(io.Discard, br, copyBuf); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
		} else {
			h := plumbing.NewHasher(o.typ, size)
			if _, err := io.CopyBuffer(h, cr, copyBuf); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
			o.hash = h.Sum()
		}
		if cr.n != size {
			return fmt.Errorf("pack object %d inflates to %d bytes, its header says %d", i, cr.n, size)
		}
		zr.Close()
		o.crc = r.objectCRC()
		ix.add(o)
	}
	r.fold()
	r.nosum = true
	var sum plumbing.Hash
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return err
	}
	if got := plumbing.Hash(r.sum.Sum(nil)); got != sum {
		return fmt.Errorf("%w: pack checksum %s, its content sums to %s", packfile.ErrMalformedPackFile, sum, got)
	}
	ix.checksum = sum
	return nil
}

// countReader counts what it reads and fails past max bytes.
type countReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, fmt.Errorf("inflates to more than its header's %d bytes", c.max)
	}
	return n, err
}

func readVarint(r io.ByteReader) (int64, error) {
	var v int64
	for shift := 0; ; shift += 7 {
		if shift > 56 {
			return 0, errors.New("varint overflows")
		}
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, nil
		}
	}
}
