package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Check verifies the database at path without changing it: bbolt's page
// consistency check (tx.Check), then the store's own layout (schema version,
// meta keys, record and change-log checksums and revisions). It returns nil
// for a sound file, or a *CheckError listing every problem found. It needs a
// shared lock, so it waits up to DefaultTimeout for a process holding the
// database (such as a running daemon) and then fails with ErrLocked.
func Check(path string) error { return check(path, DefaultTimeout) }

func check(path string, timeout time.Duration) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store: check %s: %w", path, err)
	}
	db, err := openBolt(path, timeout, true, false)
	if err != nil {
		return err
	}
	defer db.Close()
	problems := metaProblems(path)
	report := func(err error) { problems = append(problems, err) }
	func() {
		defer func() {
			if p := recover(); p != nil {
				report(fmt.Errorf("bbolt panicked: %v", p))
			}
		}()
		err = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				report(err)
			}
			checkLayout(tx, report)
			return nil
		})
		if err != nil {
			report(err)
		}
	}()
	if len(problems) > 0 {
		return &CheckError{Path: path, Problems: problems}
	}
	return nil
}

// checkLayout reports every deviation from the current schema.
func checkLayout(tx *bolt.Tx, report func(error)) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		report(fmt.Errorf("bucket %q missing", bucketMeta))
		return
	}
	version, err := readU64(meta, keySchema)
	if err != nil {
		report(err)
		return
	}
	if version != schemaVersion {
		report(fmt.Errorf("schema version %d, this binary checks %d (open the store to migrate)", version, schemaVersion))
		return
	}
	rev, err := readU64(meta, keyRevision)
	if err != nil {
		report(err)
	}
	compacted, err := readU64(meta, keyCompacted)
	if err != nil {
		report(err)
	}
	if compacted > rev {
		report(fmt.Errorf("compacted revision %d is beyond revision %d", compacted, rev))
	}
	if kinds := tx.Bucket(bucketKinds); kinds == nil {
		report(fmt.Errorf("bucket %q missing", bucketKinds))
	} else {
		checkKinds(kinds, rev, report)
	}
	if lb := tx.Bucket(bucketLog); lb == nil {
		report(fmt.Errorf("bucket %q missing", bucketLog))
	} else {
		checkLog(lb, compacted, rev, report)
	}
}

func checkKinds(kinds *bolt.Bucket, rev uint64, report func(error)) {
	err := kinds.ForEach(func(kind, v []byte) error {
		if v != nil {
			report(fmt.Errorf("kinds: key %q is a value, not a bucket", kind))
			return nil
		}
		if err := validKind(string(kind)); err != nil {
			report(fmt.Errorf("kinds: %w", err))
		}
		return kinds.Bucket(kind).ForEach(func(name, v []byte) error {
			if v == nil {
				report(fmt.Errorf("record %s/%s: a bucket, not a value", kind, name))
				return nil
			}
			s, err := decodeRecord(v)
			switch {
			case err != nil:
				report(fmt.Errorf("%s/%s: %w", kind, name, err))
			case s.modRev > rev:
				report(fmt.Errorf("record %s/%s: mod revision %d beyond store revision %d", kind, name, s.modRev, rev))
			}
			return nil
		})
	})
	if err != nil {
		report(err)
	}
}

func checkLog(lb *bolt.Bucket, compacted, rev uint64, report func(error)) {
	next := compacted + 1
	c := lb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, err := keyRev(k)
		if err != nil {
			report(fmt.Errorf("change log: %w", err))
			continue
		}
		switch {
		case r <= compacted:
			report(fmt.Errorf("change log: entry %d should have been compacted (compacted up to %d)", r, compacted))
		case r > rev:
			report(fmt.Errorf("change log: entry %d beyond store revision %d", r, rev))
		case r != next:
			report(fmt.Errorf("change log: revisions %d to %d missing", next, r-1))
		}
		if r >= next {
			next = r + 1
		}
		if _, err := decodeEvents(r, v); err != nil {
			report(fmt.Errorf("change log: %w", err))
		}
	}
	if next != rev+1 && rev > compacted {
		report(fmt.Errorf("change log: revisions %d to %d missing", next, rev))
	}
}

// bbolt's meta page: a 16-byte page header, then magic, version, page size,
// flags (4 bytes each), root bucket (16), freelist, high water mark, txid
// (8 each) and an FNV-64a checksum of the 56 bytes before it, in native
// byte order.
const (
	boltMagic    = 0xED0CDAED
	boltVersion  = 2
	metaOffset   = 16
	metaSumBytes = 56
)

// metaProblems validates bbolt's two meta pages. bbolt silently uses the
// other one when one is invalid, which rolls back to the previous
// transaction: expected after a crash in the middle of writing a meta page
// (that commit was never acknowledged), but a sign of disk damage otherwise.
func metaProblems(path string) []error {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	head := make([]byte, 2*65536)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if n == 0 {
		return nil // an empty file is initialised by Open
	}
	parse := func(off int) (pageSize uint32, txid uint64, err error) {
		if off+metaOffset+metaSumBytes+8 > len(head) {
			return 0, 0, errShort
		}
		m := head[off+metaOffset:]
		ne := binary.NativeEndian
		switch {
		case ne.Uint32(m[0:]) != boltMagic:
			return 0, 0, errors.New("bad magic")
		case ne.Uint32(m[4:]) != boltVersion:
			return 0, 0, fmt.Errorf("bbolt version %d", ne.Uint32(m[4:]))
		}
		h := fnv.New64a()
		h.Write(m[:metaSumBytes])
		if h.Sum64() != ne.Uint64(m[metaSumBytes:]) {
			return 0, 0, errChecksum
		}
		return ne.Uint32(m[8:]), ne.Uint64(m[48:]), nil
	}
	pageSize, txid0, err0 := parse(0)
	if err0 != nil {
		pageSize = uint32(os.Getpagesize())
	}
	_, txid1, err1 := parse(int(pageSize))
	var problems []error
	for i, err := range []error{err0, err1} {
		if err != nil {
			other := []uint64{txid1, txid0}[i]
			problems = append(problems, fmt.Errorf(
				"bbolt meta page %d is invalid (%v): bbolt uses meta page %d (transaction %d), which is the previous "+
					"transaction if a crash interrupted a commit (not acknowledged, nothing lost), else a sign of disk damage",
				i, err, 1-i, other))
		}
	}
	if err0 != nil && err1 != nil {
		return problems[:1]
	}
	return problems
}
