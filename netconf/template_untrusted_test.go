package netconf

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A network template's files are untrusted: LoadDir reads none through a symlink, nothing but a regular file,
// and nothing larger than MaxFileSize, so a template can neither make the reconciler read /dev/zero forever nor
// make it echo a host file in an error.
func TestLoadDirUntrusted(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.network")
	os.WriteFile(secret, []byte("[Match]\nName=host-secret-xyzzy\n\x00"), 0o600)
	copyExample := func(t *testing.T) string {
		dir := t.TempDir()
		src := "../examples/templates/network"
		es, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
		return dir
	}
	if _, err := LoadDir(copyExample(t)); err != nil {
		t.Fatalf("LoadDir(example): %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(dir string)
	}{
		{"metadata.json is /dev/zero", func(dir string) {
			os.Remove(filepath.Join(dir, "metadata.json"))
			os.Symlink("/dev/zero", filepath.Join(dir, "metadata.json"))
		}},
		{"parameters.json is /dev/zero", func(dir string) {
			os.Remove(filepath.Join(dir, "parameters.json"))
			os.Symlink("/dev/zero", filepath.Join(dir, "parameters.json"))
		}},
		{"a unit file is a host file", func(dir string) {
			os.Symlink(secret, filepath.Join(dir, "50-secret.network"))
		}},
		{"parameters.json is huge", func(dir string) {
			os.WriteFile(filepath.Join(dir, "parameters.json"), []byte("{"+strings.Repeat(" ", MaxFileSize)+"}"), 0o644)
		}},
		{"metadata.json is a FIFO", func(dir string) {
			os.Remove(filepath.Join(dir, "metadata.json"))
			if err := syscall.Mkfifo(filepath.Join(dir, "metadata.json"), 0o644); err != nil {
				t.Fatalf("making the FIFO: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyExample(t)
			tc.edit(dir)
			done := make(chan error, 1)
			go func() { _, err := LoadDir(dir); done <- err }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("LoadDir accepted the template")
				}
				if strings.Contains(err.Error(), "xyzzy") {
					t.Fatalf("error echoes the host file: %v", err)
				}
				t.Log(err)
			case <-time.After(10 * time.Second):
				t.Fatal("LoadDir did not return within 10 s")
			}
		})
	}
}
