package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error returned by this package wraps one of these or
// is one of the typed errors below; test with errors.Is and errors.As.
var (
	// ErrNotFound is returned by Get for a missing record, and wrapped in an
	// *OpError by Commit when an OpUpdate or OpDelete names a missing record.
	ErrNotFound = errors.New("record not found")

	// ErrExists is wrapped in an *OpError by Commit when an OpCreate names a
	// record that already exists.
	ErrExists = errors.New("record already exists")

	// ErrRevisionMismatch is wrapped in an *OpError by Commit when an op's
	// ExpectRevision differs from the record's ModRevision.
	ErrRevisionMismatch = errors.New("revision mismatch")

	// ErrInvalid is wrapped by errors about bad input: an empty or oversized
	// kind, name or value, an unknown op type, a Commit without ops. Nothing
	// is changed when it is returned.
	ErrInvalid = errors.New("invalid argument")

	// ErrCompacted is the sentinel matched by *CompactedError: the change log
	// no longer holds the revisions a Watch asked for.
	ErrCompacted = errors.New("revision compacted")

	// ErrFutureRevision is returned by Watch when fromRevision is newer than
	// the store's revision.
	ErrFutureRevision = errors.New("revision is in the future")

	// ErrWatchOverflow is reported by WatchErr when a watcher's channel was
	// closed because its consumer fell more than Options.WatchBuffer events
	// behind. Resume with Watch from the last revision received.
	ErrWatchOverflow = errors.New("watch buffer overflow: consumer too slow")

	// ErrClosed is returned by every method called after Close, and by
	// WatchErr for watchers closed by Close.
	ErrClosed = errors.New("store closed")

	// ErrFailed is returned by Commit after a write transaction failed
	// (an I/O error such as a full disk or a failed fsync, or damaged
	// pages). Whether that transaction reached the disk is then unknown, so
	// the store accepts no more commits; reads still work. Close and Open
	// the store again to continue from what is on disk.
	ErrFailed = errors.New("store failed a write and accepts no more commits until reopened")

	// ErrLocked is wrapped when Open (or Check) could not get the file lock
	// within Options.Timeout because another process holds the database.
	ErrLocked = errors.New("database is locked by another process")

	// ErrCorrupt is the sentinel matched by *CorruptError.
	ErrCorrupt = errors.New("database is corrupt")

	// ErrSchemaTooNew is wrapped when the database was written by a newer
	// BitBuilder with a schema version this binary does not know.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary supports")
)

// OpError reports the op of a Commit that failed; nothing of that Commit was
// written. Err wraps ErrExists, ErrNotFound or ErrRevisionMismatch.
type OpError struct {
	Index int   // position of the failing op in the Commit call
	Op    Op    // the failing op
	Err   error // why it failed
}

func (e *OpError) Error() string {
	return fmt.Sprintf("store: op %d (%s %s/%s): %v", e.Index, e.Op.Type, e.Op.Kind, e.Op.Name, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// CompactedError is returned by Watch (and reported by WatchErr) when the
// requested revisions were already removed from the change log. The client
// should List again and Watch from the List revision.
type CompactedError struct {
	Requested uint64 // the fromRevision asked for
	Oldest    uint64 // the oldest revision still in the change log; Watch accepts fromRevision >= Oldest-1
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("store: watch from revision %d: revisions up to %d are compacted, oldest available is %d",
		e.Requested, e.Oldest-1, e.Oldest)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// CorruptError reports a database file that is not a valid bbolt file, fails
// a checksum, or holds data this package cannot decode. The file is left
// untouched.
type CorruptError struct {
	Path string // the database file
	Err  error  // what is wrong
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("store: %s is corrupt (not touched; restore from backup or inspect with bbolt tools): %v", e.Path, e.Err)
}

// Unwrap returns the underlying error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// CheckError is returned by Check and lists every problem found.
type CheckError struct {
	Path     string  // the database file
	Problems []error // each inconsistency, in the order found
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: check %s: %d problem(s)", e.Path, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.Is finds any of them.
func (e *CheckError) Unwrap() []error { return e.Problems }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CheckError) Is(target error) bool { return target == ErrCorrupt }
