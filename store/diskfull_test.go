package store

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// TestDiskFull fills a small tmpfs: the failing commit reports ErrFailed
// with the ENOSPC cause, later commits are refused, reads keep working, and
// a reopened store holds every acknowledged commit. Needs root for mount.
func TestDiskFull(t *testing.T) {
	testpolicy.RequireRoot(t, "to mount a small tmpfs")
	dir := t.TempDir()
	testpolicy.RequireNoError(t, syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"), "cannot mount tmpfs")
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := dir + "/state.db"
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	value := make([]byte, 64<<10)
	var acked []string
	var failErr error
	for i := range 100 {
		name := fmt.Sprint(i)
		if _, err := s.Commit(t.Context(), Op{Type: OpPut, Kind: "t", Name: name, Value: value}); err != nil {
			failErr = err
			break
		}
		acked = append(acked, name)
	}
	if !errors.Is(failErr, ErrFailed) || !errors.Is(failErr, syscall.ENOSPC) {
		t.Fatalf("commit on a full disk: %v, want ErrFailed wrapping ENOSPC", failErr)
	}
	if len(acked) == 0 {
		t.Fatal("nothing fit on the tmpfs")
	}
	if _, err := s.Commit(t.Context(), put("t", "small", "x")); !errors.Is(err, ErrFailed) {
		t.Errorf("commit after failure: %v, want ErrFailed", err)
	}
	if r, err := s.Get(t.Context(), "t", acked[0]); err != nil || len(r.Value) != len(value) {
		t.Errorf("read after failure: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Logf("close after failure: %v", err)
	}
	s2 := openAt(t, path, Options{})
	for _, name := range acked {
		if _, err := s2.Get(t.Context(), "t", name); err != nil {
			t.Fatalf("acknowledged record %s after reopen: %v", name, err)
		}
	}
	s2.Close()
	if err := Check(path); err != nil {
		t.Errorf("Check after disk full: %v", err)
	}
}
