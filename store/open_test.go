package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// rawUpdate changes a database file behind the store's back.
func rawUpdate(t testing.TB, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func rawSchema(t testing.TB, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = readU64(tx.Bucket(bucketMeta), keySchema)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// writeStore creates a closed store file with a few records.
func writeStore(t testing.TB, path string) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, put("t", "a", "1"), put("t", "b", "2"))
	mustCommit(t, s, put("u", "c", "3"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns the path to open
		is      error                                 // sentinel the error wraps, or nil
		msg     string                                // text the message contains
	}{
		{name: "missing directory", prepare: func(t *testing.T, dir string) string {
			return filepath.Join(dir, "nope", "state.db")
		}, is: os.ErrNotExist, msg: "does not exist"},
		{name: "parent is a file", prepare: func(t *testing.T, dir string) string {
			f := filepath.Join(dir, "file")
			os.WriteFile(f, nil, 0o600)
			return filepath.Join(f, "state.db")
		}, msg: "not a directory"},
		{name: "garbage file", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			garbage := make([]byte, 32<<10)
			for i := range garbage {
				garbage[i] = byte(rand.IntN(256))
			}
			os.WriteFile(p, garbage, 0o600)
			return p
		}, is: ErrCorrupt, msg: "is corrupt"},
		{name: "text file", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			os.WriteFile(p, bytes.Repeat([]byte("not a database\n"), 1000), 0o600)
			return p
		}, is: ErrCorrupt, msg: "is corrupt"},
		{name: "both meta pages damaged", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			writeStore(t, p)
			data, _ := os.ReadFile(p)
			pageSize := os.Getpagesize()
			for _, off := range []int{64, pageSize + 64} { // inside each meta page
				data[off] ^= 0xff
			}
			os.WriteFile(p, data, 0o600)
			return p
		}, is: ErrCorrupt, msg: "is corrupt"},
		{name: "foreign bbolt file", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			rawUpdate(t, p, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
			return p
		}, is: ErrCorrupt, msg: "not a BitBuilder store"},
		{name: "schema too new", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			writeStore(t, p)
			rawUpdate(t, p, func(tx *bolt.Tx) error { return putU64(tx.Bucket(bucketMeta), keySchema, 99) })
			return p
		}, is: ErrSchemaTooNew, msg: "schema version 99"},
		{name: "locked by another handle", prepare: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.db")
			openAt(t, p, Options{})
			return p
		}, is: ErrLocked, msg: "locked by another process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.prepare(t, dir)
			before, _ := os.ReadFile(path)
			s, err := Open(path, Options{Timeout: 100 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not name %s and say %q", err, path, tt.msg)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Errorf("failed Open changed the file")
			}
		})
	}
}

func TestOpenNotWritable(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// Root ignores permission bits; a read-only mount stops it too.
		testpolicy.RequireNoError(t, syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=1m"), "cannot mount a read-only tmpfs")
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	} else {
		os.Chmod(dir, 0o500)
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
	}
	path := filepath.Join(dir, "state.db")
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open in a read-only directory: %v", err)
	}
}

func TestOpenEmptyFileInitialises(t *testing.T) {
	path := dbPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path, Options{})
	if s.Revision() != 0 {
		t.Fatalf("revision %d", s.Revision())
	}
	mustCommit(t, s, put("t", "a", "1"))
	s.Close()
	if v := rawSchema(t, path); v != schemaVersion {
		t.Fatalf("schema %d, want %d", v, schemaVersion)
	}
	if err := Check(path); err != nil {
		t.Fatal(err)
	}
}

