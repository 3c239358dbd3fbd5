package store

import (
	"bytes"
	"fmt"
	"testing"
)

// FuzzDecodeRecord: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to exactly the same bytes (the format has one encoding).
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(stored{createRev: 1, modRev: 1, value: []byte("v")}))
	f.Add(encodeRecord(stored{createRev: 3, modRev: 90, value: nil}))
	f.Add([]byte{formatV1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeRecord(b)
		if err != nil {
			return
		}
		if s.createRev == 0 || s.modRev < s.createRev {
			t.Fatalf("decoded bad revisions %d/%d", s.createRev, s.modRev)
		}
		if got := encodeRecord(s); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, got)
		}
	})
}

// FuzzDecodeLog: decoding arbitrary change-log entries (with and without
// the checksummed header) never panics, never returns an invalid event,
// and what decodes survives an encode/decode round trip unchanged.
func FuzzDecodeLog(f *testing.F) {
	seed := []Event{
		{Type: EventPut, Kind: "tenant", Name: "a", Value: []byte(`{"x":1}`), CreateRevision: 3},
		{Type: EventDelete, Kind: "machine", Name: "a-vm", Value: nil, CreateRevision: 1},
	}
	f.Add(uint64(5), appendEventList(nil, seed))
	f.Add(uint64(5), encodeEvents(seed))
	f.Add(uint64(1), []byte{1, 1, 1, 't', 1, 'n', 1, 0})
	f.Fuzz(func(t *testing.T, rev uint64, b []byte) {
		for _, decode := range []func(uint64, []byte) ([]Event, error){decodeEvents, decodeEventList} {
			evs, err := decode(rev, b)
			if err != nil {
				continue
			}
			for _, ev := range evs {
				if ev.Revision != rev || (ev.Type != EventPut && ev.Type != EventDelete) ||
					validKindName(ev.Kind, ev.Name) != nil || ev.CreateRevision == 0 || ev.CreateRevision > rev {
					t.Fatalf("decoded invalid event %+v", ev)
				}
			}
			again, err := decodeEvents(rev, encodeEvents(evs))
			if err != nil {
				t.Fatalf("re-decoding: %v", err)
			}
			if fmt.Sprint(again) != fmt.Sprint(evs) {
				t.Fatalf("round trip differs:\n %v\n %v", evs, again)
			}
		}
	})
}

// TestArenaCopiesAreIndependent: appending to or writing one copy never
// changes another.
func TestArenaCopiesAreIndependent(t *testing.T) {
	var a arena
	big := bytes.Repeat([]byte("B"), arenaChunk/8+1)
	inputs := [][]byte{[]byte("one"), {}, []byte("two"), big, []byte("three")}
	var copies [][]byte
	for _, in := range inputs {
		copies = append(copies, a.copy(in))
	}
	for i := range copies {
		copies[i] = append(copies[i], 'X')
		if len(copies[i]) > 1 {
			copies[i][0] = 'Z'
		}
	}
	for i, in := range inputs {
		want := append(append([]byte{}, in...), 'X')
		if len(want) > 1 {
			want[0] = 'Z'
		}
		if !bytes.Equal(copies[i], want) {
			t.Errorf("copy %d = %q, want %q", i, copies[i], want)
		}
	}
}
