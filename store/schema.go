package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the layout this binary writes. The layout:
//
//	meta:          schema, revision, compacted (each 8 bytes big-endian)
//	log:           revision (8 bytes big-endian) -> log entry (encoding.go)
//	kinds/<kind>:  name -> record (encoding.go)
//
// History:
//
//	1: records [createRev 8][modRev 8][value]; log entries a bare event list.
//	2: records and log entries carry a format byte and a CRC-32C.
const schemaVersion = 2

// migration upgrades the layout from version from to from+1. It runs inside
// the single transaction that Open uses for all pending migrations.
type migration struct {
	from  uint64
	what  string
	apply func(tx *bolt.Tx) error
}

// migrations returns the table of migrations, one per version step, in order.
func migrations() []migration {
	return []migration{
		{from: 1, what: "add format byte and CRC-32C to records and log entries", apply: migrateV1toV2},
	}
}

func readU64(b *bolt.Bucket, key []byte) (uint64, error) {
	if b == nil {
		return 0, errors.New("meta bucket missing")
	}
	v := b.Get(key)
	if len(v) != 8 {
		return 0, fmt.Errorf("meta key %q is %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func putU64(b *bolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, revKey(v))
}

// prepare initialises an empty database, refuses a foreign or too new one,
// runs pending migrations in one transaction, and returns the revision.
func prepare(db *bolt.DB, path string, log *slog.Logger) (rev uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &CorruptError{Path: path, Err: fmt.Errorf("bbolt panicked: %v", p)}
		}
	}()
	var (
		version uint64
		empty   bool
	)
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if k, _ := tx.Cursor().First(); k != nil {
				return &CorruptError{Path: path, Err: fmt.Errorf("a bbolt file but not a BitBuilder store (bucket %q, no %q bucket)", k, bucketMeta)}
			}
			empty = true
			return nil
		}
		var err error
		if version, err = readU64(meta, keySchema); err != nil {
			return &CorruptError{Path: path, Err: err}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	switch {
	case empty:
		if err := db.Update(initSchema); err != nil {
			return 0, fmt.Errorf("store: initialise %s: %w", path, err)
		}
		log.Info("store initialised", "path", path, "schema", schemaVersion)
	case version > schemaVersion:
		return 0, fmt.Errorf("store: open %s: schema version %d, this binary supports up to %d: %w",
			path, version, schemaVersion, ErrSchemaTooNew)
	case version == 0:
		return 0, &CorruptError{Path: path, Err: errors.New("schema version 0")}
	case version < schemaVersion:
		if err := migrate(db, version, log); err != nil {
			return 0, fmt.Errorf("store: migrate %s from schema %d to %d: %w", path, version, schemaVersion, err)
		}
	}
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var err error
		if rev, err = readU64(meta, keyRevision); err != nil {
			return err
		}
		compacted, err := readU64(meta, keyCompacted)
		if err != nil {
			return err
		}
		if compacted > rev {
			return fmt.Errorf("compacted revision %d beyond revision %d", compacted, rev)
		}
		if tx.Bucket(bucketLog) == nil || tx.Bucket(bucketKinds) == nil {
			return errors.New("log or kinds bucket missing")
		}
		return nil
	})
	if err != nil {
		return 0, &CorruptError{Path: path, Err: err}
	}
	return rev, nil
}

func initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketLog); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketKinds); err != nil {
		return err
	}
	for _, k := range [][]byte{keyRevision, keyCompacted} {
		if err := putU64(meta, k, 0); err != nil {
			return err
		}
	}
	return putU64(meta, keySchema, schemaVersion)
}

// migrate runs every migration from version up to schemaVersion in one
// transaction: either the file ends at schemaVersion or it is unchanged.
func migrate(db *bolt.DB, version uint64, log *slog.Logger) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations() {
			if m.from != version {
				continue
			}
			if err := m.apply(tx); err != nil {
				return fmt.Errorf("schema %d to %d (%s): %w", m.from, m.from+1, m.what, err)
			}
			log.Info("store schema migrated", "from", m.from, "to", m.from+1, "what", m.what)
			version++
		}
		if version != schemaVersion {
			return fmt.Errorf("no migration from schema %d", version)
		}
		return putU64(tx.Bucket(bucketMeta), keySchema, version)
	})
}

func migrateV1toV2(tx *bolt.Tx) error {
	type kv struct{ k, v []byte }
	kinds := tx.Bucket(bucketKinds)
	if kinds == nil {
		return errors.New("kinds bucket missing")
	}
	var names [][]byte
	if err := kinds.ForEachBucket(func(k []byte) error {
		names = append(names, append([]byte{}, k...))
		return nil
	}); err != nil {
		return err
	}
	for _, kind := range names {
		kb := kinds.Bucket(kind)
		var out []kv
		err := kb.ForEach(func(k, v []byte) error {
			if len(v) < 16 {
				return fmt.Errorf("record %s/%s: %d bytes, want at least 16", kind, k, len(v))
			}
			s := stored{
				createRev: binary.BigEndian.Uint64(v),
				modRev:    binary.BigEndian.Uint64(v[8:]),
				value:     v[16:],
			}
			out = append(out, kv{append([]byte{}, k...), encodeRecord(s)})
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range out {
			if err := kb.Put(e.k, e.v); err != nil {
				return err
			}
		}
	}
	lb := tx.Bucket(bucketLog)
	if lb == nil {
		return errors.New("log bucket missing")
	}
	var out []kv
	err := lb.ForEach(func(k, v []byte) error {
		rev, err := keyRev(k)
		if err != nil {
			return err
		}
		evs, err := decodeEventList(rev, v)
		if err != nil {
			return fmt.Errorf("log entry %d: %w", rev, err)
		}
		out = append(out, kv{append([]byte{}, k...), encodeEvents(evs)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range out {
		if err := lb.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}
