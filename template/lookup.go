package template

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// ReadDir returns the names of the entries of directory dir ("a/b", "" for the root) in a
// commit of the template ("" means the pinned commit), from the cache, without checking
// anything out. A missing directory, or a path that is not a directory, gives no names.
func (r *Registry) ReadDir(name, commit, dir string) ([]string, error) {
	var names []string
	err := r.withCommit(name, commit, func(co *checkout, tree plumbing.Hash) error {
		walked := ""
		for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
			if part == "" {
				continue
			}
			entries, err := co.readTree(tree, walked)
			if err != nil {
				return err
			}
			found := false
			for _, e := range entries {
				if e.name == part && e.mode == 0o040000 {
					tree, found = e.hash, true
					break
				}
			}
			if !found {
				return nil
			}
			walked = strings.TrimPrefix(walked+"/"+part, "/")
		}
		entries, err := co.readTree(tree, walked)
		if err != nil {
			return err
		}
		names = make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.name)
		}
		return nil
	})
	return names, err
}

// ReadFile returns the content of the regular file file ("a/b/c", relative to the template's root) in a commit
// of the template ("" means the pinned commit), from the cache, without checking anything out. A missing file, or
// one under a path that is not a directory, is an error matching fs.ErrNotExist; anything but a regular file (a
// symlink, a directory, a submodule) is refused and never followed, and so is a file of more than max bytes,
// before it is read.
func (r *Registry) ReadFile(name, commit, file string, max int64) ([]byte, error) {
	parts := strings.Split(file, "/")
	if file == "" || slices.ContainsFunc(parts, func(p string) bool { return p == "" || p == "." || p == ".." }) {
		return nil, &FieldError{Field: "file", Reason: fmt.Sprintf("%q is not a relative path of plain names", file)}
	}
	var data []byte
	err := r.withCommit(name, commit, func(co *checkout, tree plumbing.Hash) error {
		walked := ""
		for i, part := range parts {
			entries, err := co.readTree(tree, walked)
			if err != nil {
				return err
			}
			j := slices.IndexFunc(entries, func(e treeEntry) bool { return e.name == part })
			p := path.Join(walked, part)
			switch {
			case j < 0 || (i < len(parts)-1 && entries[j].mode != 0o040000):
				return &fs.PathError{Op: "read", Path: file, Err: fs.ErrNotExist}
			case i < len(parts)-1:
				tree, walked = entries[j].hash, p
				continue
			}
			e := entries[j]
			if e.mode != 0o100644 && e.mode != 0o100755 && e.mode != 0o100664 {
				return &TreeError{Commit: co.commit, Path: file, Kind: ErrUnsafeMode, Reason: fmt.Sprintf("not a regular file (mode %06o %s)", e.mode, describeMode(e.mode))}
			}
			size, err := co.blobSize(e, p)
			if err != nil {
				return err
			}
			if size > max {
				return &TreeError{Commit: co.commit, Path: file, Kind: ErrTooLarge, Reason: fmt.Sprintf("%d bytes, more than the limit of %d", size, max)}
			}
			data, err = co.readBlob(e, p, size)
			if err != nil {
				return err
			}
		}
		return nil
	})
	return data, err
}
