package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Defaults for zero Options fields.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultLogRetention = 10000
	DefaultMaxBatchSize = 256
	DefaultWatchBuffer  = 1024
	DefaultDeferDelay   = 20 * time.Millisecond
	DefaultGatherWait   = time.Millisecond
)

// Options configures Open. The zero value is a good production default.
type Options struct {
	// Timeout is how long Open waits for the file lock while another process
	// holds the database; then it fails with an error wrapping ErrLocked.
	// Zero means DefaultTimeout; a negative value waits forever.
	Timeout time.Duration

	// LogRetention is how many revisions of change log are kept for Watch.
	// Older entries are removed in the same transaction that adds new ones;
	// a Watch from before them fails with a *CompactedError. Zero means
	// DefaultLogRetention.
	LogRetention uint64

	// NoSync skips fsync on commit. Only for tests and benchmarks: a crash
	// may then lose acknowledged commits or corrupt the file.
	NoSync bool

	// MaxBatchSize caps how many concurrent Commit calls share one
	// transaction (group commit): the Commit calls that arrive while a
	// transaction runs and syncs make the next one, up to this many. Zero
	// means DefaultMaxBatchSize; 1 turns group commit off.
	MaxBatchSize int

	// GatherWait is how long the committer waits, after a transaction of N > 1
	// Commit calls, for N callers to be back before it starts the next one:
	// the callers it answered come back one by one, and the first of them
	// should not get a transaction (and two syncs) of its own. Callers that
	// arrive meanwhile all join; a lone client never waits. Zero means
	// DefaultGatherWait; negative never waits.
	GatherWait time.Duration

	// DeferDelay is how long deferred writes (Defer) wait for a Commit to
	// ride along with before they get a transaction of their own. Zero means
	// DefaultDeferDelay.
	DeferDelay time.Duration

	// WatchBuffer is how many events a watcher may hold for a slow consumer
	// before its channel is closed with ErrWatchOverflow: new events that
	// arrive while earlier ones are still queued overflow it when the queue
	// would exceed WatchBuffer (a consumer with nothing queued takes a
	// Commit of any size). Zero means DefaultWatchBuffer. Replays of the
	// change log are paced by the consumer and never overflow.
	WatchBuffer int

	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
}

// Bucket and meta key names.
var (
	bucketMeta  = []byte("meta")
	bucketLog   = []byte("log")
	bucketKinds = []byte("kinds")

	keySchema    = []byte("schema")
	keyRevision  = []byte("revision")
	keyCompacted = []byte("compacted")
)

// Bolt is a Store on one bbolt file. It is safe for concurrent use.
type Bolt struct {
	db          *bolt.DB
	path        string
	log         *slog.Logger
	retention   uint64
	maxBatch    int
	deferDelay  time.Duration
	gatherWait  time.Duration
	watchBuffer int

	reqs    chan *commitReq
	closing chan struct{} // closed by Close
	stopped chan struct{} // closed when the committer has exited

	mu     sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup // watchers

	// deferred writes (Defer), in arrival order, indexed by kind NUL name
	dmu    sync.Mutex
	dqueue []*commitReq
	dindex map[string]int
	dkick  chan struct{} // capacity 1: the deferred queue became non-empty

	rev     atomic.Uint64 // revision of the last acknowledged commit
	batches atomic.Uint64 // transactions run by the committer
	// the committer's figures (Stats)
	commits, deferredN, coalesced atomic.Uint64
	maxSeen, waitNs, busyNs       atomic.Int64
	gathered                      atomic.Int64          // Commit calls in the committer's next batch (tests)
	failed                        atomic.Pointer[error] // set when a write transaction failed
	hub                           hub
}

var _ Store = (*Bolt)(nil)

// Open opens or creates the store at path. The directory must exist. A new
// or empty file is initialised; an older schema is migrated in one
// transaction; a newer schema, a corrupt file or a file held by another
// process is refused with an error naming the path.
func Open(path string, opts Options) (*Bolt, error) {
	if path == "" {
		return nil, fmt.Errorf("store: open: empty path: %w", ErrInvalid)
	}
	if err := checkDir(path); err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.LogRetention == 0 {
		opts.LogRetention = DefaultLogRetention
	}
	if opts.MaxBatchSize <= 0 {
		opts.MaxBatchSize = DefaultMaxBatchSize
	}
	if opts.GatherWait == 0 {
		opts.GatherWait = DefaultGatherWait
	}
	if opts.DeferDelay <= 0 {
		opts.DeferDelay = DefaultDeferDelay
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = DefaultWatchBuffer
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := openBolt(path, opts.Timeout, false, opts.NoSync)
	if err != nil {
		return nil, err
	}
	for _, p := range metaProblems(path) { // read under the lock, before any write
		opts.Logger.Warn("damaged bbolt meta page", "store", path, "problem", p)
	}
	rev, err := prepare(db, path, opts.Logger)
	if err != nil {
		db.Close()
		return nil, err
	}
	b := &Bolt{
		db:          db,
		path:        path,
		log:         opts.Logger.With("store", path),
		retention:   opts.LogRetention,
		maxBatch:    opts.MaxBatchSize,
		deferDelay:  opts.DeferDelay,
		gatherWait:  opts.GatherWait,
		dkick:       make(chan struct{}, 1),
		dindex:      make(map[string]int),
		watchBuffer: opts.WatchBuffer,
		reqs:        make(chan *commitReq, opts.MaxBatchSize),
		closing:     make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	b.rev.Store(rev)
	b.hub.init(rev)
	go b.commitLoop()
	b.log.Debug("store opened", "revision", rev)
	return b, nil
}

func checkDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("store: open %s: directory %s does not exist: %w", path, dir, err)
	case err != nil:
		return fmt.Errorf("store: open %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("store: open %s: %s is not a directory", path, dir)
	}
	return nil
}

// openBolt opens the bbolt file and turns its errors into clear ones. bbolt
// can panic on a damaged file whose meta pages are valid; that is reported
// as corruption too.
func openBolt(path string, timeout time.Duration, readOnly, noSync bool) (db *bolt.DB, err error) {
	if timeout < 0 {
		timeout = 0 // bbolt: wait forever
	}
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, &CorruptError{Path: path, Err: fmt.Errorf("bbolt panicked while opening: %v", p)}
		}
	}()
	// The hashmap freelist is not written at commit (NoFreelistSync, as
	// etcd does): one page less per commit; Open rebuilds it by scanning.
	mode := os.FileMode(0o600)
	db, err = bolt.Open(path, mode, &bolt.Options{
		Timeout:        timeout,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		ReadOnly:       readOnly,
		NoSync:         noSync,
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("store: open %s: %w (gave up after %s)", path, ErrLocked, timeout)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, &CorruptError{Path: path, Err: err}
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EROFS):
		return nil, fmt.Errorf("store: open %s: not writable: %w", path, err)
	}
	return nil, fmt.Errorf("store: open %s: %w", path, err)
}