// writeV1 writes a schema-1 file: records without CRC, log entries as bare
// event lists.
func writeV1(t testing.TB, path string, recs map[string]stored, log map[uint64][]Event, rev, compacted uint64) {
	t.Helper()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bucketMeta)
		putU64(meta, keySchema, 1)
		putU64(meta, keyRevision, rev)
		putU64(meta, keyCompacted, compacted)
		kinds, _ := tx.CreateBucket(bucketKinds)
		for key, s := range recs {
			kind, name, _ := strings.Cut(key, "/")
			kb, err := kinds.CreateBucketIfNotExists([]byte(kind))
			if err != nil {
				return err
			}
			v := binary.BigEndian.AppendUint64(nil, s.createRev)
			v = binary.BigEndian.AppendUint64(v, s.modRev)
			if err := kb.Put([]byte(name), append(v, s.value...)); err != nil {
				return err
			}
		}
		lb, _ := tx.CreateBucket(bucketLog)
		for r, evs := range log {
			if err := lb.Put(revKey(r), appendEventList(nil, evs)); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestMigrateV1(t *testing.T) {
	path := dbPath(t)
	writeV1(t, path,
		map[string]stored{"t/a": {1, 3, []byte("a3")}, "u/b": {2, 2, []byte("b2")}},
		map[uint64][]Event{
			2: {{Type: EventPut, Kind: "u", Name: "b", Value: []byte("b2"), CreateRevision: 2}},
			3: {{Type: EventPut, Kind: "t", Name: "a", Value: []byte("a3"), CreateRevision: 1},
				{Type: EventDelete, Kind: "t", Name: "x", Value: []byte("gone"), CreateRevision: 2}},
		}, 3, 1)
	s := openAt(t, path, Options{})
	if s.Revision() != 3 {
		t.Errorf("revision %d, want 3", s.Revision())
	}
	if got, want := fmt.Sprint(snapshot(t, s, "t", "u")), "[t/a=a3@1/3 u/b=b2@2/2]"; got != want {
		t.Errorf("records %s, want %s", got, want)
	}
	ch, err := s.Watch(t.Context(), "", 1)
	if err != nil {
		t.Fatal(err)
	}
	got := evString(recv(t, ch, 3))
	if want := "[2:put u/b=b2(c2) 3:put t/a=a3(c1) 3:delete t/x=gone(c2)]"; fmt.Sprint(got) != want {
		t.Errorf("replayed log %v, want %s", got, want)
	}
	if _, err := s.Watch(t.Context(), "", 0); !errors.Is(err, ErrCompacted) {
		t.Errorf("Watch(0) with compacted 1: %v", err)
	}
	if rev := mustCommit(t, s, put("t", "a", "a4")); rev != 4 {
		t.Errorf("first commit after migration: revision %d", rev)
	}
	s.Close()
	if v := rawSchema(t, path); v != schemaVersion {
		t.Errorf("schema after migration %d, want %d", v, schemaVersion)
	}
	if err := Check(path); err != nil {
		t.Errorf("Check after migration: %v", err)
	}
}

func TestMigrateFailureLeavesFileUnchanged(t *testing.T) {
	path := dbPath(t)
	writeV1(t, path, map[string]stored{"t/a": {1, 1, []byte("ok")}}, nil, 1, 0)
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKinds).Bucket([]byte("t")).Put([]byte("short"), []byte("tiny"))
	})
	before, _ := os.ReadFile(path)
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "migrate") || !strings.Contains(err.Error(), "t/short") {
		t.Fatalf("Open of a bad v1 file: %v", err)
	}
	if v := rawSchema(t, path); v != 1 {
		t.Errorf("schema after failed migration %d, want 1", v)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("failed migration changed the file")
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		want   []string // substrings of the problems, in order
	}{
		{name: "sound", damage: func(*bolt.Tx) error { return nil }},
		{name: "bad record checksum", damage: func(tx *bolt.Tx) error {
			kb := tx.Bucket(bucketKinds).Bucket([]byte("t"))
			v := append([]byte{}, kb.Get([]byte("a"))...)
			v[len(v)-1] ^= 1
			return kb.Put([]byte("a"), v)
		}, want: []string{"t/a: record: checksum mismatch"}},
		{name: "every problem reported", damage: func(tx *bolt.Tx) error {
			kb := tx.Bucket(bucketKinds).Bucket([]byte("t"))
			kb.Put([]byte("a"), []byte("x"))
			kb.Put([]byte("b"), encodeRecord(stored{createRev: 1, modRev: 9, value: nil}))
			return tx.Bucket(bucketLog).Delete(revKey(1))
		}, want: []string{"t/a: record: truncated", "t/b: mod revision 9 beyond store revision 2", "revisions 1 to 1 missing"}},
		{name: "bad log entry", damage: func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLog).Put(revKey(2), []byte{formatV1, 0, 0, 0, 0, 1})
		}, want: []string{"log entry 2: checksum mismatch"}},
		{name: "schema missing", damage: func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Delete(keySchema)
		}, want: []string{`meta key "schema"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := dbPath(t)
			writeStore(t, path)
			rawUpdate(t, path, tt.damage)
			err := Check(path)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var ce *CheckError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Check: %v, want *CheckError", err)
			}
			if len(ce.Problems) != len(tt.want) {
				t.Fatalf("Check found %d problems, want %d:\n%v", len(ce.Problems), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(ce.Problems[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, ce.Problems[i], w)
				}
			}
		})
	}
	if err := Check(filepath.Join(t.TempDir(), "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check(missing): %v", err)
	}
}

func TestCorruptRecordIsReported(t *testing.T) {
	path := dbPath(t)
	writeStore(t, path)
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketKinds).Bucket([]byte("t"))
		v := append([]byte{}, kb.Get([]byte("b"))...)
		v[len(v)-1] ^= 1
		return kb.Put([]byte("b"), v)
	})
	s := openAt(t, path, Options{})
	for name, err := range map[string]error{
		"Get":  func() error { _, err := s.Get(t.Context(), "t", "b"); return err }(),
		"List": func() error { _, _, err := s.List(t.Context(), "t"); return err }(),
		"Commit": func() error {
			_, err := s.Commit(t.Context(), Op{Type: OpUpdate, Kind: "t", Name: "b", Value: []byte("x")})
			return err
		}(),
	} {
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "t/b") {
			t.Errorf("%s of a damaged record: %v", name, err)
		}
	}
	if r, err := s.Get(t.Context(), "t", "a"); err != nil || string(r.Value) != "1" {
		t.Errorf("Get of a sound record: %+v, %v", r, err)
	}
}

const lockChildEnv = "BITBUILDER_STORE_LOCK_CHILD"

// TestLockedByOtherProcess: while a child process holds the store, Open
// fails after its Timeout naming the path; once the child exits, it works.
func TestLockedByOtherProcess(t *testing.T) {
	if path := os.Getenv(lockChildEnv); path != "" {
		s, err := Open(path, Options{})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(2)
		}
		fmt.Println("ready")
		os.Stdin.Read(make([]byte, 1)) // hold the lock until the parent closes stdin
		s.Close()
		os.Exit(0)
	}
	path := dbPath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockedByOtherProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("child: %q %v", line, err)
	}
	start := time.Now()
	_, err = Open(path, Options{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open while the child holds it: %v, want ErrLocked naming %s", err, path)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("Open gave up after %v, before its timeout", waited)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	openAt(t, path, Options{Timeout: time.Second})
}

// TestDamagedMetaPage: with the older of bbolt's two meta pages damaged,
// Open works and warns, Check reports it, and the next commit rewrites it.
func TestDamagedMetaPage(t *testing.T) {
	path := dbPath(t)
	writeStore(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.NativeEndian.Uint32(data[metaOffset+8:]))
	txid := func(page int) uint64 { return binary.NativeEndian.Uint64(data[page*pageSize+metaOffset+48:]) }
	older := 0
	if txid(1) < txid(0) {
		older = 1
	}
	data[older*pageSize+metaOffset+20] ^= 0xff // inside the root bucket field
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	err = Check(path)
	var ce *CheckError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.Contains(ce.Problems[0].Error(), fmt.Sprintf("meta page %d is invalid", older)) {
		t.Fatalf("Check: %v, want one problem naming meta page %d", err, older)
	}
	var logs bytes.Buffer
	s := openAt(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "damaged bbolt meta page") {
		t.Errorf("Open did not warn; logs: %s", logs.String())
	}
	if got := fmt.Sprint(snapshot(t, s, "t", "u")); got != "[t/a=1@1/1 t/b=2@1/1 u/c=3@2/2]" {
		t.Errorf("records %s", got)
	}
	mustCommit(t, s, put("t", "c", "4"))
	s.Close()
	if err := Check(path); err != nil {
		t.Errorf("Check after a commit rewrote the meta page: %v", err)
	}
}

// TestMigrationTable: one migration per step from schema 1 to the current
// version, in order, so every older file can be brought up to date.
func TestMigrationTable(t *testing.T) {
	ms := migrations()
	if len(ms) != schemaVersion-1 {
		t.Fatalf("%d migrations for schema %d, want %d", len(ms), schemaVersion, schemaVersion-1)
	}
	for i, m := range ms {
		if m.from != uint64(i+1) || m.apply == nil || m.what == "" {
			t.Errorf("migration %d: from %d, want %d, with a function and a description", i, m.from, i+1)
		}
	}
}
