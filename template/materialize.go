package template

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/sys/unix"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
)

// Limits bound what a fetch may hold in memory and what one checkout may write. Zero fields take the defaults.
type Limits struct {
	// MaxFileSize is the largest blob written (default 256 MiB).
	MaxFileSize int64
	// MaxTotalSize is the most bytes one checkout writes, counted over the whole tree (a blob named N times
	// counts N times) before the first byte is written (default 4 GiB).
	MaxTotalSize int64
	// MaxEntries is the most files, symlinks and directories (default 2,000,000).
	MaxEntries int
	// MaxFetchSize is the most pack bytes a template's repository may hold
	// after a fetch; a fetch that grows past it is stopped (default 16 GiB).
	MaxFetchSize int64
	// MaxObjectSize is the largest object (inflated) a fetched pack may hold, checked on the pack's bytes as
	// they arrive, before go-git parses or indexes them; for a delta, its inflated size and the size of the
	// object it makes (default 256 MiB).
	MaxObjectSize int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = 256 << 20
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = 4 << 30
	}
	if l.MaxObjectSize <= 0 {
		l.MaxObjectSize = 256 << 20
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = 2_000_000
	}
	if l.MaxFetchSize <= 0 {
		l.MaxFetchSize = 16 << 30
	}
	return l
}

// Dir is a directory the layout needs that Git cannot store (Git has no
// empty directories and no directory modes): Materialize creates it after the
// checkout, with missing parents as 0755, and sets Mode on it, also when the
// tree already has it. Mode may hold permission bits and the sticky bit,
// written as fs.ModeSticky or the Unix way (0o1777 for tmp, 0o555 for proc,
// 0o750 for root); setuid, setgid (Unix 0o6000 or fs.ModeSetuid/Setgid) and
// file types are refused. An entry of the tree in the way (a file, or a symlink anywhere on
// the path) is an error: symlinks are never followed.
type Dir struct {
	Path string
	Mode fs.FileMode
}

// unixSticky lets callers write the sticky bit the Unix way (01777) as well
// as with fs.ModeSticky.
const unixSticky fs.FileMode = 0o1000

// maxDepth bounds directory nesting (one open descriptor per level).
const maxDepth = 256

// maxSymlinkTarget is the longest symlink target written (PATH_MAX - 1).
const maxSymlinkTarget = 4095

// objectStore is the part of go-git's storage a checkout reads.
type objectStore interface {
	EncodedObject(plumbing.ObjectType, plumbing.Hash) (plumbing.EncodedObject, error)
}

// treeEntry is one raw entry of a Git tree object, before any
// canonicalisation of its mode.
type treeEntry struct {
	mode uint32
	name string
	hash plumbing.Hash
}

// checkout writes a Git tree into a directory, entry by entry, through
// directory file descriptors (openat/mkdirat/symlinkat with O_NOFOLLOW and
// O_EXCL), so a symlink of the tree is never followed and nothing is written
// outside the destination.
//
// The tree walk runs in the calling goroutine, which also streams large
// files; small files are handed to a few writer goroutines, which read
// (inflate) them from the packs (objectReader is safe for concurrent use)
// and hold a reference on the directory descriptor they write into.
type checkout struct {
	ctx      context.Context
	objs     *objectReader
	commit   string
	limits   Limits
	umask    uint32
	entries  int
	files    int
	written  int64
	progress func(files int, bytes int64)

	trashfd int // runFrom: where removed directories go
	trashed int
	jobs    chan writeJob // to the readers
	ready   chan writeJob // from the readers to the writer
	queued  queuedBytes
	wg      sync.WaitGroup
	failed  atomic.Bool
	errMu   sync.Mutex
	werr    error
}

// dirRef is a directory descriptor shared by the walker and the writers;
// the last release closes it.
type dirRef struct {
	fd int
	n  atomic.Int32
}

func newDirRef(fd int) *dirRef {
	d := &dirRef{fd: fd}
	d.n.Store(1)
	return d
}

func (d *dirRef) acquire() { d.n.Add(1) }

