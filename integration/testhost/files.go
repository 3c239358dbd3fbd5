package testhost

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Files are read and written through /proc/LEADER/root with openat2(RESOLVE_IN_ROOT), so paths, symlinks
// (absolute ones too) and mounts resolve as they do inside the host, and nothing escapes its root.

const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// guestRel checks a guest path and returns it relative to the guest's root.
func guestRel(p string) (string, error) {
	if !path.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", invalid("guest path %q: must be absolute", p)
	}
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return "", invalid("guest path %q: names the root directory", p)
	}
	return rel, nil
}

func (h *Host) openRoot() (*os.File, error) {
	in := h.current()
	if in.isExited() {
		return nil, ErrStopped
	}
	pid := strconv.Itoa(in.leader)
	f, err := os.OpenFile("/proc/"+pid+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if in.isExited() {
			return nil, ErrStopped
		}
		return nil, fmt.Errorf("testhost: open host root: %w", err)
	}
	// The leader still there after the open means the root we hold is its, not a reused PID's.
	if startTime(pid) != in.started {
		f.Close()
		return nil, ErrStopped
	}
	return f, nil
}

func openIn(root *os.File, rel string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: inRoot})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// mkdirAll creates rel and its parents (mode perm) inside the root.
func mkdirAll(root *os.File, rel string, perm os.FileMode) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		fd, err := openIn(root, sub, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err == nil {
			unix.Close(fd)
			continue
		}
		if err != unix.ENOENT {
			return &fs.PathError{Op: "mkdir", Path: "/" + sub, Err: err}
		}
		parent := "."
		if i > 0 {
			parent = strings.Join(parts[:i], "/")
		}
		pfd, err := openIn(root, parent, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return &fs.PathError{Op: "mkdir", Path: "/" + parent, Err: err}
		}
		err = unix.Mkdirat(pfd, parts[i], uint32(perm.Perm()))
		unix.Close(pfd)
		if err != nil && err != unix.EEXIST {
			return &fs.PathError{Op: "mkdir", Path: "/" + sub, Err: err}
		}
	}
	return nil
}

// MkdirAll creates a directory and its missing parents inside the host (like os.MkdirAll).
func (h *Host) MkdirAll(guestPath string, perm os.FileMode) error {
	rel, err := guestRel(guestPath)
	if err != nil {
		return err
	}
	root, err := h.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	return mkdirAll(root, rel, perm)
}

// WriteFile writes data to a file inside the host, creating missing parent directories (0755), and sets the
// file's permission bits to exactly mode (umask does not apply). Like os.WriteFile it truncates an existing file
// and follows symlinks, resolved inside the host.
func (h *Host) WriteFile(guestPath string, data []byte, mode os.FileMode) error {
	rel, err := guestRel(guestPath)
	if err != nil {
		return err
	}
	if mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return invalid("WriteFile %s: mode %v is not a plain file mode", guestPath, mode)
	}
	root, err := h.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if dir := path.Dir(rel); dir != "." {
		if err := mkdirAll(root, dir, 0o755); err != nil {
			return err
		}
	}
	fd, err := openIn(root, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, uint32(mode.Perm()))
	if err != nil {
		return &fs.PathError{Op: "open", Path: guestPath, Err: err}
	}
	f := os.NewFile(uintptr(fd), guestPath)
	_, werr := f.Write(data)
	cerr := f.Chmod(mode.Perm() | mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	return errors.Join(werr, cerr, f.Close())
}

// ReadFile reads a file inside the host. A missing file gives an error matching fs.ErrNotExist.
func (h *Host) ReadFile(guestPath string) ([]byte, error) {
	rel, err := guestRel(guestPath)
	if err != nil {
		return nil, err
	}
	root, err := h.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fd, err := openIn(root, rel, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: guestPath, Err: err}
	}
	f := os.NewFile(uintptr(fd), guestPath)
	defer f.Close()
	return io.ReadAll(f)
}
