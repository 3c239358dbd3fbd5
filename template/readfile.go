package template

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// ReadFile returns the content of the regular file file ("a/b/c") in a commit of the template ("" means
// the pinned commit), from the cache, without checking anything out: at most limit bytes (a larger file
// is an error wrapping ErrTooLarge, read no further). A missing file, or one under a path that is not a
// directory, is an error wrapping fs.ErrNotExist; a symlink or submodule is not followed and is an error.
func (r *Registry) ReadFile(name, commit, file string, limit int64) ([]byte, error) {
	var data []byte
	err := r.withCommit(name, commit, func(co *checkout, tree plumbing.Hash) error {
		parts := strings.Split(strings.Trim(file, "/"), "/")
		walked := ""
		for i, part := range parts {
			entries, err := co.readTree(tree, walked)
			if err != nil {
				return err
			}
			var found *treeEntry
			for j := range entries {
				if entries[j].name == part {
					found = &entries[j]
				}
			}
			p := path.Join(walked, part)
			switch {
			case found == nil:
				return &fs.PathError{Op: "read", Path: file, Err: fs.ErrNotExist}
			case i < len(parts)-1 && found.mode != 0o040000:
				return &fs.PathError{Op: "read", Path: file, Err: fs.ErrNotExist}
			case i < len(parts)-1:
				tree, walked = found.hash, p
				continue
			case found.mode != 0o100644 && found.mode != 0o100755 && found.mode != 0o100664:
				return &fs.PathError{Op: "read", Path: file, Err: fmt.Errorf("not a regular file (mode %06o %s)", found.mode, describeMode(found.mode))}
			}
			obj, err := co.blob(*found, p)
			if err != nil {
				return err
			}
			if obj.Size() > limit {
				return &fs.PathError{Op: "read", Path: file, Err: fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, obj.Size(), limit)}
			}
			rd, err := obj.Reader()
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrStorage, file, err)
			}
			defer rd.Close()
			if data, err = io.ReadAll(io.LimitReader(rd, limit)); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrStorage, file, err)
			}
		}
		return nil
	})
	return data, err
}
