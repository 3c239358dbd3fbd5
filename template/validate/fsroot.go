package validate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bitbuilder/bitbuilder/internal/treefile"
	"golang.org/x/sys/unix"
)

const (
	// maxHops is the number of symlinks one path resolution may follow (the kernel's MAXSYMLINKS).
	maxHops = 40
	// releaseLimit is the largest release, machine-id or loader entry file the validator reads.
	releaseLimit = 64 << 10
	// certLimit is the largest VOA certificate file the validator reads.
	certLimit = 1 << 20
	// maxDepth bounds the depth of the tree walk.
	maxDepth = 256
)

// root gives read-only access to a directory tree whose symlinks resolve inside it, like a chroot.
type root struct {
	dir string // absolute path of the tree
}

func openRoot(dir string) (*root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNotDirectory, dir)
	}
	return &root{dir: abs}, nil
}

// abs returns the host path of a symlink-free, clean, relative path.
func (r *root) abs(rel string) string {
	if rel == "" || rel == "." {
		return r.dir
	}
	return r.dir + "/" + rel
}

// resolve returns the symlink-free path, relative to the root, that rel names when every symlink in it is
// resolved inside the root (absolute targets start again at the root, ".." stops at the root). The last
// component is followed only when followFinal is set. The error wraps fs.ErrNotExist for a dangling path,
// errTooManyHops for a loop.
func (r *root) resolve(rel string, followFinal bool) (string, error) {
	var done []string
	pending := splitPath(rel)
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cand := strings.Join(append(done, c), "/")
		fi, err := os.Lstat(r.abs(cand))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 && (len(pending) > 0 || followFinal) {
			hops++
			if hops > maxHops {
				return "", &fs.PathError{Op: "resolve", Path: rel, Err: errTooManyHops}
			}
			target, err := os.Readlink(r.abs(cand))
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				done = done[:0]
			}
			pending = append(splitPath(target), pending...)
			continue
		}
		if len(pending) > 0 && !fi.IsDir() {
			return "", &fs.PathError{Op: "resolve", Path: rel, Err: syscall.ENOTDIR}
		}
		done = append(done, c)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return strings.Join(done, "/"), nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

// lstat returns the file info of rel itself (a final symlink is not followed) and its resolved path.
func (r *root) lstat(rel string) (string, fs.FileInfo, error) {
	res, err := r.resolve(rel, false)
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Lstat(r.abs(res))
	return res, fi, err
}

// stat follows every symlink inside the root.
func (r *root) stat(rel string) (string, fs.FileInfo, error) {
	res, err := r.resolve(rel, true)
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Lstat(r.abs(res))
	return res, fi, err
}

// exists reports whether rel names something after resolving symlinks inside the root.
func (r *root) exists(rel string) bool {
	_, _, err := r.stat(rel)
	return err == nil
}

// isDir reports whether rel resolves to a directory.
func (r *root) isDir(rel string) bool {
	_, fi, err := r.stat(rel)
	return err == nil && fi.IsDir()
}

// readFile reads the regular file rel names, at most limit bytes: symlinks on the way are resolved inside the
// root, then the resolved path is read with treefile.Read (regular files only, nothing followed out of the
// tree, size-capped), the one reader of template files.
func (r *root) readFile(rel string, limit int64) ([]byte, error) {
	res, err := r.resolve(rel, true)
	if err != nil {
		return nil, err
	}
	data, err := treefile.Read(r.dir, res, limit)
	var pe *fs.PathError
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, treefile.ErrNotRegular):
		return nil, &fs.PathError{Op: "read", Path: rel, Err: errNotRegular}
	case errors.Is(err, treefile.ErrTooLarge):
		return nil, &fs.PathError{Op: "read", Path: rel, Err: errTooLarge}
	case errors.As(err, &pe):
		return nil, &fs.PathError{Op: pe.Op, Path: rel, Err: pe.Err}
	}
	return nil, err
}

// readDir lists the directory rel names (symlinks resolved inside the root).
func (r *root) readDir(rel string) ([]fs.DirEntry, error) {
	res, err := r.resolve(rel, true)
	if err != nil {
		return nil, err
	}
	return r.readDirResolved(res)
}

func (r *root) readDirResolved(res string) ([]fs.DirEntry, error) {
	fd, err := unix.Open(r.abs(res), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: res, Err: err}
	}
	f := os.NewFile(uintptr(fd), r.abs(res))
	defer f.Close()
	return f.ReadDir(-1)
}

// errSkipDir, returned by a walk function for a directory, skips its content.
var errSkipDir = errors.New("skip directory")

// walk visits every entry below start (a symlink-free path relative to the root), depth first, without
// following symlinks, iteratively. fn gets the entry's path relative to the root and its directory entry; it
// returns errSkipDir to skip a directory's content, another error to stop. Unreadable directories are passed
// to onErr and skipped. The context is checked between directories.
func (r *root) walk(ctx context.Context, start string, fn func(rel string, d fs.DirEntry) error, onErr func(rel string, err error)) error {
	type item struct {
		rel   string
		depth int
	}
	stack := []item{{start, 0}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := r.readDirResolved(it.rel)
		if err != nil {
			onErr(it.rel, err)
			continue
		}
		for i := len(entries) - 1; i >= 0; i-- {
			d := entries[i]
			rel := d.Name()
			if it.rel != "." && it.rel != "" {
				rel = it.rel + "/" + d.Name()
			}
			err := fn(rel, d)
			if errors.Is(err, errSkipDir) {
				continue
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				if it.depth+1 >= maxDepth {
					onErr(rel, fmt.Errorf("deeper than %d levels: not inspected", maxDepth))
					continue
				}
				stack = append(stack, item{rel, it.depth + 1})
			}
		}
	}
	return nil
}

// joinRel joins slash-separated relative paths, treating "." as empty.
func joinRel(elem ...string) string {
	var parts []string
	for _, e := range elem {
		if e != "" && e != "." {
			parts = append(parts, e)
		}
	}
	if len(parts) == 0 {
		return "."
	}
	return path.Join(parts...)
}

// fileError describes err for a finding message.
func fileError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