func (d *dirRef) release() {
	if d.n.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// maxQueuedBytes bounds the content of the small files handed to the readers and not yet written by the writer
// (counted from their sizes when they are handed over, so it also bounds what the readers and the writer hold).
const maxQueuedBytes = 8 << 20

// queuedBytes counts the bytes handed to the readers and not yet written; add waits while the count is over
// maxQueuedBytes.
type queuedBytes struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int64
}

func (q *queuedBytes) add(n int64) {
	q.mu.Lock()
	if q.cond == nil {
		q.cond = sync.NewCond(&q.mu)
	}
	for q.n > 0 && q.n+n > maxQueuedBytes {
		q.cond.Wait()
	}
	q.n += n
	q.mu.Unlock()
}

func (q *queuedBytes) done(n int64) {
	q.mu.Lock()
	q.n -= n
	if q.cond != nil {
		q.cond.Broadcast()
	}
	q.mu.Unlock()
}

// writeJob is one small file for a writer goroutine.
type writeJob struct {
	dir  *dirRef
	name string
	path string
	mode uint32
	size int64
	hash plumbing.Hash // the blob's object id, which data must hash to
	data []byte        // read by a reader
}

// streamThreshold is the blob size from which a file is streamed by the
// walker itself instead of being read whole by a reader goroutine.
const streamThreshold = 1 << 20

func newCheckout(ctx context.Context, objs *objectReader, commit string, limits Limits, progress func(int, int64)) *checkout {
	return &checkout{ctx: ctx, objs: objs, commit: commit, limits: limits.withDefaults(),
		umask: readUmask(), progress: progress}
}

// readUmask reads the process umask from /proc/self/status without changing
// it (changing it would race with other goroutines); if it cannot be read,
// every mode is set explicitly with fchmod.
func readUmask() uint32 {
	data, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(n)
				}
			}
		}
	}
	return 0o777
}

// run checks the tree out into the directory rootfd (not closed).
func (c *checkout) run(rootfd int, tree plumbing.Hash) error {
	return c.walk(rootfd, tree, func(root *dirRef) error { return c.writeTree(root, tree, "", 0) })
}

// walk measures tree, then runs write on the directory rootfd with the readers and the writer of small files
// running.
func (c *checkout) walk(rootfd int, tree plumbing.Hash, write func(root *dirRef) error) error {
	fd, err := unix.Dup(rootfd)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	// The whole tree is measured first, so that a tree over the limits writes nothing.
	if _, err := c.measure(tree, "", 0, map[plumbing.Hash]treeSize{}); err != nil {
		return err
	}
	c.jobs = make(chan writeJob, 256)
	c.ready = make(chan writeJob, 64)
	var readers sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)) {
		readers.Go(c.reader)
	}
	c.wg.Go(c.writer)
	root := newDirRef(fd)
	err = write(root)
	root.release()
	close(c.jobs)
	readers.Wait()
	close(c.ready)
	c.wg.Wait()
	if err != nil {
		return err
	}
	return c.werr
}

func (c *checkout) setErr(err error) {
	c.errMu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.errMu.Unlock()
	c.failed.Store(true)
}

// reader reads (inflates) the small files the walker hands over and checks each against its blob id.
func (c *checkout) reader() {
	for j := range c.jobs {
		if !c.failed.Load() {
			var err error
			if j.data, err = c.readBlob(treeEntry{name: j.name, hash: j.hash}, j.path, j.size); err == nil {
				h := newBlobHasher(j.size)
				h.Write(j.data)
				err = h.check(j.hash, j.path)
			}
			if err == nil {
				c.ready <- j
				continue
			}
			c.setErr(err)
		}
		j.dir.release()
		c.queued.done(j.size)
	}
}

// writer writes the files the readers checked: one goroutine, since files created at once in the same
// directory by several threads contend for it in the kernel (about five times the CPU per create here).
func (c *checkout) writer() {
	for j := range c.ready {
		if !c.failed.Load() {
			if err := c.writeSmall(j); err != nil {
				c.setErr(err)
			}
		}
		j.dir.release()
		c.queued.done(j.size)
	}
}

func (c *checkout) writeSmall(j writeJob) error {
	fd, err := c.createFile(j.dir.fd, j.name, j.path, j.mode)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := writeAll(fd, j.data); err != nil {
		return fmt.Errorf("%w: write %q: %w", ErrStorage, j.path, err)
	}
	return nil
}

