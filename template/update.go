package template

import (
	"fmt"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/sys/unix"
)

// runFrom turns the directory rootfd, which holds a checkout of tree old made by this package and not changed
// since (a kept tree), into a checkout of tree, writing only what differs: an entry whose mode and object are
// the same in both trees (a whole subtree, when its tree object is the same) stays as it is; one that differs
// or is new is written as run writes it; one only in old is removed: a file or symlink unlinked, a directory
// moved into the directory trashfd (same file system), for the caller to remove. tree is measured whole first,
// as run does, so that a tree over the limits changes nothing.
func (c *checkout) runFrom(rootfd int, old, tree plumbing.Hash, trashfd int) error {
	c.trashfd = trashfd
	return c.walk(rootfd, tree, func(root *dirRef) error { return c.updateTree(root, old, tree, "", 0) })
}

func (c *checkout) updateTree(dir *dirRef, old, h plumbing.Hash, path string, depth int) error {
	if depth > maxDepth {
		return c.fail(path, ErrTooLarge, "directories nested deeper than %d levels", maxDepth)
	}
	olds, err := c.readTree(old, path)
	if err != nil {
		return err
	}
	entries, err := c.readTree(h, path)
	if err != nil {
		return err
	}
	gone := make(map[string]treeEntry, len(olds))
	for _, o := range olds {
		gone[o.name] = o
	}
	for _, e := range entries {
		p := joinPath(path, e.name)
		if ok, err := c.enter(e, p); !ok {
			return err
		}
		o, had := gone[e.name]
		delete(gone, e.name)
		switch {
		case had && o.mode == e.mode && o.hash == e.hash:
			continue // the same bytes are there
		case had && o.mode == 0o040000 && e.mode == 0o040000:
			fd, err := unix.Openat(dir.fd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("%w: open %q of the previous tree: %w", ErrStorage, p, err)
			}
			sub := newDirRef(fd)
			err = c.updateTree(sub, o.hash, e.hash, p, depth+1)
			sub.release()
			if err != nil {
				return err
			}
			continue
		case had:
			if err := c.remove(dir.fd, o, p); err != nil {
				return err
			}
		}
		if err := c.writeEntry(dir, e, p, depth); err != nil {
			return err
		}
	}
	for _, o := range gone {
		if err := c.remove(dir.fd, o, joinPath(path, o.name)); err != nil {
			return err
		}
	}
	return nil
}

// remove removes entry o of the previous tree from the directory dirfd: a directory is moved into the trash
// (never followed into: rename moves the entry itself), anything else unlinked.
func (c *checkout) remove(dirfd int, o treeEntry, p string) error {
	if o.mode == 0o040000 {
		c.trashed++
		if err := unix.Renameat(dirfd, o.name, c.trashfd, strconv.Itoa(c.trashed)); err != nil {
			return fmt.Errorf("%w: remove %q of the previous tree: %w", ErrStorage, p, err)
		}
		return nil
	}
	if err := unix.Unlinkat(dirfd, o.name, 0); err != nil {
		return fmt.Errorf("%w: remove %q of the previous tree: %w", ErrStorage, p, err)
	}
	return nil
}
