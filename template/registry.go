// Package template is BitBuilder's template registry: Git repositories of
// templates fetched with go-git into a cache of bare repositories, pinned to
// commits, and checked out ("materialized") into tenant trees.
//
// The cache lives in Config.Dir:
//
//	Dir/index.json          the records of all templates (written atomically)
//	Dir/repos/<name>.git/   one bare repository per template
//	Dir/tmp/                scratch space for fetches and validation checkouts
//	Dir/lock                flock'ed by the one Registry using the cache
//
// Each bare repository holds the remote's branches (refs/heads/*) and tags
// (refs/tags/*) as last fetched, and a ref refs/bitbuilder/pins/<commit> for
// every commit ever pinned, so that pinned and previously pinned commits stay
// in the cache even when the remote force-pushes or deletes branches, and
// Materialize never needs the network.
//
// Add, Update and Pin move a pin only after the commit's metadata.json parses,
// its tree can be checked out safely, and the injected validator (if any)
// finds no errors. A failure leaves the cache and the index as they were.
//
// Use from the daemon: New once at start-up (it takes an exclusive lock on
// the cache) and Close at exit; Add and Update with a progress callback that
// sends Varlink "more" replies; Remove with a callback that asks the store
// which tenants use the template; Materialize from the reconciler, which
// needs no network. Errors map onto Varlink errors as listed in errors.go.
// Fetches honour ctx only: give Add and Update a context with a deadline.
//
// Local paths and file:// URLs are served by the git CLI's git-upload-pack,
// which go-git runs; the other transports are go-git's own.
package template

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/names"
	"github.com/bitbuilder/bitbuilder/template/metadata"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"golang.org/x/sys/unix"
)