// view runs fn in a read transaction, mapping a closed database to
// ErrClosed and a bbolt panic (damaged pages) to a *CorruptError.
func (b *Bolt) view(fn func(*bolt.Tx) error) (err error) {
	select {
	case <-b.closing:
		return ErrClosed
	default:
	}
	defer func() {
		if p := recover(); p != nil {
			err = &CorruptError{Path: b.path, Err: fmt.Errorf("bbolt panicked while reading: %v", p)}
		}
	}()
	err = b.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (b *Bolt) corrupt(err error) error {
	return &CorruptError{Path: b.path, Err: err}
}

// Get returns one record, or an error wrapping ErrNotFound.
func (b *Bolt) Get(ctx context.Context, kind, name string) (Record, error) {
	if err := validKindName(kind, name); err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	var rec Record
	err := b.view(func(tx *bolt.Tx) error {
		var v []byte
		if kb := tx.Bucket(bucketKinds).Bucket([]byte(kind)); kb != nil {
			v = kb.Get([]byte(name))
		}
		if v == nil {
			return fmt.Errorf("store: get %s/%s: %w", kind, name, ErrNotFound)
		}
		s, err := decodeRecord(v)
		if err != nil {
			return b.corrupt(fmt.Errorf("%s/%s: %w", kind, name, err))
		}
		rec = Record{Kind: kind, Name: name, Value: s.value, CreateRevision: s.createRev, ModRevision: s.modRev}
		return nil
	})
	return rec, err
}

// List returns the records of kind sorted by name (bytewise) and the store
// revision they were read at.
func (b *Bolt) List(ctx context.Context, kind string) ([]Record, uint64, error) {
	if err := validKind(kind); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var (
		recs []Record
		rev  uint64
	)
	err := b.view(func(tx *bolt.Tx) error {
		var err error
		if rev, err = readU64(tx.Bucket(bucketMeta), keyRevision); err != nil {
			return b.corrupt(err)
		}
		kb := tx.Bucket(bucketKinds).Bucket([]byte(kind))
		if kb == nil {
			return nil
		}
		// Collect in fixed chunks and join once: growing one slice of a
		// large kind copied it over and over.
		var (
			values arena
			chunks [][]Record
			cur    []Record
		)
		err = kb.ForEach(func(k, v []byte) error {
			s, err := parseRecord(v)
			if err != nil {
				return b.corrupt(fmt.Errorf("%s/%s: %w", kind, k, err))
			}
			if len(cur) == cap(cur) {
				cur = make([]Record, 0, 1024)
				chunks = append(chunks, nil)
			}
			cur = append(cur, Record{Kind: kind, Name: string(k), Value: values.copy(s.value),
				CreateRevision: s.createRev, ModRevision: s.modRev})
			chunks[len(chunks)-1] = cur
			return nil
		})
		recs = slices.Concat(chunks...)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return recs, rev, nil
}

// Count returns how many records kind has, without reading their values.
func (b *Bolt) Count(ctx context.Context, kind string) (int, error) {
	if err := validKind(kind); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := b.view(func(tx *bolt.Tx) error {
		if kb := tx.Bucket(bucketKinds).Bucket([]byte(kind)); kb != nil {
			n = kb.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// Revision returns the revision of the last acknowledged Commit.
func (b *Bolt) Revision() uint64 { return b.rev.Load() }

// Path returns the database file's path.
func (b *Bolt) Path() string { return b.path }

// Close stops the committer (pending Commits fail with ErrClosed), closes
// every watch channel and closes the file. It is safe to call more than once.
func (b *Bolt) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.closing)
	b.mu.Unlock()
	<-b.stopped
	b.wg.Wait()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", b.path, err)
	}
	b.log.Debug("store closed")
	return nil
}
