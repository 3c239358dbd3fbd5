package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fsyncer is the baseline for durable commits: a plain write+fdatasync
// loop on a file in the store's directory.
type fsyncer struct {
	f   *os.File
	buf []byte
	n   int
	d   time.Duration
}

func newFsyncer(b *testing.B, dir string) *fsyncer {
	b.Helper()
	f, err := os.CreateTemp(dir, "fsync-baseline")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return &fsyncer{f: f, buf: make([]byte, 4096)} // F: a 4 KiB write and fdatasync
}

// run does n write+fdatasync pairs and adds them to the tally.
func (s *fsyncer) run(b *testing.B, n int) {
	start := time.Now()
	for range n {
		s.buf[0]++
		if _, err := s.f.WriteAt(s.buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(s.f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
	s.n += n
	s.d += time.Since(start)
}

func (s *fsyncer) rate() float64 { return float64(s.n) / s.d.Seconds() }

// BenchmarkCommit measures durable commits of one small record per call
// from 1 and 32 concurrent clients against the fdatasync rate of the same
// disk. The disk is shared and its speed drifts, so the run alternates
// blocks of commits with blocks of baseline syncs and compares the totals.
// x_fsync is commits/s divided by fsyncs/s: a lone bbolt commit syncs
// twice, so 0.5 is the ceiling for one client; group commit lets many
// clients share syncs.
func BenchmarkCommit(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(filepath.Join(dir, "state.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			base := newFsyncer(b, dir)
			value := make([]byte, 100)
			ctx := context.Background()
			st0 := s.Stats()
			block := 64 * clients // commits per block
			var (
				done    int
				elapsed time.Duration
			)
			// With one client, also time a plain bbolt transaction that
			// writes what a commit writes (a record in a nested bucket, a
			// log entry, the meta revision): the floor bbolt itself sets.
			var raw *rawCommitter
			if clients == 1 {
				raw = newRawCommitter(b, dir)
			}
			b.ResetTimer()
			for done < b.N {
				base.run(b, 64)
				if raw != nil {
					raw.run(b, 64)
				}
				n := min(block, b.N-done)
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for range clients {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > int64(n) {
								return
							}
							name := fmt.Sprint(done + int(i))
							if _, err := s.Commit(ctx, Op{Type: OpPut, Kind: "bench", Name: name, Value: value}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed += time.Since(start)
				done += n
			}
			b.StopTimer()
			commits := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(commits, "commits/s")
			b.ReportMetric(base.rate(), "fsyncs/s")
			b.ReportMetric(commits/base.rate(), "x_fsync")
			st := s.Stats()
			b.ReportMetric(float64(st.Commits-st0.Commits)/float64(st.Transactions-st0.Transactions), "commits/batch")
			b.ReportMetric(float64((st.Wait-st0.Wait).Microseconds())/float64(st.Commits-st0.Commits), "wait-us/commit")
			if raw != nil {
				b.ReportMetric(commits/raw.rate(), "x_bbolt")
			}
		})
	}
}

// rawCommitter runs bbolt transactions shaped like a one-record commit.
type rawCommitter struct {
	db    *bolt.DB
	n     int
	d     time.Duration
	value []byte
}

func newRawCommitter(b *testing.B, dir string) *rawCommitter {
	b.Helper()
	db, err := bolt.Open(filepath.Join(dir, "raw.db"), 0o600,
		&bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bolt.Tx) error {
		kinds, err := tx.CreateBucket(bucketKinds)
		if err != nil {
			return err
		}
		if _, err := kinds.CreateBucket([]byte("bench")); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketLog); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketMeta)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return &rawCommitter{db: db, value: make([]byte, 100+recordHeader)}
}

func (r *rawCommitter) run(b *testing.B, n int) {
	start := time.Now()
	for range n {
		r.n++
		err := r.db.Update(func(tx *bolt.Tx) error {
			rev := revKey(uint64(r.n))
			if err := tx.Bucket(bucketKinds).Bucket([]byte("bench")).Put([]byte(fmt.Sprint(r.n)), r.value); err != nil {
				return err
			}
			if err := tx.Bucket(bucketLog).Put(rev, r.value); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keyRevision, rev)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	r.d += time.Since(start)
}

func (r *rawCommitter) rate() float64 { return float64(r.n) / r.d.Seconds() }

// fill creates a store with n records of 200 bytes in kind "bench".
func fill(b *testing.B, path string, n int) {
	b.Helper()
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 200)
	for i := 0; i < n; i += 1000 {
		var ops []Op
		for j := i; j < min(i+1000, n); j++ {
			ops = append(ops, Op{Type: OpPut, Kind: "bench", Name: fmt.Sprintf("rec-%06d", j), Value: value})
		}
		mustCommit(b, s, ops...)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkList10k lists 10,000 records; x_raw is its time divided by a raw
// bbolt scan that copies the same keys and values, timed in the same run.
func BenchmarkList10k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.db")
	fill(b, path, 10000)
	s, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var listTime, rawTime time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		recs, _, err := s.List(ctx, "bench")
		if err != nil || len(recs) != 10000 {
			b.Fatalf("List: %d records, %v", len(recs), err)
		}
		t1 := time.Now()
		n := 0
		err = s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKinds).Bucket([]byte("bench")).ForEach(func(k, v []byte) error {
				_ = string(k)
				_ = append([]byte{}, v...)
				n++
				return nil
			})
		})
		if err != nil || n != 10000 {
			b.Fatalf("raw scan: %d, %v", n, err)
		}
		listTime += t1.Sub(t0)
		rawTime += time.Since(t1)
	}
	b.ReportMetric(float64(listTime.Nanoseconds())/float64(b.N), "list-ns/op")
	b.ReportMetric(float64(listTime)/float64(rawTime), "x_raw")
}

// BenchmarkOpen10k opens and closes a store of 10,000 records; x_raw is its
// time divided by a plain bbolt Open and Close of the same file (with the
// same options), timed in the same run.
func BenchmarkOpen10k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.db")
	fill(b, path, 10000)
	var openTime, rawTime time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		openTime += t1.Sub(t0)
		rawTime += time.Since(t1)
	}
	b.ReportMetric(float64(openTime.Nanoseconds())/float64(b.N), "open-ns/op")
	b.ReportMetric(float64(openTime)/float64(rawTime), "x_raw")
}