// Config configures a Registry.
type Config struct {
	// Dir is the cache directory, e.g. /var/lib/bitbuilder/templates. It is
	// created (0700) if missing.
	Dir string
	// SSHKeyPath is the private key (unencrypted, OpenSSH or PEM format)
	// for ssh:// and scp-style URLs. Host keys are checked against the file
	// known_hosts in the same directory, which must exist: there is no
	// trust on first use.
	SSHKeyPath string
	// CABundle holds extra PEM certificates trusted for https:// URLs, in
	// addition to the system roots.
	CABundle []byte
	// Validate, if set, runs the UAPI validator on a checked-out tree of
	// the given template type and returns the errors it found. A non-empty
	// list refuses the commit. nil means no validation.
	Validate func(ctx context.Context, dir string, kind string) (errorsFound []string, err error)
	// Limits bounds checkouts and fetches; zero fields take defaults.
	Limits Limits
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Template is the record of one template.
type Template struct {
	// Name is the registry name, a hostname label.
	Name string `json:"name"`
	// URL is where the repository is fetched from.
	URL string `json:"url"`
	// Ref is the branch, tag or full commit hash Add and Update follow, as
	// given; empty means the remote's default branch.
	Ref string `json:"ref"`
	// ResolvedRef is the full ref name Ref resolved to at the last fetch,
	// e.g. refs/heads/main; empty when Ref is a commit hash.
	ResolvedRef string `json:"resolvedRef,omitempty"`
	// Commit is the pinned commit.
	Commit string `json:"commit"`
	// PreviousCommits are the commits pinned before, newest first (at most 32).
	PreviousCommits []string `json:"previousCommits"`
	// Type, Version and MetadataName come from the pinned commit's metadata.json.
	Type         metadata.Type `json:"type"`
	Version      string        `json:"version"`
	MetadataName string        `json:"metadataName"`
	// AddedAt is when the template was added, UpdatedAt when the pin last
	// moved, FetchedAt when the remote was last fetched.
	AddedAt   time.Time `json:"addedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	FetchedAt time.Time `json:"fetchedAt"`
}

const maxPreviousCommits = 32

// pinRefPrefix is the namespace of the refs that keep pinned commits.
const pinRefPrefix = "refs/bitbuilder/pins/"

// maxMetadataSize bounds metadata.json.
const maxMetadataSize = 1 << 20

// Registry is the template registry. Its methods are safe for concurrent
// use; operations that change one template (Add, Update, Pin, Remove) are
// serialised per template, and a concurrent second one gets ErrBusy.
// Materialize may run while Update fetches.
type Registry struct {
	dir      string
	cfg      Config
	limits   Limits
	log      *slog.Logger
	lockFile *os.File

	mu        sync.Mutex
	idx       map[string]Template
	busy      map[string]bool
	repoLocks map[string]*sync.RWMutex

	// cleanup tracks background removals of verified scratch trees.
	cleanup sync.WaitGroup
}

// New opens (or creates) the cache in cfg.Dir, takes its lock, loads
// index.json and removes leftovers of interrupted operations: repositories
// that are not in the index and everything under tmp/.
func New(cfg Config) (*Registry, error) {
	if cfg.Dir == "" || !filepath.IsAbs(cfg.Dir) {
		return nil, &FieldError{Field: "Config.Dir", Reason: fmt.Sprintf("%q must be an absolute path", cfg.Dir)}
	}
	dir := filepath.Clean(cfg.Dir)
	for _, d := range []string{dir, filepath.Join(dir, "repos"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStorage, err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: template cache %s is in use by another registry: %w", ErrBusy, dir, err)
	}
	idx, err := loadIndex(dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{dir: dir, cfg: cfg, limits: cfg.Limits.withDefaults(), log: log, lockFile: lock,
		idx: idx, busy: map[string]bool{}, repoLocks: map[string]*sync.RWMutex{}}
	r.cleanStale()
	return r, nil
}

// Close waits for background cleanup and releases the cache lock. The
// Registry must not be used afterwards.
func (r *Registry) Close() error {
	r.cleanup.Wait()
	return r.lockFile.Close()
}

func (r *Registry) cleanStale() {
	repos := filepath.Join(r.dir, "repos")
	entries, _ := os.ReadDir(repos)
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".git")
		if _, known := r.idx[name]; ok && known {
			continue
		}
		r.log.Info("removing leftover repository from the template cache", "path", e.Name())
		os.RemoveAll(filepath.Join(repos, e.Name()))
	}
	// tmp/ holds the kept trees of a clean shutdown too, which can be large: they are moved aside at once and
	// removed in the background, so that start-up does not wait for that (Close does).
	tmp := filepath.Join(r.dir, "tmp")
	entries, _ = os.ReadDir(tmp)
	if len(entries) == 0 {
		return
	}
	trash, err := os.MkdirTemp(tmp, "stale-")
	for _, e := range entries {
		if err != nil || os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(trash, e.Name())) != nil {
			os.RemoveAll(filepath.Join(tmp, e.Name()))
		}
	}
	if err == nil {
		r.dropTree(trash)
	}
}

func (r *Registry) repoPath(name string) string {
	return filepath.Join(r.dir, "repos", name+".git")
}

// checkName enforces the name rule: a hostname label (names.CheckLabel).
func checkName(name string) error {
	var le *names.LabelError
	if errors.As(names.CheckLabel(name), &le) {
		return &NameError{Name: name, Reason: le.Reason()}
	}
	return nil
}

// begin marks name busy for a changing operation. With mustExist it
// returns the current record.
func (r *Registry) begin(name string, mustExist bool) (Template, func(), error) {
	if err := checkName(name); err != nil {
		return Template{}, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.idx[name]
	switch {
	case mustExist && !ok:
		return Template{}, nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	case !mustExist && ok:
		return Template{}, nil, fmt.Errorf("%w: %s (url %s)", ErrExists, name, RedactURL(t.URL))
	case r.busy[name] && !mustExist:
		return Template{}, nil, fmt.Errorf("%w: %s is being added", ErrExists, name)
	case r.busy[name]:
		return Template{}, nil, fmt.Errorf("%w: another operation on %s is running", ErrBusy, name)
	}
	r.busy[name] = true
	return t, func() {
		r.mu.Lock()
		delete(r.busy, name)
		r.mu.Unlock()
	}, nil
}

func (r *Registry) repoLock(name string) *sync.RWMutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.repoLocks[name]
	if !ok {
		l = &sync.RWMutex{}
		r.repoLocks[name] = l
	}
	return l
}

// commitIndex stores t in the index file and in memory. On failure
// nothing changes.
func (r *Registry) commitIndex(t Template, remove bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[string]Template, len(r.idx)+1)
	for k, v := range r.idx {
		next[k] = v
	}
	if remove {
		delete(next, t.Name)
	} else {
		next[t.Name] = t
	}
	if err := saveIndex(r.dir, next); err != nil {
		return err
	}
	r.idx = next
	return nil
}

// Get returns the record of a template.
func (r *Registry) Get(name string) (Template, error) {
	if err := checkName(name); err != nil {
		return Template{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.idx[name]
	if !ok {
		return Template{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return cloneTemplate(t), nil
}

// List returns all templates in name order.
func (r *Registry) List() []Template {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Template, 0, len(r.idx))
	for _, t := range r.idx {
		out = append(out, cloneTemplate(t))
	}
	slices.SortFunc(out, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func cloneTemplate(t Template) Template {
	t.PreviousCommits = slices.Clone(t.PreviousCommits)
	t.URL = RedactURL(t.URL)
	return t
}

// objectCacheSize bounds the objects a repository's go-git storage keeps in memory once read (go-git's default
// is 96 MiB), and, apart, the trees and delta bases a checkout's objectReader keeps. A checkout reads each blob
// once; what a cache serves again is trees and delta bases.
const objectCacheSize = 16 * cache.MiByte

// largeObjectThreshold is the size over which go-git's storage would read an object lazily from its pack
// instead of inflating it whole: 0, never. Its lazy reader of delta objects wrote wrong bytes for real binaries
// (TestCheckoutMatchesGit; at 16 KiB every machine root had broken executables, at 1 MiB the larger ones). go-git
// now reads only commits, tags and refs here (checkouts read through objectReader, which streams a file while
// holding only its delta base, and checks every file against its object id as it is written: blobHasher).
const largeObjectThreshold = 0

// openStore opens a bare repository's storage. Call Close on it.
func openStore(path string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(path), cache.NewObjectLRU(objectCacheSize),
		filesystem.Options{KeepDescriptors: true, LargeObjectThreshold: largeObjectThreshold})
}

// cachedCommit reads a commit of template t from its cache.
func cachedCommit(st *filesystem.Storage, t Template, h plumbing.Hash) (*object.Commit, error) {
	c, err := object.GetCommit(st, h)
	if err != nil {
		return nil, &RefError{URL: t.URL, Ref: h.String(), Reason: fmt.Sprintf("commit not in the cache of template %s: %v", t.Name, err)}
	}
	return c, nil
}

// Add fetches url into a new bare repository in the cache, resolves ref (a
// branch, a tag, a full ref name or a full commit hash; empty means the
// remote's default branch; a short name is looked up as refs/<ref>,
// refs/tags/<ref>, then refs/heads/<ref>, in Git's order), checks the
// commit out into a scratch directory, parses metadata.json, runs the
// validator and pins the commit. progress (may be nil) is called from the
// calling goroutine or the fetch's, never concurrently. On any failure
// nothing is left in the cache.
func (r *Registry) Add(ctx context.Context, name, url, ref string, progress func(Progress)) (Template, error) {
	url, err := checkURL(url)
	if err != nil {
		return Template{}, err
	}
	if err := checkRef(ref); err != nil {
		return Template{}, err
	}
	_, release, err := r.begin(name, false)
	if err != nil {
		return Template{}, err
	}
	defer release()
	log := r.log.With("template", name, "url", url)
	rep := newReporter(progress)

	tmpRepo, err := os.MkdirTemp(filepath.Join(r.dir, "repos"), "."+name+".new-")
	if err != nil {
		return Template{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmpRepo)
		}
	}()
	st := openStore(tmpRepo)
	defer st.Close()
	repo, err := git.Init(guard(st, r.limits), nil)
	if err != nil {
		return Template{}, fmt.Errorf("%w: init %s: %w", ErrStorage, tmpRepo, err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url},
		Fetch: fetchRefSpecs}); err != nil {
		return Template{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}

	fr, err := r.fetch(ctx, repo, tmpRepo, url, rep, ref == "")
	if err != nil {
		return Template{}, err
	}
	refName, commit, err := r.resolve(st, fr, url, ref)
	if err != nil {
		return Template{}, err
	}
	md, tree, err := r.verify(ctx, name, st, commit, "", rep)
	if err != nil {
		return Template{}, err
	}
	defer func() {
		if !done {
			r.dropTree(tree)
		}
	}()
	rep.setPhase(PhasePinning, "pinning "+commit.String())
	if err := pinRef(st, commit); err != nil {
		return Template{}, err
	}
	st.Close()
	if err := syncFS(tmpRepo); err != nil {
		return Template{}, err
	}
	final := r.repoPath(name)
	if err := os.RemoveAll(final); err != nil { // a leftover, since name is not in the index
		return Template{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := os.Rename(tmpRepo, final); err != nil {
		return Template{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		os.RemoveAll(final)
		return Template{}, err
	}
	now := time.Now().UTC()
	t := Template{Name: name, URL: url, Ref: ref, ResolvedRef: refName, Commit: commit.String(),
		PreviousCommits: []string{}, Type: md.Template.Type, Version: md.Template.Version,
		MetadataName: md.Template.Name, AddedAt: now, UpdatedAt: now, FetchedAt: now}
	if err := r.commitIndex(t, false); err != nil {
		os.RemoveAll(final)
		return Template{}, err
	}
	done = true
	r.keepTree(name, t.Commit, tree)
	log.Info("template added", "commit", t.Commit, "ref", refName, "type", t.Type, "version", t.Version)
	return cloneTemplate(t), nil
}

// Update fetches the template's remote again (forced: branches that were
// force-pushed move, deleted branches and tags disappear from the cache but
// pinned commits stay) and moves the pin to the commit Ref now resolves
// to, if that commit parses and validates. Otherwise the pin stays and the
// error says why (*RefError with Deleted for a ref the remote no longer
// has). When Ref resolves to the pinned commit, nothing changes but
// FetchedAt.
func (r *Registry) Update(ctx context.Context, name string, progress func(Progress)) (Template, error) {
	t, release, err := r.begin(name, true)
	if err != nil {
		return Template{}, err
	}
	defer release()
	log := r.log.With("template", name, "url", RedactURL(t.URL))
	rep := newReporter(progress)
	path := r.repoPath(name)
	st := openStore(path)
	defer st.Close()
	repo, err := git.Open(guard(st, r.limits), nil)
	if err != nil {
		return Template{}, fmt.Errorf("%w: open %s: %w", ErrStorage, path, err)
	}
	var oldHead plumbing.Hash // the followed ref as last fetched
	if t.ResolvedRef != "" {
		if ref, err := st.Reference(plumbing.ReferenceName(t.ResolvedRef)); err == nil {
			oldHead, _ = peel(st, ref.Hash())
		}
	}
	fr, err := r.fetch(ctx, repo, path, t.URL, rep, t.Ref == "")
	if err != nil {
		return Template{}, fmt.Errorf("%w (pin stays at %s)", err, short(t.Commit))
	}
	refName, commit, err := r.resolve(st, fr, t.URL, t.Ref)
	if err != nil {
		var re *RefError
		if errors.As(err, &re) && t.ResolvedRef != "" && !fr.has(t.ResolvedRef) {
			re.Deleted = true
			re.Reason = fmt.Sprintf("%s no longer exists at the remote (deleted or renamed upstream); the pin stays at %s",
				t.ResolvedRef, short(t.Commit))
		}
		return Template{}, err
	}
	t.FetchedAt = time.Now().UTC()
	t.ResolvedRef = refName
	if commit.String() == t.Commit {
		rep.setPhase(PhasePinning, "already pinned to "+commit.String())
		if err := r.commitIndex(t, false); err != nil {
			return Template{}, err
		}
		return cloneTemplate(t), nil
	}
	if forced, err := isForcePush(st, oldHead, commit); err == nil && forced && refName == t.ResolvedRef {
		msg := fmt.Sprintf("%s was force-pushed: %s (last fetched) is not an ancestor of %s", refName, short(oldHead.String()), short(commit.String()))
		log.Warn("template ref force-pushed", "ref", refName, "old", oldHead.String(), "new", commit.String())
		rep.report(Progress{Phase: PhaseFetching, Message: msg}, true)
	}
	md, tree, err := r.verify(ctx, name, st, commit, t.Commit, rep)
	if err != nil {
		return Template{}, fmt.Errorf("%w (pin stays at %s)", err, short(t.Commit))
	}
	kept := false
	defer func() {
		if !kept {
			r.dropTree(tree)
		}
	}()
	rep.setPhase(PhasePinning, "pinning "+commit.String())
	if err := pinRef(st, commit); err != nil {
		return Template{}, err
	}
	if err := syncFS(path); err != nil {
		return Template{}, err
	}
	t = movePin(t, commit.String(), md)
	if err := r.commitIndex(t, false); err != nil {
		return Template{}, err
	}
	kept = true
	r.keepTree(name, t.Commit, tree)
	log.Info("template updated", "commit", t.Commit, "previous", t.PreviousCommits[0])
	return cloneTemplate(t), nil
}

// Pin pins the template to commit (a full hash of a commit in the cache, e.g.
// a previous pin, for a rollback), after it parses and validates. It does
// not use the network.
func (r *Registry) Pin(ctx context.Context, name, commit string) (Template, error) {
	t, release, err := r.begin(name, true)
	if err != nil {
		return Template{}, err
	}
	defer release()
	h, err := checkCommit(commit)
	if err != nil {
		return Template{}, err
	}
	if commit == t.Commit {
		return cloneTemplate(t), nil
	}
	st := openStore(r.repoPath(name))
	defer st.Close()
	if _, err := cachedCommit(st, t, h); err != nil {
		return Template{}, err
	}
	md, tree, err := r.verify(ctx, name, st, h, t.Commit, nil)
	if err != nil {
		return Template{}, fmt.Errorf("%w (pin stays at %s)", err, short(t.Commit))
	}
	kept := false
	defer func() {
		if !kept {
			r.dropTree(tree)
		}
	}()
	if err := pinRef(st, h); err != nil {
		return Template{}, err
	}
	if err := syncFS(r.repoPath(name)); err != nil {
		return Template{}, err
	}
	t = movePin(t, commit, md)
	if err := r.commitIndex(t, false); err != nil {
		return Template{}, err
	}
	kept = true
	r.keepTree(name, t.Commit, tree)
	r.log.Info("template pinned", "template", name, "commit", commit, "previous", t.PreviousCommits[0])
	return cloneTemplate(t), nil
}

func movePin(t Template, commit string, md *metadata.Metadata) Template {
	prev := []string{t.Commit}
	for _, c := range t.PreviousCommits {
		if c != commit && c != t.Commit {
			prev = append(prev, c)
		}
	}
	if len(prev) > maxPreviousCommits {
		prev = prev[:maxPreviousCommits]
	}
	t.PreviousCommits = prev
	t.Commit = commit
	t.Type, t.Version, t.MetadataName = md.Template.Type, md.Template.Version, md.Template.Name
	t.UpdatedAt = time.Now().UTC()
	return t
}

// Remove deletes a template and its repository from the cache, unless
// inUse (may be nil) names tenants that use it: then *InUseError, and
// nothing changes.
func (r *Registry) Remove(ctx context.Context, name string, inUse func(name string) []string) error {
	t, release, err := r.begin(name, true)
	if err != nil {
		return err
	}
	defer release()
	if inUse != nil {
		if tenants := inUse(name); len(tenants) > 0 {
			return &InUseError{Name: name, Tenants: slices.Sorted(slices.Values(tenants))}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l := r.repoLock(name)
	l.Lock()
	defer l.Unlock()
	if err := r.commitIndex(t, true); err != nil {
		return err
	}
	r.dropKept(name)
	// Move the repository out of repos/ first so that a half-deleted one is
	// never found there; tmp/ is emptied on the next New anyway.
	trash, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "removed-"+name+"-")
	if err == nil {
		if err = os.Rename(r.repoPath(name), filepath.Join(trash, "repo")); err == nil {
			err = os.RemoveAll(trash)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("removing template repository", "template", name, "err", err)
	}
	r.log.Info("template removed", "template", name)
	return nil
}

// verify checks that commit can be used: metadata.json parses, the tree
// checks out safely within the limits, and the validator finds no errors. It
// returns the verified tree (a directory in tmp/), which the caller keeps with
// keepTree once the pin moved, or drops with dropTree. When from (the pinned
// commit, "" for none) still has its kept tree, that tree is taken and changed
// into commit's (checkout.runFrom: only what differs is written); otherwise
// the whole tree is checked out. Either way from's kept tree is gone after.
func (r *Registry) verify(ctx context.Context, name string, st *filesystem.Storage, commit plumbing.Hash, from string, rep *reporter) (*metadata.Metadata, string, error) {
	c, err := object.GetCommit(st, commit)
	if err != nil {
		return nil, "", fmt.Errorf("%w: commit %s: %w", ErrStorage, commit, err)
	}
	objs, err := openObjects(st, r.limits)
	if err != nil {
		return nil, "", err
	}
	defer objs.close()
	co := newCheckout(ctx, objs, commit.String(), r.limits, nil)
	md, err := readMetadata(co, c.TreeHash)
	if err != nil {
		return nil, "", err
	}
	rep.setPhase(PhaseCheckout, "checking out "+commit.String())
	dir, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "verify-"+name+"-")
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrStorage, err)
	}
	verified := false
	defer func() {
		if !verified {
			os.RemoveAll(dir)
		}
	}()
	co.progress = func(files int, bytes int64) {
		rep.report(Progress{Phase: PhaseCheckout, Objects: files, Bytes: bytes, Message: fmt.Sprintf("checked out %d files", files)}, false)
	}
	if err := r.checkoutFrom(co, name, st, from, c.TreeHash, dir); err != nil {
		return nil, "", err
	}
	rep.report(Progress{Phase: PhaseCheckout, Objects: co.files, Bytes: co.written,
		Message: fmt.Sprintf("checked out %d files, %d bytes", co.files, co.written)}, true)
	if r.cfg.Validate != nil {
		rep.setPhase(PhaseValidating, fmt.Sprintf("validating %s template", md.Template.Type))
		found, err := r.cfg.Validate(ctx, dir, string(md.Template.Type))
		if err != nil {
			return nil, "", fmt.Errorf("validator on commit %s: %w", short(commit.String()), err)
		}
		if len(found) > 0 {
			return nil, "", &ValidationError{Name: name, Commit: commit.String(), Errors: found}
		}
	}
	verified = true
	return md, dir, nil
}

// The verified tree of a template's pinned commit is kept in tmp/ as "kept-<commit>-<name>" until a
// Materialize of that commit takes it (renames it into place instead of checking the commit out again), the
// pin moves, or the template is removed; New empties tmp/, so a restart drops it. Every change of a kept tree
// is a rename: taking it, and moving it aside to remove it, so neither ever sees the other's half-done work.
const keptPrefix = "kept-"

func (r *Registry) keptPath(name, commit string) string {
	return filepath.Join(r.dir, "tmp", keptPrefix+commit+"-"+name)
}

// keepTree keeps dir, verified for commit, as name's kept tree, and drops any other kept tree of name.
func (r *Registry) keepTree(name, commit, dir string) {
	r.dropKept(name)
	if err := os.Rename(dir, r.keptPath(name, commit)); err != nil {
		r.dropTree(dir)
	}
}

// dropTree removes a scratch tree in the background, so that Add and Update return sooner; Close waits for
// it, and New empties tmp/ after a crash.
func (r *Registry) dropTree(dir string) {
	r.cleanup.Go(func() { os.RemoveAll(dir) })
}

// dropKept drops the kept trees of name, moving each aside first.
func (r *Registry) dropKept(name string) {
	tmp := filepath.Join(r.dir, "tmp")
	es, _ := os.ReadDir(tmp)
	for _, e := range es {
		rest, ok := strings.CutPrefix(e.Name(), keptPrefix)
		if !ok || len(rest) < 42 || rest[40] != '-' || rest[41:] != name {
			continue
		}
		if aside, err := os.MkdirTemp(tmp, "drop-"); err == nil {
			if os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(aside, "tree")) != nil {
				os.Remove(aside)
				continue
			}
			r.dropTree(aside)
		}
	}
}

// takeKept moves subdir ("" for the root) of name's kept tree of commit onto the empty directory dest,
// consuming the kept tree, and reports whether it did. It fails over to a checkout (false) when there is no
// such tree, another Materialize took it first, or dest is on another file system.
func (r *Registry) takeKept(name, commit, subdir, dest string) bool {
	tmp := filepath.Join(r.dir, "tmp")
	claim, err := os.MkdirTemp(tmp, "take-")
	if err != nil {
		return false
	}
	defer r.dropTree(claim)
	if err := os.Rename(r.keptPath(name, commit), filepath.Join(claim, "tree")); err != nil {
		return false
	}
	src := filepath.Join(claim, "tree", filepath.FromSlash(subdir))
	if fi, err := os.Lstat(src); err != nil || !fi.IsDir() {
		return false
	}
	// rename(2) replaces the empty directory dest (os.Rename refuses to).
	return unix.Rename(src, dest) == nil
}

// checkoutFrom checks tree out into the empty directory dir, starting from the kept tree of commit from when
// there is one (see verify).
func (r *Registry) checkoutFrom(co *checkout, name string, st *filesystem.Storage, from string, tree plumbing.Hash, dir string) error {
	if from == "" || !r.takeKept(name, from, "", dir) {
		return writeInto(co, tree, dir)
	}
	old, err := object.GetCommit(st, plumbing.NewHash(from))
	if err != nil {
		return fmt.Errorf("%w: commit %s: %w", ErrStorage, from, err)
	}
	trash, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "drop-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer r.dropTree(trash)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrStorage, dir, err)
	}
	defer unix.Close(fd)
	trashfd, err := unix.Open(trash, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrStorage, trash, err)
	}
	defer unix.Close(trashfd)
	return co.runFrom(fd, old.TreeHash, tree, trashfd)
}

// writeInto checks tree out into the existing directory dir.
func writeInto(co *checkout, tree plumbing.Hash, dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrStorage, dir, err)
	}
	defer unix.Close(fd)
	return co.run(fd, tree)
}

// readMetadata reads and parses metadata.json at the root of a tree.
func readMetadata(co *checkout, tree plumbing.Hash) (*metadata.Metadata, error) {
	entries, err := co.readTree(tree, "")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.name != "metadata.json" {
			continue
		}
		if e.mode != 0o100644 && e.mode != 0o100755 && e.mode != 0o100664 {
			return nil, &MetadataError{Commit: co.commit, Path: "metadata.json",
				Err: fmt.Errorf("must be a regular file, has mode %06o %s", e.mode, describeMode(e.mode))}
		}
		size, err := co.blobSize(e, "metadata.json")
		if err != nil {
			return nil, err
		}
		if size > maxMetadataSize {
			return nil, &MetadataError{Commit: co.commit, Path: "metadata.json",
				Err: fmt.Errorf("%d bytes, more than the limit of %d", size, maxMetadataSize)}
		}
		data, err := co.readBlob(e, "metadata.json", size)
		if err != nil {
			return nil, err
		}
		md, err := metadata.Parse(data)
		if err != nil {
			return nil, &MetadataError{Commit: co.commit, Path: "metadata.json", Err: err}
		}
		return md, nil
	}
	return nil, &MetadataError{Commit: co.commit, Path: "metadata.json", Err: errors.New("missing at the root of the tree")}
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// syncFS flushes the file system holding path (syncfs), so that what a
// fetch wrote is on disk before the index points at it.
func syncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("%w: syncfs %s: %w", ErrStorage, path, err)
	}
	return nil
}

func pinRef(st *filesystem.Storage, commit plumbing.Hash) error {
	ref := plumbing.NewHashReference(plumbing.ReferenceName(pinRefPrefix+commit.String()), commit)
	if err := st.SetReference(ref); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return nil
}

// checkCommit checks a full lowercase hexadecimal SHA-1.
func checkCommit(c string) (plumbing.Hash, error) {
	if len(c) != 40 || strings.Trim(c, "0123456789abcdef") != "" {
		return plumbing.ZeroHash, &FieldError{Field: "commit", Reason: fmt.Sprintf("%q is not a full 40-digit lowercase hexadecimal commit hash", c)}
	}
	return plumbing.NewHash(c), nil
}

// Materialize checks out commit (a full hash; "" means the pinned commit)
// of template name, or its subdirectory subdir (slash-separated, e.g.
// "rootfs"; "" for the whole tree), into target (an absolute path whose
// parent exists), then creates dirs. It writes into a temporary directory
// beside target, syncs the file system (syncfs) and then moves it into place
// atomically, replacing an existing target directory only on success; on
// failure target is untouched and nothing else is left behind. Files get
// mode 0644 or 0755 (Git stores nothing else; setuid, setgid and sticky bits
// in a tree are refused, never applied); symlinks are created as symlinks and
// never followed, whatever they point at; submodules, unsafe names ("..",
// ".git", "/", NUL, invalid UTF-8) and blobs over the limits are refused,
// naming the path. It works from the cache only, without the network. Only
// one Materialize per target may run at a time.
func (r *Registry) Materialize(ctx context.Context, name, commit, subdir, target string, dirs []Dir) error {
	t, err := r.Get(name)
	if err != nil {
		return err
	}
	if commit == "" {
		commit = t.Commit
	}
	h, err := checkCommit(commit)
	if err != nil {
		return err
	}
	if subdir != "" {
		if err := checkRelPath("subdir", subdir); err != nil {
			return err
		}
	}
	if err := checkDirs(dirs); err != nil {
		return err
	}
	if !filepath.IsAbs(target) || filepath.Clean(target) != target || target == "/" {
		return &FieldError{Field: "target", Reason: fmt.Sprintf("%q must be a clean absolute path other than /", target)}
	}
	if within(target, r.dir) || within(r.dir, target) {
		return &FieldError{Field: "target", Reason: fmt.Sprintf("%s overlaps the template cache %s", target, r.dir)}
	}
	parent, base := filepath.Dir(target), filepath.Base(target)
	parentfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &FieldError{Field: "target", Reason: fmt.Sprintf("parent directory %s: %v", parent, err)}
	}
	defer unix.Close(parentfd)
	var stat unix.Stat_t
	if err := unix.Fstatat(parentfd, base, &stat, unix.AT_SYMLINK_NOFOLLOW); err == nil && stat.Mode&unix.S_IFMT != unix.S_IFDIR {
		return &FieldError{Field: "target", Reason: fmt.Sprintf("%s exists and is not a directory (mode %06o); only a directory is replaced", target, stat.Mode)}
	} else if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: %s: %w", ErrStorage, target, err)
	}

	l := r.repoLock(name)
	l.RLock()
	defer l.RUnlock()
	if _, err := r.Get(name); err != nil { // removed while we waited
		return err
	}
	st := openStore(r.repoPath(name))
	defer st.Close()
	c, err := cachedCommit(st, t, h)
	if err != nil {
		return err
	}
	objs, err := openObjects(st, r.limits)
	if err != nil {
		return err
	}
	defer objs.close()
	co := newCheckout(ctx, objs, commit, r.limits, nil)
	tree := c.TreeHash
	if subdir != "" {
		if tree, err = co.lookupSubdir(tree, subdir); err != nil {
			return err
		}
	}

	// Leftovers of an interrupted Materialize of the same target.
	if es, err := os.ReadDir(parent); err == nil {
		for _, e := range es {
			if strings.HasPrefix(e.Name(), "."+base+".new-") {
				os.RemoveAll(filepath.Join(parent, e.Name()))
			}
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".new-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	tmpName := filepath.Base(tmp)
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	// The tree verified when the commit was pinned, if it is still kept, is this checkout already.
	took := r.takeKept(name, commit, subdir, tmp)
	fd, err := unix.Openat(parentfd, tmpName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if !took {
		if err := co.run(fd, tree); err != nil {
			return err
		}
	}
	if err := makeDirs(fd, dirs, commit); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// One syncfs for the whole tree instead of an fsync per file.
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("%w: syncfs: %w", ErrStorage, err)
	}
	old, err := replaceDir(parentfd, tmpName, base)
	if err != nil {
		return err
	}
	ok = true
	if old != "" {
		if err := os.RemoveAll(filepath.Join(parent, old)); err != nil {
			r.log.Warn("removing the replaced tree", "template", name, "path", old, "err", err)
		}
	}
	r.log.Info("template materialized", "template", name, "commit", commit, "subdir", subdir,
		"target", target, "files", co.files, "bytes", co.written, "fromVerifiedTree", took)
	return nil
}

// Metadata returns the parsed metadata.json of a commit of the template
// ("" means the pinned commit), from the cache: its requirements (for
// metadata.CheckHost) and defaults.
func (r *Registry) Metadata(name, commit string) (*metadata.Metadata, error) {
	var md *metadata.Metadata
	err := r.withCommit(name, commit, func(co *checkout, tree plumbing.Hash) error {
		var err error
		md, err = readMetadata(co, tree)
		return err
	})
	return md, err
}

// withCommit runs fn on a reader of a commit of the template ("" means the pinned commit) and
// that commit's root tree, from the cache, with the repository read-locked.
func (r *Registry) withCommit(name, commit string, fn func(co *checkout, tree plumbing.Hash) error) error {
	t, err := r.Get(name)
	if err != nil {
		return err
	}
	if commit == "" {
		commit = t.Commit
	}
	h, err := checkCommit(commit)
	if err != nil {
		return err
	}
	l := r.repoLock(name)
	l.RLock()
	defer l.RUnlock()
	st := openStore(r.repoPath(name))
	defer st.Close()
	c, err := cachedCommit(st, t, h)
	if err != nil {
		return err
	}
	objs, err := openObjects(st, r.limits)
	if err != nil {
		return err
	}
	defer objs.close()
	return fn(newCheckout(context.Background(), objs, commit, r.limits, nil), c.TreeHash)
}
