package template

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// guardedStorage is a repository's storage whose fetched packs pass through a packGuard before go-git's
// PackWriter (which parses and indexes them, holding objects in memory) sees a byte of them.
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
	dir := g.Storage.Filesystem().Join("objects", "pack")
	before := tempPacks(g.Storage.Filesystem(), dir)
	w, err := g.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	pg := newPackGuard(w, g.maxObject)
	pg.refused = g.refused
	// go-git's writer keeps its temporary pack file when the pack it was given does not parse (as after a
	// refusal, which truncates the stream): remove the one it made. The registry fetches into a repository
	// under the template's lock, so no other writer's file is new here.
	pg.failed = func() {
		fs := g.Storage.Filesystem()
		for name := range tempPacks(fs, dir) {
			if !before[name] {
				fs.Remove(fs.Join(dir, name))
			}
		}
	}
	return pg, nil
}

// tempPacks lists the names of go-git's temporary pack files in dir.
func tempPacks(fs billy.Filesystem, dir string) map[string]bool {
	names := map[string]bool{}
	infos, _ := fs.ReadDir(dir)
	for _, fi := range infos {
		if strings.HasPrefix(fi.Name(), "tmp_pack_") {
			names[fi.Name()] = true
		}
	}
	return names
}

// packGuard scans a pack stream as it is written and forwards to w only bytes it has checked: the pack
// header, and for each object its header (its size and, for a delta, the size of the object it makes, at most
// max) and its compressed data, inflated here into a counter (never into memory) and refused when it inflates
// to more than its header says. So no object over max, whatever it compresses to, reaches go-git's parser.
// The scanner needs a fixed few hundred KiB (the inflater's window and buffers).
type packGuard struct {
	w         io.WriteCloser
	max       int64
	in        chan []byte
	ack       chan int64 // the scanner's consumed offset each time it needs more bytes
	done      chan error // the scanner's result; then it consumed everything
	scanErr   error
	finished  bool
	pending   []byte // written, not yet forwarded
	forwarded int64
	refused   func(error)
	failed    func() // called when Close fails, to remove what the writer left
}

func newPackGuard(w io.WriteCloser, max int64) *packGuard {
	g := &packGuard{w: w, max: max, in: make(chan []byte), ack: make(chan int64), done: make(chan error, 1)}
	go func() {
		fr := &feedReader{in: g.in, ack: g.ack}
		g.done <- scanPack(fr, max)
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
	n, err := g.w.Write(p)
	g.forwarded += int64(n)
	return n, err
}

// Close ends the scan; what is still pending (a truncated pack) is forwarded only when it was checked, and
// go-git's writer is closed (it reports a truncated pack itself).
func (g *packGuard) Close() error {
	close(g.in)
	if !g.finished && g.scanErr == nil {
		if err := <-g.done; err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			g.scanErr = err
		}
	}
	err := g.w.Close()
	if g.scanErr != nil {
		err = g.scanErr
	}
	if err != nil && g.failed != nil {
		g.failed()
	}
	return err
}

// feedReader is the scanner's side: an io.ByteReader (so that the inflater reads exactly its stream and
// nothing beyond) over the chunks Write hands over, acknowledging how far it read whenever it needs more.
type feedReader struct {
	in       chan []byte
	ack      chan int64
	buf      []byte
	consumed int64
	started  bool
}

func (f *feedReader) fill() error {
	for len(f.buf) == 0 {
		if f.started {
			f.ack <- f.consumed
		}
		f.started = true
		b, ok := <-f.in
		if !ok {
			return io.ErrUnexpectedEOF
		}
		f.buf = b
	}
	return nil
}

func (f *feedReader) Read(p []byte) (int, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	f.consumed += int64(n)
	return n, nil
}

func (f *feedReader) ReadByte() (byte, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	b := f.buf[0]
	f.buf = f.buf[1:]
	f.consumed++
	return b, nil
}

// errPack wraps what scanPack refuses.
func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: %s (Limits.MaxObjectSize)", ErrTooLarge, fmt.Sprintf(format, args...))
}

// scanPack reads a version 2 or 3 pack (git's pack-format.txt) and checks each object's sizes against max.
func scanPack(r *feedReader, max int64) error {
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
	for i := uint32(0); i < count; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		typ := (c >> 4) & 7
		size := int64(c & 15)
		for shift := 4; c&0x80 != 0; shift += 7 {
			if shift > 56 {
				return errors.New("pack object header: size overflows")
			}
			if c, err = r.ReadByte(); err != nil {
				return err
			}
			size |= int64(c&0x7f) << shift
		}
		if size > max {
			return tooLarge("object %d of the pack is %d bytes, more than %d", i, size, max)
		}
		switch typ {
		case 1, 2, 3, 4: // commit, tree, blob, tag
		case 6: // ofs-delta: a varint offset
			for n := 0; ; n++ {
				if n > 9 {
					return errors.New("pack: delta offset overflows")
				}
				if c, err = r.ReadByte(); err != nil {
					return err
				}
				if c&0x80 == 0 {
					break
				}
			}
		case 7: // ref-delta: the base's hash
			if _, err := io.ReadFull(r, make([]byte, 20)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("pack object %d: bad type %d", i, typ)
		}
		zr, err := zlib.NewReader(r)
		if err != nil {
			return fmt.Errorf("pack object %d: %w", i, err)
		}
		cr := &countReader{r: zr, max: size}
		if typ >= 6 {
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
			if _, err := io.Copy(io.Discard, br); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
		} else if _, err := io.Copy(io.Discard, cr); err != nil {
			return fmt.Errorf("pack object %d: %w", i, err)
		}
		if cr.n != size {
			return fmt.Errorf("pack object %d inflates to %d bytes, its header says %d", i, cr.n, size)
		}
		zr.Close()
	}
	_, err := io.ReadFull(r, make([]byte, 20)) // the pack's checksum, which go-git checks
	return err
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
