package treefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("host secret"), 0o600)
	os.WriteFile(filepath.Join(dir, "ok"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "big"), make([]byte, 11), 0o644)
	os.Symlink(outside, filepath.Join(dir, "abs-link"))
	os.Symlink("ok", filepath.Join(dir, "in-link"))
	os.Symlink("/dev/zero", filepath.Join(dir, "zero"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.Symlink(filepath.Dir(outside), filepath.Join(dir, "escape"))
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)

	if b, err := Read(dir, "ok", 10); err != nil || string(b) != "x" {
		t.Fatalf("Read(ok) = %q, %v", b, err)
	}
	for _, tc := range []struct {
		rel  string
		want error
	}{
		{"missing", fs.ErrNotExist},
		{"big", ErrTooLarge},
		{"abs-link", ErrNotRegular},
		{"in-link", ErrNotRegular},
		{"zero", ErrNotRegular},
		{"fifo", ErrNotRegular},
		{"sub", ErrNotRegular},
		{"escape/secret", nil},
		{"../" + filepath.Base(dir) + "/ok", nil},
	} {
		b, err := Read(dir, tc.rel, 10)
		if err == nil {
			t.Errorf("Read(%s) = %q, want an error", tc.rel, b)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Read(%s): %v, want %v", tc.rel, err, tc.want)
		}
	}
	fsys := os.DirFS(dir)
	if b, err := ReadFS(fsys, "ok", 10); err != nil || string(b) != "x" {
		t.Fatalf("ReadFS(ok) = %q, %v", b, err)
	}
	for _, rel := range []string{"missing", "big", "abs-link", "zero", "fifo", "sub"} {
		if b, err := ReadFS(fsys, rel, 10); err == nil {
			t.Errorf("ReadFS(%s) = %q, want an error", rel, b)
		}
	}
}
