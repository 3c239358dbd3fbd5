// Package treefile reads files of an untrusted tree (a template checkout) safely: the one way every reader of a
// template's files (the validator, netconf, units, machines, the materializer) opens them.
//
// Read opens rel below dir through an os.Root, so no component of rel (a symlink or "..") leads out of dir; the
// file itself must be a regular file (a final symlink is refused, even to inside the tree, as are devices,
// FIFOs and sockets, which could block a reader or never end), and more than max bytes are never read. A file
// that does not exist gives an error wrapping fs.ErrNotExist. Errors are *fs.PathError whose Err is
// ErrNotRegular, ErrTooLarge or the system's error; their text names rel and never includes file content.
package treefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

var (
	// ErrNotRegular is the Err of a *fs.PathError for a file that is not a regular file (a symlink included).
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge is the Err of a *fs.PathError for a file larger than the caller's limit.
	ErrTooLarge = errors.New("file larger than the read limit")
)

// Read reads the regular file rel (slash-separated, relative) below dir, at most max bytes. See the package doc.
func Read(dir, rel string, max int64) ([]byte, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return ReadRoot(r, rel, max)
}

// ReadRoot is Read below an open root.
func ReadRoot(r *os.Root, rel string, max int64) ([]byte, error) {
	fi, err := r.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: rel, Err: fmt.Errorf("%w (%s)", ErrNotRegular, typeName(fi.Mode()))}
	}
	if fi.Size() > max {
		return nil, &fs.PathError{Op: "read", Path: rel, Err: fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, fi.Size(), max)}
	}
	// O_NONBLOCK: should the file have been swapped for a FIFO since the Lstat, opening it does not block.
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: rel, Err: fmt.Errorf("%w (%s)", ErrNotRegular, typeName(fi.Mode()))}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: rel, Err: err}
	}
	if int64(len(data)) > max {
		return nil, &fs.PathError{Op: "read", Path: rel, Err: fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return data, nil
}

// ReadFS reads the regular file name of fsys, at most max bytes, for trees that are not directories on disk
// (an embedded template). It checks the type the directory listing reports (which, for os.DirFS, is the entry
// itself, not what a symlink points at) and the size. For a directory on disk use Read, which also keeps every
// path component inside the tree.
func ReadFS(fsys fs.FS, name string, max int64) ([]byte, error) {
	dir, base := ".", name
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			dir, base = name[:i], name[i+1:]
			break
		}
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	found := false
	for _, e := range entries {
		if e.Name() == base {
			if !e.Type().IsRegular() {
				return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, typeName(e.Type()))}
			}
			found = true
			break
		}
	}
	if !found {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, typeName(fi.Mode()))}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	if int64(len(data)) > max {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return data, nil
}

func typeName(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeSymlink != 0:
		return "a symlink"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case t&fs.ModeDevice != 0:
		return "a device"
	case t&fs.ModeSocket != 0:
		return "a socket"
	default:
		return "type " + t.String()
	}
}