// createFile creates a new regular file with exactly mode (O_EXCL: an
// existing entry of that name, a symlink included, is an error).
func (c *checkout) createFile(dirfd int, name, path string, mode uint32) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return -1, c.exists(err, path)
	}
	if mode&^c.umask != mode {
		if err := unix.Fchmod(fd, mode); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%w: chmod %q: %w", ErrStorage, path, err)
		}
	}
	return fd, nil
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (c *checkout) fail(path string, kind error, format string, args ...any) error {
	return &TreeError{Commit: c.commit, Path: path, Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// readTree parses a tree object by hand, keeping the raw modes so that
// setuid bits or odd modes in crafted trees are seen (go-git's decoder
// canonicalises them away).
//
// Trees are kept in the reader's cache: measure reads each once, writeTree once more.
func (c *checkout) readTree(h plumbing.Hash, path string) ([]treeEntry, error) {
	typ, data, err := c.objs.read(h, true)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %s of %q: %w", ErrStorage, h, path, err)
	}
	if typ != plumbing.TreeObject {
		return nil, fmt.Errorf("%w: tree %s of %q: is a %s, not a tree", ErrStorage, h, path, typ)
	}
	var out []treeEntry
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return nil, c.fail(path, ErrUnsafeTree, "malformed tree object %s: missing mode", h)
		}
		mode, err := strconv.ParseUint(string(data[:sp]), 8, 32)
		if err != nil {
			return nil, c.fail(path, ErrUnsafeMode, "malformed tree object %s: mode %q", h, data[:sp])
		}
		data = data[sp+1:]
		nul := bytes.IndexByte(data, 0)
		if nul < 0 || len(data) < nul+1+20 {
			return nil, c.fail(path, ErrUnsafeTree, "malformed tree object %s: truncated entry", h)
		}
		e := treeEntry{mode: uint32(mode), name: string(data[:nul])}
		copy(e.hash[:], data[nul+1:nul+21])
		data = data[nul+21:]
		out = append(out, e)
	}
	return out, nil
}

