package template

import (
	"fmt"
	"io"
	"io/fs"
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

// ReadFile returns the content of the file called file at the root of a commit of the template ("" means the
// pinned commit), from the cache, without checking anything out. A missing file is an error matching
// fs.ErrNotExist; anything but a regular file (a symlink, a directory, a submodule) is refused, and so is a
// file of more than max bytes, before it is read.
func (r *Registry) ReadFile(name, commit, file string, max int64) ([]byte, error) {
	if file == "" || strings.Contains(file, "/") {
		return nil, &FieldError{Field: "file", Reason: fmt.Sprintf("%q is not a file name at the root of the tree", file)}
	}
	var data []byte
	err := r.withCommit(name, commit, func(co *checkout, tree plumbing.Hash) error {
		entries, err := co.readTree(tree, "")
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.name != file {
				continue
			}
			if e.mode != 0o100644 && e.mode != 0o100755 && e.mode != 0o100664 {
				return &TreeError{Commit: co.commit, Path: file, Kind: ErrUnsafeMode, Reason: fmt.Sprintf("not a regular file (mode %06o %s)", e.mode, describeMode(e.mode))}
			}
			obj, err := co.blob(e, file)
			if err != nil {
				return err
			}
			if obj.Size() > max {
				return &TreeError{Commit: co.commit, Path: file, Kind: ErrTooLarge, Reason: fmt.Sprintf("%d bytes, more than the limit of %d", obj.Size(), max)}
			}
			rd, err := obj.Reader()
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrStorage, file, err)
			}
			defer rd.Close()
			data, err = io.ReadAll(io.LimitReader(rd, max+1))
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrStorage, file, err)
			}
			if int64(len(data)) > max {
				return &TreeError{Commit: co.commit, Path: file, Kind: ErrTooLarge, Reason: fmt.Sprintf("more than the limit of %d bytes", max)}
			}
			return nil
		}
		return fmt.Errorf("%s: %w", file, fs.ErrNotExist)
	})
	return data, err
}
