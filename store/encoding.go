package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk encodings (schema version 2). bbolt checksums only its meta pages,
// so records and log entries carry their own CRC-32C: a damaged value is
// reported as corrupt instead of being returned.
//
//	record:    [format=1][crc32c of the rest, 4][createRev, 8][modRev, 8][value]
//	log entry: [format=1][crc32c of the rest, 4][uvarint count] count x event
//	event:     [type, 1][uvarint len][kind][uvarint len][name][uvarint createRev][uvarint len][value]
//
// Log entries are keyed by their revision, 8 bytes big-endian; the events of
// one entry are those of one Commit, in op order.

const (
	formatV1     = 1
	recordHeader = 1 + 4 + 8 + 8
	logHeader    = 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort    = errors.New("truncated")
	errFormat   = errors.New("unknown format byte")
	errChecksum = errors.New("checksum mismatch")
)

func revKey(rev uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], rev)
	return k[:]
}

func keyRev(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("log key is %d bytes, want 8", len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}

// stored is a record as kept in its kind's bucket.
type stored struct {
	createRev, modRev uint64
	value             []byte
}

func encodeRecord(s stored) []byte {
	b := make([]byte, recordHeader+len(s.value))
	b[0] = formatV1
	binary.BigEndian.PutUint64(b[5:], s.createRev)
	binary.BigEndian.PutUint64(b[13:], s.modRev)
	copy(b[recordHeader:], s.value)
	binary.BigEndian.PutUint32(b[1:], crc32.Checksum(b[5:], castagnoli))
	return b
}

// decodeRecord decodes b, copying the value out of it (b may be bbolt's mmap).
func decodeRecord(b []byte) (stored, error) {
	s, err := parseRecord(b)
	s.value = append([]byte{}, s.value...)
	return s, err
}

// parseRecord decodes b; the value aliases b.
func parseRecord(b []byte) (stored, error) {
	if len(b) < recordHeader {
		return stored{}, fmt.Errorf("record: %w (%d bytes)", errShort, len(b))
	}
	if b[0] != formatV1 {
		return stored{}, fmt.Errorf("record: %w %d", errFormat, b[0])
	}
	if got, want := crc32.Checksum(b[5:], castagnoli), binary.BigEndian.Uint32(b[1:]); got != want {
		return stored{}, fmt.Errorf("record: %w (stored %08x, computed %08x)", errChecksum, want, got)
	}
	s := stored{
		createRev: binary.BigEndian.Uint64(b[5:]),
		modRev:    binary.BigEndian.Uint64(b[13:]),
		value:     b[recordHeader:],
	}
	if s.createRev == 0 || s.modRev < s.createRev {
		return stored{}, fmt.Errorf("record: bad revisions create=%d mod=%d", s.createRev, s.modRev)
	}
	return s, nil
}

// arena hands out copies of small byte slices from shared chunks, so that
// List makes a few allocations instead of one per value. Each copy is
// capped (full slice expression): appending to it never touches another.
type arena struct{ buf []byte }

const arenaChunk = 64 << 10

func (a *arena) copy(b []byte) []byte {
	n := len(b)
	if n > arenaChunk/8 {
		return append([]byte{}, b...)
	}
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, arenaChunk)
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return a.buf[start : start+n : start+n]
}

// encodeEvents encodes the events of one revision as a log entry.
func encodeEvents(evs []Event) []byte {
	n := logHeader + binary.MaxVarintLen64
	for _, ev := range evs {
		n += 1 + 4*binary.MaxVarintLen64 + len(ev.Kind) + len(ev.Name) + len(ev.Value)
	}
	b := make([]byte, logHeader, n)
	b[0] = formatV1
	b = appendEventList(b, evs)
	binary.BigEndian.PutUint32(b[1:], crc32.Checksum(b[logHeader:], castagnoli))
	return b
}

func appendEventList(b []byte, evs []Event) []byte {
	b = binary.AppendUvarint(b, uint64(len(evs)))
	for _, ev := range evs {
		b = append(b, byte(ev.Type))
		b = binary.AppendUvarint(b, uint64(len(ev.Kind)))
		b = append(b, ev.Kind...)
		b = binary.AppendUvarint(b, uint64(len(ev.Name)))
		b = append(b, ev.Name...)
		b = binary.AppendUvarint(b, ev.CreateRevision)
		b = binary.AppendUvarint(b, uint64(len(ev.Value)))
		b = append(b, ev.Value...)
	}
	return b
}

// decodeEvents decodes a log entry of revision rev, copying everything out
// of b.
func decodeEvents(rev uint64, b []byte) ([]Event, error) {
	if len(b) < logHeader {
		return nil, fmt.Errorf("log entry %d: %w (%d bytes)", rev, errShort, len(b))
	}
	if b[0] != formatV1 {
		return nil, fmt.Errorf("log entry %d: %w %d", rev, errFormat, b[0])
	}
	if got, want := crc32.Checksum(b[logHeader:], castagnoli), binary.BigEndian.Uint32(b[1:]); got != want {
		return nil, fmt.Errorf("log entry %d: %w (stored %08x, computed %08x)", rev, errChecksum, want, got)
	}
	evs, err := decodeEventList(rev, b[logHeader:])
	if err != nil {
		return nil, fmt.Errorf("log entry %d: %w", rev, err)
	}
	return evs, nil
}

func decodeEventList(rev uint64, b []byte) ([]Event, error) {
	d := decoder{b: b}
	count := d.uvarint()
	// Each event takes at least 5 bytes; refuse counts the data cannot hold.
	if d.err == nil && count > uint64(len(d.b))/5 {
		return nil, fmt.Errorf("event count %d exceeds entry size %d", count, len(b))
	}
	if d.err == nil && count == 0 {
		return nil, errors.New("entry without events")
	}
	evs := make([]Event, 0, count)
	for i := uint64(0); i < count && d.err == nil; i++ {
		ev := Event{Revision: rev}
		ev.Type = EventType(d.byte())
		ev.Kind = string(d.bytes())
		ev.Name = string(d.bytes())
		ev.CreateRevision = d.uvarint()
		ev.Value = append([]byte{}, d.bytes()...)
		if d.err != nil {
			break
		}
		if ev.Type != EventPut && ev.Type != EventDelete {
			return nil, fmt.Errorf("event %d: unknown type %d", i, int(ev.Type))
		}
		if err := validKindName(ev.Kind, ev.Name); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if ev.CreateRevision == 0 || ev.CreateRevision > rev {
			return nil, fmt.Errorf("event %d: create revision %d not in 1..%d", i, ev.CreateRevision, rev)
		}
		evs = append(evs, ev)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return evs, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad varint: %w", errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("length %d exceeds remaining %d bytes: %w", n, len(d.b), errShort)
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}
