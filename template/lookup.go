package template

import (
	"context"
	"strings"
)

// ReadDir returns the names of the entries of directory dir ("a/b", "" for the root) in a
// commit of the template ("" means the pinned commit), from the cache, without checking
// anything out. A missing directory, or a path that is not a directory, gives no names.
func (r *Registry) ReadDir(name, commit, dir string) ([]string, error) {
	t, err := r.Get(name)
	if err != nil {
		return nil, err
	}
	if commit == "" {
		commit = t.Commit
	}
	h, err := checkCommit(commit)
	if err != nil {
		return nil, err
	}
	l := r.repoLock(name)
	l.RLock()
	defer l.RUnlock()
	st := openStore(r.repoPath(name))
	defer st.Close()
	c, err := cachedCommit(st, t, h)
	if err != nil {
		return nil, err
	}
	co := newCheckout(context.Background(), st, commit, r.limits, nil)
	tree := c.TreeHash
	walked := ""
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		entries, err := co.readTree(tree, walked)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range entries {
			if e.name == part && e.mode == 0o040000 {
				tree, found = e.hash, true
				break
			}
		}
		if !found {
			return nil, nil
		}
		walked = strings.TrimPrefix(walked+"/"+part, "/")
	}
	entries, err := co.readTree(tree, walked)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.name)
	}
	return names, nil
}
