package daemon

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// The reply cache (tenantAPI.listCache) is kept across a clean restart: at a clean shutdown it
// is written to replyCacheFile in the state directory, and the next start takes from it the
// entries that are still current instead of decoding and encoding every record again, so that
// the first List after a restart costs what a warm one does. The file is a hint, never state:
//
//   - it is read once, at the next start, and removed then, whatever it holds;
//   - it is used only by the binary that wrote it (the same Go build ID: the encoding is the
//     code's), only when the store is at the revision it was at when the file was written (the
//     store is the one the file describes, unchanged since), and each entry only while its
//     record is still at the revision it was encoded from;
//   - it is checked whole (CRC-32C) and bounded by the size of the store it describes before it
//     is held in memory; anything else (missing, damaged, foreign, stale) is ignored and the
//     cache is filled from the records as after a crash.
const replyCacheFile = "tenant-replies.cache"

var replyCacheMagic = []byte("bitbuilder reply cache 1\n")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// buildID is this executable's Go build ID (its .note.go.buildid section), or nil when it
// cannot be read, and then no reply cache is written or read.
var buildID = sync.OnceValue(func() []byte {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		return nil
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil || s.Size > 4096 {
		return nil
	}
	id, err := s.Data()
	if err != nil || len(id) == 0 {
		return nil
	}
	return id
})

// saveReplies writes the reply cache to dir for the store at revision rev (the store closed:
// nothing changes after). It replaces the file in one rename; a crash meanwhile leaves the
// old one or none, and a torn one fails its check.
func (a *tenantAPI) saveReplies(dir string, rev uint64) error {
	id := buildID()
	if id == nil {
		return errors.New("no build ID to tag the reply cache with")
	}
	a.mu.Lock()
	var buf bytes.Buffer
	buf.Write(replyCacheMagic)
	buf.Write(binary.LittleEndian.AppendUint16(nil, uint16(len(id))))
	buf.Write(id)
	buf.Write(binary.LittleEndian.AppendUint64(nil, rev))
	buf.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(a.listCache))))
	for name, ct := range a.listCache {
		b := binary.LittleEndian.AppendUint16(nil, uint16(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint64(b, ct.revision)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ct.raw)))
		buf.Write(b)
		buf.Write(ct.raw)
	}
	a.mu.Unlock()
	buf.Write(binary.LittleEndian.AppendUint32(nil, crc32.Checksum(buf.Bytes(), castagnoli)))

	tmp, err := os.CreateTemp(dir, "."+replyCacheFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, replyCacheFile))
}

// loadReplies reads the reply cache written by the last clean shutdown from dir, if there is
// one for this binary and for the store as it was opened (openRev), and returns its entries. It
// removes the file. limit bounds the file's size (the caller's measure of what the store can
// hold). The entries were current at openRev; one whose record has changed since is never
// served: a reply is taken from the cache only for its record's revision (tenantAPI.encoded),
// and an entry read from the file is not known to be current (seenAt 0) for Get's fast path.
func loadReplies(dir string, openRev uint64, limit int64) (map[string]cachedTenant, error) {
	path := filepath.Join(dir, replyCacheFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	os.Remove(path) // read once, whatever it holds
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than the store it describes allows (%d bytes)", path, limit)
	}
	if len(data) < len(replyCacheMagic)+4 || !bytes.HasPrefix(data, replyCacheMagic) {
		return nil, fmt.Errorf("%s: not a reply cache", path)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%s: checksum mismatch", path)
	}
	r := cacheReader{b: body[len(replyCacheMagic):]}
	id := r.bytes(int(r.u16()))
	rev := r.u64()
	n := r.u32()
	switch {
	case r.err != nil:
		return nil, fmt.Errorf("%s: %w", path, r.err)
	case buildID() == nil || !bytes.Equal(id, buildID()):
		return nil, fmt.Errorf("%s: written by another build of bitbuilderd", path)
	case rev != openRev:
		return nil, fmt.Errorf("%s: written at store revision %d, the store opened at %d", path, rev, openRev)
	}
	out := make(map[string]cachedTenant, min(int(n), len(r.b)/14))
	for range n {
		name := r.bytes(int(r.u16()))
		erev := r.u64()
		raw := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil, fmt.Errorf("%s: %w", path, r.err)
		}
		out[string(name)] = cachedTenant{revision: erev, raw: raw}
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%s: %d bytes after the last entry", path, len(r.b))
	}
	return out, nil
}

// adopt puts the kept replies into the cache, where it holds nothing newer for the record.
func (a *tenantAPI) adopt(kept map[string]cachedTenant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.listCache == nil {
		a.listCache = make(map[string]cachedTenant, len(kept))
	}
	for name, ct := range kept {
		if cur, ok := a.listCache[name]; !ok || cur.revision < ct.revision {
			a.listCache[name] = ct
		}
	}
}

// cacheReader reads the reply cache's fields, remembering the first overrun.
type cacheReader struct {
	b   []byte
	err error
}

func (r *cacheReader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *cacheReader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *cacheReader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *cacheReader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}