// checkName refuses names that cannot be written safely.
func (c *checkout) checkName(name, path string) error {
	switch {
	case name == "":
		return c.fail(path, ErrUnsafeName, "empty file name")
	case name == "." || name == "..":
		return c.fail(path, ErrUnsafeName, "path component %q is not allowed", name)
	case strings.ContainsRune(name, '/'):
		return c.fail(path, ErrUnsafeName, "file name contains '/'")
	case strings.ContainsRune(name, 0):
		return c.fail(path, ErrUnsafeName, "file name contains NUL")
	case !utf8.ValidString(name):
		return c.fail(path, ErrUnsafeName, "file name is not valid UTF-8")
	case strings.EqualFold(name, ".git"):
		return c.fail(path, ErrUnsafeName, "a .git entry inside a tree is not allowed")
	}
	return nil
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// treeSize is what checking a tree out writes: its entries and bytes.
type treeSize struct {
	entries int64
	bytes   int64
}

// measure sums the entries and file bytes of tree h (sizes from the object headers; no blob is read), each
// subtree once however often it is named (memo), and fails at the first limit it passes, so that a small
// repository naming one large blob or subtree many times is refused before anything is written.
func (c *checkout) measure(h plumbing.Hash, path string, depth int, memo map[plumbing.Hash]treeSize) (treeSize, error) {
	if sz, ok := memo[h]; ok {
		return sz, nil
	}
	if depth > maxDepth {
		return treeSize{}, c.fail(path, ErrTooLarge, "directories nested deeper than %d levels", maxDepth)
	}
	entries, err := c.readTree(h, path)
	if err != nil {
		return treeSize{}, err
	}
	var sz treeSize
	for _, e := range entries {
		p := joinPath(path, e.name)
		sz.entries++
		switch e.mode {
		case 0o040000:
			sub, err := c.measure(e.hash, p, depth+1, memo)
			if err != nil {
				return treeSize{}, err
			}
			sz.entries += sub.entries
			sz.bytes += sub.bytes
		case 0o100644, 0o100664, 0o100755:
			size, err := c.blobSize(e, p)
			if err != nil {
				return treeSize{}, err
			}
			if size > c.limits.MaxFileSize {
				return treeSize{}, c.fail(p, ErrTooLarge, "file of %d bytes exceeds the per-file limit of %d bytes", size, c.limits.MaxFileSize)
			}
			sz.bytes += size
		}
		if sz.entries > int64(c.limits.MaxEntries) {
			return treeSize{}, c.fail(p, ErrTooLarge, "more than %d entries (limit MaxEntries)", c.limits.MaxEntries)
		}
		if sz.bytes > c.limits.MaxTotalSize {
			return treeSize{}, c.fail(p, ErrTooLarge, "checking the tree out would write more than the total limit of %d bytes (MaxTotalSize)", c.limits.MaxTotalSize)
		}
	}
	if err := c.ctx.Err(); err != nil {
		return treeSize{}, err
	}
	memo[h] = sz
	return sz, nil
}

// writeTree writes the entries of tree h into the directory dir. It
// returns nil early when a writer failed; run reports that error.
func (c *checkout) writeTree(dir *dirRef, h plumbing.Hash, path string, depth int) error {
	if depth > maxDepth {
		return c.fail(path, ErrTooLarge, "directories nested deeper than %d levels", maxDepth)
	}
	entries, err := c.readTree(h, path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := joinPath(path, e.name)
		if ok, err := c.enter(e, p); !ok {
			return err
		}
		if err := c.writeEntry(dir, e, p, depth); err != nil {
			return err
		}
	}
	return nil
}

// enter checks entry e (at p) of a tree before it is written and counts it; false means stop (with the error,
// or nil when a writer failed: run reports that error).
func (c *checkout) enter(e treeEntry, p string) (bool, error) {
	if err := c.checkName(e.name, p); err != nil {
		return false, err
	}
	if c.failed.Load() {
		return false, nil
	}
	c.entries++
	if c.entries > c.limits.MaxEntries {
		return false, c.fail(p, ErrTooLarge, "more than %d entries (limit MaxEntries)", c.limits.MaxEntries)
	}
	if c.entries%256 == 0 {
		if err := c.ctx.Err(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// writeEntry writes entry e of a tree into the directory dir.
func (c *checkout) writeEntry(dir *dirRef, e treeEntry, p string, depth int) error {
	switch e.mode {
	case 0o040000:
		return c.writeDir(dir.fd, e, p, depth)
	case 0o100644, 0o100664:
		return c.writeFile(dir, e, p, 0o644)
	case 0o100755:
		return c.writeFile(dir, e, p, 0o755)
	case 0o120000:
		return c.writeSymlink(dir.fd, e, p)
	case 0o160000:
		return c.fail(p, ErrSubmodule, "submodule (gitlink to commit %s); vendor its content into the template instead", e.hash)
	default:
		return c.fail(p, ErrUnsafeMode, "mode %06o %s; Git writes only 100644, 100755, 120000, 040000 and 160000, "+
			"and the checkout never sets setuid, setgid or sticky bits from a repository", e.mode, describeMode(e.mode))
	}
}

func describeMode(m uint32) string {
	var parts []string
	if m&0o4000 != 0 {
		parts = append(parts, "setuid")
	}
	if m&0o2000 != 0 {
		parts = append(parts, "setgid")
	}
	if m&0o1000 != 0 {
		parts = append(parts, "sticky")
	}
	switch m & 0o170000 {
	case 0o100000:
		parts = append(parts, "regular file")
	case 0o040000:
		parts = append(parts, "directory")
	case 0o120000:
		parts = append(parts, "symlink")
	case 0o020000:
		parts = append(parts, "character device")
	case 0o060000:
		parts = append(parts, "block device")
	case 0o010000:
		parts = append(parts, "fifo")
	case 0o140000:
		parts = append(parts, "socket")
	default:
		parts = append(parts, "unknown type")
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func (c *checkout) exists(err error, p string) error {
	if errors.Is(err, unix.EEXIST) {
		return c.fail(p, ErrDuplicate, "the tree has two entries of this name")
	}
	return fmt.Errorf("%w: write %q: %w", ErrStorage, p, err)
}

func (c *checkout) writeDir(dirfd int, e treeEntry, p string, depth int) error {
	if err := unix.Mkdirat(dirfd, e.name, 0o755); err != nil {
		return c.exists(err, p)
	}
	fd, err := unix.Openat(dirfd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %q: %w", ErrStorage, p, err)
	}
	sub := newDirRef(fd)
	defer sub.release()
	if 0o755&^c.umask != 0o755 {
		if err := unix.Fchmod(fd, 0o755); err != nil {
			return fmt.Errorf("%w: chmod %q: %w", ErrStorage, p, err)
		}
	}
	return c.writeTree(sub, e.hash, p, depth+1)
}

// blobSize is the size of a blob, from its header (of a delta, from the start of its instructions), without
// inflating it.
func (c *checkout) blobSize(e treeEntry, p string) (int64, error) {
	typ, size, err := c.objs.size(e.hash)
	if err != nil {
		return 0, fmt.Errorf("%w: blob %s of %q missing from the cache: %w", ErrStorage, e.hash, p, err)
	}
	if typ != plumbing.BlobObject {
		return 0, fmt.Errorf("%w: %q: object %s is a %s, not a blob", ErrStorage, p, e.hash, typ)
	}
	return size, nil
}

// readBlob reads a blob of size bytes (as blobSize said) whole.
func (c *checkout) readBlob(e treeEntry, p string, size int64) ([]byte, error) {
	typ, data, err := c.objs.read(e.hash, false)
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s of %q: %w", ErrStorage, e.hash, p, err)
	}
	if typ != plumbing.BlobObject {
		return nil, fmt.Errorf("%w: %q: object %s is a %s, not a blob", ErrStorage, p, e.hash, typ)
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("%w: blob %s of %q: read %d bytes, its header says %d", ErrStorage, e.hash, p, len(data), size)
	}
	return data, nil
}

func (c *checkout) writeFile(dir *dirRef, e treeEntry, p string, mode uint32) error {
	size, err := c.blobSize(e, p)
	if err != nil {
		return err
	}
	if size > c.limits.MaxFileSize {
		return c.fail(p, ErrTooLarge, "file of %d bytes exceeds the per-file limit of %d bytes", size, c.limits.MaxFileSize)
	}
	if c.written+size > c.limits.MaxTotalSize {
		return c.fail(p, ErrTooLarge, "checkout would exceed the total limit of %d bytes", c.limits.MaxTotalSize)
	}
	c.written += size
	c.files++
	if c.progress != nil && c.files%512 == 0 {
		c.progress(c.files, c.written)
	}
	if size < streamThreshold {
		c.queued.add(size)
		dir.acquire()
		c.jobs <- writeJob{dir: dir, name: e.name, path: p, mode: mode, size: size, hash: e.hash}
		return nil
	}
	// Large: stream it here, inflated as it is written (a delta's base is held while it is applied).
	fd, err := c.createFile(dir.fd, e.name, p, mode)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	h := newBlobHasher(size)
	fw := &fdWriter{fd: fd}
	err = c.objs.stream(e.hash, func(typ plumbing.ObjectType, n int64) (io.Writer, error) {
		if typ != plumbing.BlobObject || n != size {
			return nil, fmt.Errorf("%w: blob %s of %q: a %s of %d bytes, its header said a blob of %d", ErrStorage, e.hash, p, typ, n, size)
		}
		return io.MultiWriter(fw, h), nil
	})
	if err != nil {
		return fmt.Errorf("%w: write %q: %w", ErrStorage, p, err)
	}
	if fw.n != size {
		return fmt.Errorf("%w: blob %s of %q: read %d bytes, object header says %d", ErrStorage, e.hash, p, fw.n, size)
	}
	return h.check(e.hash, p)
}

// fdWriter writes to a file descriptor, counting what it wrote.
type fdWriter struct {
	fd int
	n  int64
}

func (w *fdWriter) Write(p []byte) (int, error) {
	if err := writeAll(w.fd, p); err != nil {
		return 0, err
	}
	w.n += int64(len(p))
	return len(p), nil
}

// blobHasher computes a blob's Git object id from the content a checkout writes (as the pack guard does for each
// object it reads), so that a file is never left with bytes other than its object's, whatever reads them from the
// pack: go-git's lazy reader of large delta objects once wrote wrong bytes while every pack check passed.
//
// It is plain SHA-1 (crypto/sha1, with the CPU's SHA instructions), not the collision-detecting SHA-1 go-git's
// Hasher is (about five times slower here): the object ids were computed with collision detection when the pack
// was received (packGuard, packIndexer), and this check compares bytes read back from our own pack with the id
// they were stored under, which a reader's error cannot turn into a collision.
type blobHasher struct{ hash.Hash }

func newBlobHasher(size int64) blobHasher {
	h := sha1.New()
	h.Write(strconv.AppendInt([]byte("blob "), size, 10))
	h.Write([]byte{0})
	return blobHasher{h}
}

// check fails when the content written does not hash to want.
func (h blobHasher) check(want plumbing.Hash, path string) error {
	var got plumbing.Hash
	copy(got[:], h.Sum(nil))
	if got != want {
		return fmt.Errorf("%w: %q: the content read from the pack hashes to %s, not to its object id %s", ErrStorage, path, got, want)
	}
	return nil
}

func (c *checkout) writeSymlink(dirfd int, e treeEntry, p string) error {
	size, err := c.blobSize(e, p)
	if err != nil {
		return err
	}
	if size == 0 || size > maxSymlinkTarget {
		return c.fail(p, ErrUnsafeName, "symlink target of %d bytes (must be 1..%d)", size, maxSymlinkTarget)
	}
	target, err := c.readBlob(e, p, size)
	if err != nil {
		return err
	}
	h := newBlobHasher(size)
	h.Write(target)
	if err := h.check(e.hash, p); err != nil {
		return err
	}
	if bytes.IndexByte(target, 0) >= 0 {
		return c.fail(p, ErrUnsafeName, "symlink target contains NUL")
	}
	// The link is created as a link; nothing ever opens through it here.
	if err := unix.Symlinkat(string(target), dirfd, e.name); err != nil {
		return c.exists(err, p)
	}
	c.files++
	return nil
}

// lookupSubdir finds the tree of a slash-separated subdirectory.
func (c *checkout) lookupSubdir(root plumbing.Hash, subdir string) (plumbing.Hash, error) {
	h := root
	walked := ""
	for comp := range strings.SplitSeq(subdir, "/") {
		entries, err := c.readTree(h, walked)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		walked = joinPath(walked, comp)
		found := false
		for _, e := range entries {
			if e.name != comp {
				continue
			}
			if e.mode != 0o040000 {
				return plumbing.ZeroHash, &FieldError{Field: "subdir",
					Reason: fmt.Sprintf("%q is not a directory in commit %s (mode %06o)", walked, short(c.commit), e.mode)}
			}
			h, found = e.hash, true
			break
		}
		if !found {
			return plumbing.ZeroHash, &FieldError{Field: "subdir",
				Reason: fmt.Sprintf("%q does not exist in commit %s", walked, short(c.commit))}
		}
	}
	return h, nil
}

// checkRelPath checks a slash-separated relative path given by a caller.
func checkRelPath(field, p string) error {
	if p == "" {
		return &FieldError{Field: field, Reason: "empty path"}
	}
	if !utf8.ValidString(p) || strings.ContainsRune(p, 0) {
		return &FieldError{Field: field, Reason: fmt.Sprintf("path %q is not valid UTF-8 or contains NUL", p)}
	}
	if strings.HasPrefix(p, "/") {
		return &FieldError{Field: field, Reason: fmt.Sprintf("path %q must be relative", p)}
	}
	for comp := range strings.SplitSeq(p, "/") {
		if comp == "" || comp == "." || comp == ".." {
			return &FieldError{Field: field, Reason: fmt.Sprintf("path %q has an empty, \".\" or \"..\" component", p)}
		}
	}
	return nil
}

func checkDirs(dirs []Dir) error {
	for i, d := range dirs {
		field := fmt.Sprintf("dirs[%d]", i)
		if err := checkRelPath(field+".path", d.Path); err != nil {
			return err
		}
		if d.Mode&^(fs.ModePerm|fs.ModeSticky|fs.ModeDir|unixSticky) != 0 {
			return &FieldError{Field: field + ".mode",
				Reason: fmt.Sprintf("mode %v of %q: only permission bits and the sticky bit are allowed (no setuid, setgid or file types)", d.Mode, d.Path)}
		}
	}
	return nil
}

// makeDirs creates the layout directories under the root directory fd,
// never following a symlink.
func makeDirs(rootfd int, dirs []Dir, commit string) error {
	for _, d := range dirs {
		comps := strings.Split(d.Path, "/")
		fd, err := unix.Dup(rootfd)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
		walked := ""
		for i, comp := range comps {
			walked = joinPath(walked, comp)
			mode := uint32(0o755)
			if i == len(comps)-1 {
				mode = uint32(d.Mode.Perm())
				if d.Mode&(fs.ModeSticky|unixSticky) != 0 {
					mode |= unix.S_ISVTX
				}
			}
			err := unix.Mkdirat(fd, comp, 0o700)
			created := err == nil
			if err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return fmt.Errorf("%w: mkdir %q: %w", ErrStorage, walked, err)
			}
			next, err := unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			if err != nil {
				if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
					return &TreeError{Commit: commit, Path: walked, Kind: ErrLayout,
						Reason: fmt.Sprintf("layout directory %q needs %q to be a directory, the tree has a file or symlink there", d.Path, walked)}
				}
				return fmt.Errorf("%w: open %q: %w", ErrStorage, walked, err)
			}
			fd = next
			if created || i == len(comps)-1 {
				if err := unix.Fchmod(fd, mode); err != nil {
					unix.Close(fd)
					return fmt.Errorf("%w: chmod %q: %w", ErrStorage, walked, err)
				}
			}
		}
		unix.Close(fd)
	}
	return nil
}

// ReplaceDir puts the finished tree at tmp in target's place, atomically (replaceDir); both must be in the
// same directory. It returns the path where target's old tree now is ("" when there was none), for the caller
// to remove.
func ReplaceDir(tmp, target string) (string, error) {
	parent := filepath.Dir(target)
	if filepath.Dir(tmp) != parent {
		return "", fmt.Errorf("%w: replace %s with %s: not in the same directory", ErrStorage, target, tmp)
	}
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer unix.Close(fd)
	old, err := replaceDir(fd, filepath.Base(tmp), filepath.Base(target))
	if old != "" {
		old = filepath.Join(parent, old)
	}
	return old, err
}

// replaceDir moves the finished tree tmp to target, both names in the
// directory parentfd, atomically: a plain rename when target does not
// exist, an atomic exchange (renameat2 RENAME_EXCHANGE) when it does, after
// which the old tree is at tmp for the caller to remove. On file systems
// without renameat2 flags, target is moved aside first (a short window
// without target). The parent directory is fsynced.
func replaceDir(parentfd int, tmp, target string) (old string, err error) {
	err = unix.Renameat2(parentfd, tmp, parentfd, target, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY):
		if err = unix.Renameat2(parentfd, tmp, parentfd, target, unix.RENAME_EXCHANGE); err != nil {
			return "", fmt.Errorf("%w: exchange %s: %w", ErrStorage, target, err)
		}
		old = tmp
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		aside := tmp + ".old"
		if err = unix.Renameat(parentfd, target, parentfd, aside); err == nil {
			old = aside
		} else if !errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("%w: move %s aside: %w", ErrStorage, target, err)
		}
		if err = unix.Renameat(parentfd, tmp, parentfd, target); err != nil {
			if old != "" {
				unix.Renameat(parentfd, old, parentfd, target)
			}
			return "", fmt.Errorf("%w: rename into %s: %w", ErrStorage, target, err)
		}
	default:
		return "", fmt.Errorf("%w: rename into %s: %w", ErrStorage, target, err)
	}
	if err := unix.Fsync(parentfd); err != nil {
		return old, fmt.Errorf("%w: fsync of the parent of %s: %w", ErrStorage, target, err)
	}
	return old, nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return nil
}
