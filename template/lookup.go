package template

import (
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
