package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// cacheOf returns a tenantAPI whose reply cache holds an entry per record.
func cacheOf(recs []store.Record) *tenantAPI {
	a := &tenantAPI{log: slog.New(slog.DiscardHandler), listCache: map[string]cachedTenant{}}
	for _, r := range recs {
		a.listCache[r.Name] = cachedTenant{revision: r.ModRevision, raw: []byte(`{"tenant":{"name":"` + r.Name + `"}}`)}
	}
	return a
}

func testRecords(n int) []store.Record {
	var recs []store.Record
	for i := range n {
		recs = append(recs, store.Record{Kind: tenant.KindTenant, Name: fmt.Sprintf("t%d", i),
			Value: []byte(`{"name":"t` + fmt.Sprint(i) + `","padding":"` + strings.Repeat("x", 100) + `"}`), ModRevision: uint64(10 + i)})
	}
	return recs
}

// TestReplyCacheLoad checks what a start takes from the kept reply cache: everything, for the
// store revision the file was written at; nothing from a damaged, truncated, oversized or
// foreign file, or for another store revision; and the file is gone after every start.
func TestReplyCacheLoad(t *testing.T) {
	recs := testRecords(5)
	const limit = 1 << 20
	path := func(dir string) string { return filepath.Join(dir, replyCacheFile) }
	save := func(t *testing.T) string {
		dir := t.TempDir()
		if err := cacheOf(recs).saveReplies(dir, 42); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	load := func(t *testing.T, dir string, openRev uint64, limit int64) (map[string]cachedTenant, error) {
		kept, err := loadReplies(dir, openRev, limit)
		if _, serr := os.Stat(path(dir)); !os.IsNotExist(serr) {
			t.Errorf("the reply cache file is still there after a start (%v)", serr)
		}
		return kept, err
	}
	rewrite := func(t *testing.T, dir string, edit func([]byte) []byte) {
		data, err := os.ReadFile(path(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(dir), edit(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	resum := func(data []byte) []byte {
		body := data[:len(data)-4]
		return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
	}
	refused := func(t *testing.T, dir string, openRev uint64, limit int64, why string) {
		t.Helper()
		if kept, err := load(t, dir, openRev, limit); err == nil || len(kept) != 0 || !strings.Contains(err.Error(), why) {
			t.Fatalf("kept %d, %v; want none and %q", len(kept), err, why)
		}
	}

	t.Run("current", func(t *testing.T) {
		kept, err := load(t, save(t), 42, limit)
		if err != nil || len(kept) != len(recs) {
			t.Fatalf("kept %d, %v; want all %d", len(kept), err, len(recs))
		}
		for _, r := range recs {
			if ct := kept[r.Name]; ct.revision != r.ModRevision || !bytes.Contains(ct.raw, []byte(r.Name)) || ct.seenAt != 0 {
				t.Errorf("%s: kept %+v", r.Name, ct)
			}
		}
	})
	t.Run("store moved", func(t *testing.T) { refused(t, save(t), 43, limit, "store revision 42") })
	t.Run("damaged", func(t *testing.T) {
		dir := save(t)
		rewrite(t, dir, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
		refused(t, dir, 42, limit, "checksum")
	})
	t.Run("truncated", func(t *testing.T) {
		dir := save(t)
		rewrite(t, dir, func(b []byte) []byte { return resum(append(b[:len(b)-40], 0, 0, 0, 0)) })
		refused(t, dir, 42, limit, "truncated")
	})
	t.Run("another build", func(t *testing.T) {
		dir := save(t)
		rewrite(t, dir, func(b []byte) []byte {
			b[len(replyCacheMagic)+2] ^= 1 // the build ID's first byte
			return resum(b)
		})
		refused(t, dir, 42, limit, "another build")
	})
	t.Run("larger than the store", func(t *testing.T) { refused(t, save(t), 42, 100, "larger than") })
	t.Run("none", func(t *testing.T) {
		if kept, err := load(t, t.TempDir(), 42, limit); err != nil || kept != nil {
			t.Fatalf("kept %v, %v", kept, err)
		}
	})
}

// TestKeptReplyServedOnlyForItsRevision checks that a kept reply is used for its record's
// revision only: a record changed since the cache was kept is encoded anew, and an entry the
// cache holds for a newer revision is not replaced by a kept older one.
func TestKeptReplyServedOnlyForItsRevision(t *testing.T) {
	rec := store.Record{Kind: tenant.KindTenant, Name: "a", ModRevision: 7, CreateRevision: 3,
		Value: []byte(`{"name":"a","networkIndex":1,"desiredState":"running","phase":"ready","generation":1,"createdAt":"2026-12-08T00:00:00Z","updatedAt":"2026-12-08T00:00:00Z"}`)}
	a := &tenantAPI{log: slog.New(slog.DiscardHandler)}
	a.adopt(map[string]cachedTenant{"a": {revision: 7, raw: []byte("kept")}, "b": {revision: 9, raw: []byte("kept b")}})
	if raw, err := a.encoded(rec, 0); err != nil || string(raw) != "kept" {
		t.Errorf("record at the kept revision: got %s, %v; want the kept reply", raw, err)
	}
	rec.ModRevision = 8
	raw, err := a.encoded(rec, 0)
	if err != nil || !bytes.Contains(raw, []byte(`"revision":8`)) {
		t.Errorf("record moved on: got %s, %v; want it encoded at revision 8", raw, err)
	}
	a.adopt(map[string]cachedTenant{"a": {revision: 7, raw: []byte("older")}})
	if got, _ := a.encoded(rec, 0); !bytes.Equal(got, raw) {
		t.Errorf("an older kept reply replaced a newer one: %s", got)
	}
}

// TestReplyCacheAcrossRestart runs the daemon: a clean stop keeps the reply cache, the next
// start takes every entry and removes the file, and a record changed while the daemon was
// stopped is listed as it is now, never from the kept reply.
func TestReplyCacheAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	var logs lockedBuffer
	debug := func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := startDaemonIn(t, dir, state, debug)
	c := dial(t, d.socket)
	for i := range 3 {
		tenantOf(t, c.call("io.bitbuilder.Tenant.Create", fmt.Sprintf(`{"name":"r%d"}`, i)))
	}
	settle(t, c)
	before := c.callMore("io.bitbuilder.Tenant.List", `{}`)
	d.stop(t)
	if _, err := os.Stat(filepath.Join(state, replyCacheFile)); err != nil {
		t.Fatalf("a clean stop kept no reply cache: %v", err)
	}

	d = startDaemonIn(t, dir, state, debug)
	c = dial(t, d.socket)
	after := c.callMore("io.bitbuilder.Tenant.List", `{}`)
	waitFor(t, func() bool { return strings.Count(logs.String(), "reply cache filled") == 2 }, "the reply cache to be filled")
	if !strings.Contains(logs.String(), "keptFromLastStop=3") {
		t.Errorf("the start did not take the 3 kept replies:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(state, replyCacheFile)); !os.IsNotExist(err) {
		t.Errorf("the reply cache file is still there after the start: %v", err)
	}
	if len(after) != len(before) {
		t.Fatalf("listed %d after the restart, %d before", len(after), len(before))
	}
	for i := range before {
		b, _ := json.Marshal(before[i])
		a, _ := json.Marshal(after[i])
		if !bytes.Equal(a, b) {
			t.Errorf("tenant %d listed differently after the restart:\n%s\n%s", i, b, a)
		}
	}
	d.stop(t)

	// Changed while stopped: the kept cache describes another store revision and is not used.
	st, err := store.Open(filepath.Join(state, "bitbuilder.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Get(context.Background(), tenant.KindTenant, "r1")
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(rec.Value, []byte(`"desiredState":"running"`), []byte(`"desiredState":"stopped"`), 1)
	if bytes.Equal(changed, rec.Value) {
		t.Fatalf("record has no desiredState to change: %s", rec.Value)
	}
	if _, err := st.Commit(context.Background(), store.Op{Type: store.OpUpdate, Kind: tenant.KindTenant, Name: "r1", Value: changed, ExpectRevision: rec.ModRevision}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	d = startDaemonIn(t, dir, state, debug)
	c = dial(t, d.socket)
	if got := tenantOf(t, c.callMore("io.bitbuilder.Tenant.List", `{}`)[1])["desiredState"]; got != "stopped" {
		t.Errorf("r1 listed with desiredState %v after it was changed while stopped, want stopped", got)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "is not used") }, "the start to say why the kept cache is not used")
}
