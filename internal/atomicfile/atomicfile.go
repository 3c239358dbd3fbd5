// Package atomicfile replaces a file atomically and durably, the one way every package writes a file that a
// reader or a crash must see whole: the content goes to a temporary file in the same directory, which gets its
// mode (and owner, when asked), is fsync'd, closed and renamed over the path, and then the directory is fsync'd.
// A reader sees the old file or the new one, never a mix, and once WriteFile returns nil the new file survives a
// crash. On an error the temporary file is removed and the old file is left as it was.
//
// The package is a leaf (the standard library only), so every package may import it.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Options tune WriteFile. The zero value writes mode 0644 and keeps the writer's owner.
type Options struct {
	// Mode is the file's permission bits (0 means 0644).
	Mode os.FileMode
	// Chown, when set, is called with the temporary file's path before it is renamed, for example to give the file
	// its owner.
	Chown func(tmp string) error
	// NotDurable skips both fsyncs: the replacement is still atomic (a reader sees the old file or the new one),
	// but a crash of the machine may bring the old file back. Only for files that are recomputed when they are
	// stale, such as a cache of what the host holds.
	NotDurable bool
}

// WriteFile replaces path with data atomically and durably (see the package doc). The directory must exist. An
// error is wrapped with the step that failed; callers add what the file is.
func WriteFile(path string, data []byte, opts Options) (err error) {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if opts.Chown != nil {
		if err = opts.Chown(tmp); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if !opts.NotDurable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if opts.NotDurable {
		return nil
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, so that a rename or a new name in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
