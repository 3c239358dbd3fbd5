package template

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
)

// peakHeap runs fn while sampling the heap and returns fn's error and the most heap in use above what was in
// use before (Go's HeapAlloc: live and not yet collected objects).
func peakHeap(t *testing.T, fn func() error) (uint64, error) {
	t.Helper()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
				peak.Store(ms.HeapAlloc - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	err := fn()
	close(stop)
	<-sampled
	return peak.Load(), err
}

// A blob that compresses to almost nothing and inflates past Limits.MaxObjectSize is refused from the pack's
// bytes, before go-git parses it: the fetch never holds it in memory.
func TestFetchRefusesInflatedObject(t *testing.T) {
	const size = 384 << 20
	src := newWorkRepo(t, baseFiles())
	f, err := os.Create(filepath.Join(src.dir, "bomb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src.commit("bomb")
	os.Remove(filepath.Join(src.dir, "bomb")) // only the repository holds it now
	r := newRegistry(t, Config{Limits: Limits{MaxObjectSize: 64 << 20}})
	peak, err := peakHeap(t, func() error {
		_, err := r.Add(t.Context(), "bomb", src.dir, "main", nil)
		return err
	})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxObjectSize") {
		t.Fatalf("Add of a %d-byte blob with MaxObjectSize 64 MiB: %v, want ErrTooLarge", size, err)
	}
	t.Logf("refused: %v; peak heap %.1f MiB above idle", err, float64(peak)/(1<<20))
	if peak > 48<<20 {
		t.Errorf("peak heap %d MiB above idle while refusing, want at most 48 MiB", peak>>20)
	}
	if got := cacheEntries(t, r); len(got) != 0 {
		t.Errorf("cache after the refused Add: %v", got)
	}
}

// A small repository whose tree names one blob thousands of times (through subtrees, so the tree objects
// stay small) is refused before any byte is written: the checkout is measured first, against MaxTotalSize
// (default 4 GiB), a blob named N times counting N times.
func TestCheckoutRefusesRepeatedBlobBeforeWriting(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	repo, err := git.PlainOpen(src.dir)
	if err != nil {
		t.Fatal(err)
	}
	blob := writeBlob(t, repo, make([]byte, 2<<20)).String()
	var inner, outer []rawEntry
	for i := range 64 {
		inner = append(inner, rawEntry{mode: "100644", name: "f" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), hash: blob})
	}
	sub := writeRawTree(t, repo, inner).String()
	for i := range 64 { // 64 × 64 × 2 MiB = 8 GiB
		outer = append(outer, rawEntry{mode: "040000", name: "d" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), hash: sub})
	}
	craftCommit(t, src.dir, "main", outer)
	r := newRegistry(t, Config{})
	var wrote atomic.Int64
	peak, err := peakHeap(t, func() error {
		_, err := r.Add(t.Context(), "repeat", src.dir, "main", func(p Progress) {
			if p.Phase == PhaseCheckout && p.Bytes > wrote.Load() {
				wrote.Store(p.Bytes)
			}
		})
		return err
	})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxTotalSize") {
		t.Fatalf("Add of an 8 GiB tree: %v, want ErrTooLarge (MaxTotalSize)", err)
	}
	if wrote.Load() != 0 {
		t.Errorf("the checkout wrote %d bytes before refusing", wrote.Load())
	}
	t.Logf("refused: %v; peak heap %.1f MiB above idle", err, float64(peak)/(1<<20))
	if peak > 48<<20 {
		t.Errorf("peak heap %d MiB above idle while refusing, want at most 48 MiB", peak>>20)
	}
}

// Credentials in a template URL are refused, and a record that has them (made before) is never shown with
// them.
func TestURLCredentials(t *testing.T) {
	for _, u := range []string{"https://user:s3cret@example.com/r.git", "https://s3cret@example.com/r.git",
		"ssh://git:s3cret@example.com/r.git", "http://u:s3cret@example.com/r"} {
		_, err := checkURL(u)
		if !errors.Is(err, ErrInvalidField) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("checkURL(%s) = %v, want a refusal that does not repeat the secret", u, err)
		}
	}
	if _, err := checkURL("ssh://git@example.com/r.git"); err != nil {
		t.Errorf("ssh URL with a user: %v", err)
	}
	got := cloneTemplate(Template{URL: "https://user:s3cret@example.com/r.git"}).URL
	if strings.Contains(got, "s3cret") || strings.Contains(got, "user") {
		t.Errorf("record shown as %s", got)
	}
	if e := (&FetchError{URL: "https://user:s3cret@example.com/r.git", Err: errors.New("x")}).Error(); strings.Contains(e, "s3cret") {
		t.Errorf("FetchError: %s", e)
	}
}
