// Package store is BitBuilder's persistent state: named records grouped by
// kind, changed atomically by Commit, each change numbered by a store-wide
// revision and kept in a change log that Watch replays and streams.
//
// The Store interface is backend-neutral: revisions, create/mod revisions,
// compare-on-revision ops and a compacted change log map one to one onto
// etcd. Bolt implements it on a single bbolt file.
//
// What Bolt guarantees:
//
//   - Commit returns a revision only after the transaction is fsync'd; a
//     crash (tested with SIGKILL) loses nothing acknowledged. Every Commit
//     gets its own revision, strictly increasing, with no gaps.
//   - Group commit: concurrent Commit calls share one transaction, but each
//     is evaluated against the state left by the callers before it and is
//     applied only if all its ops pass; a failing caller fails alone.
//   - A Commit that returns an error applied nothing, unless the error
//     wraps ErrFailed (the disk failed mid-write): the store then refuses
//     commits until it is reopened.
//   - Records and change-log entries carry a CRC-32C; damage is reported as
//     a *CorruptError naming the file, never repaired. Check verifies a
//     file offline, Open refuses a newer schema and migrates an older one in
//     one transaction.
//   - Watch never blocks writers: it replays from the change log at the
//     consumer's pace, then takes live events into a bounded buffer; a
//     consumer that falls WatchBuffer events behind loses its channel (see
//     WatchErr) and resumes from the last revision it received.
package store

import (
	"context"
	"fmt"
	"strings"
)

// Limits on record keys and values. Domain rules (hostname-safe names and so
// on) live in the packages that own the kinds.
const (
	MaxKindLen   = 128      // bytes in a kind
	MaxNameLen   = 1024     // bytes in a name
	MaxValueSize = 16 << 20 // bytes in a value
)

// Record is one stored value.
type Record struct {
	Kind, Name     string
	Value          []byte
	CreateRevision uint64 // revision of the Commit that created the record
	ModRevision    uint64 // revision of the Commit that last changed it
}

// OpType says what an Op does.
type OpType int

// Op types.
const (
	OpCreate OpType = iota + 1 // create; fails with ErrExists if present
	OpUpdate                   // replace; fails with ErrNotFound if absent
	OpPut                      // create or replace
	OpDelete                   // delete; fails with ErrNotFound if absent
)

func (t OpType) String() string {
	switch t {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("OpType(%d)", int(t))
}

// Op is one change in a Commit.
type Op struct {
	Type       OpType
	Kind, Name string
	Value      []byte // ignored for OpDelete
	// ExpectRevision, when not 0, must equal the record's ModRevision (0 for
	// an absent record, as seen after the earlier ops of the same Commit),
	// else the Commit fails with ErrRevisionMismatch.
	ExpectRevision uint64
}

// EventType says what an Event reports.
type EventType int

// Event types.
const (
	EventPut    EventType = iota + 1 // a record was created or replaced
	EventDelete                      // a record was deleted
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change delivered by Watch. All events of one Commit share its
// Revision and are delivered in the order of its ops.
type Event struct {
	Type           EventType
	Kind, Name     string
	Value          []byte // the new value; for EventDelete the last value
	Revision       uint64 // revision of the Commit
	CreateRevision uint64 // the record's CreateRevision
}

// Store is BitBuilder's persistent state.
type Store interface {
	// Get returns one record, or an error wrapping ErrNotFound.
	Get(ctx context.Context, kind, name string) (Record, error)

	// List returns the records of a kind sorted by name, and the store
	// revision they were read at (pass it to Watch to follow changes).
	List(ctx context.Context, kind string) ([]Record, uint64, error)

	// Commit applies ops atomically, all or nothing, as one new revision,
	// which it returns once the change is durable. A failing op is reported
	// as an *OpError wrapping ErrExists, ErrNotFound or ErrRevisionMismatch.
	// When Commit returns an error, nothing of it was applied, except for an
	// error wrapping ErrFailed: the storage failed during the write, the
	// outcome is unknown, and the store must be reopened.
	Commit(ctx context.Context, ops ...Op) (uint64, error)

	// Watch replays every event of kind ("" for all kinds) with a Revision
	// greater than fromRevision, then streams new ones, in order, without
	// gaps or duplicates. It fails with a *CompactedError if fromRevision is
	// older than the retained change log. The channel is closed when ctx
	// ends, the store closes, or the consumer falls too far behind; WatchErr
	// tells which. The events of one revision are delivered one after the
	// other; a channel closed for overflow is closed between revisions, so
	// resuming from the Revision of the last event received loses nothing.
	// Event values may be shared between watchers: treat them as read-only.
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan Event, error)

	// WatchErr returns why a channel returned by Watch was closed:
	// ErrWatchOverflow if the consumer was too slow, ErrClosed if the store
	// closed, a *CompactedError or *CorruptError if the log could not be
	// read. It returns nil while the channel is open and once the watch's
	// context has ended (the caller knows why then); the reason is kept
	// until then, so watch with a context that ends.
	WatchErr(ch <-chan Event) error

	// Revision returns the revision of the last acknowledged Commit.
	Revision() uint64

	// Close stops the store: pending Commits fail with ErrClosed, watch
	// channels are closed.
	Close() error
}

func validKey(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("store: %s is empty: %w", what, ErrInvalid)
	case len(s) > max:
		return fmt.Errorf("store: %s is %d bytes, longer than %d: %w", what, len(s), max, ErrInvalid)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("store: %s %q contains a NUL byte: %w", what, s, ErrInvalid)
	}
	return nil
}

func validKind(kind string) error { return validKey("kind", kind, MaxKindLen) }

func validKindName(kind, name string) error {
	if err := validKind(kind); err != nil {
		return err
	}
	return validKey("name", name, MaxNameLen)
}

func validOps(ops []Op) error {
	if len(ops) == 0 {
		return fmt.Errorf("store: commit without ops: %w", ErrInvalid)
	}
	for i, op := range ops {
		if err := validKindName(op.Kind, op.Name); err != nil {
			return fmt.Errorf("store: op %d: %w", i, err)
		}
		switch op.Type {
		case OpCreate, OpUpdate, OpPut, OpDelete:
		default:
			return fmt.Errorf("store: op %d: unknown op type %d: %w", i, int(op.Type), ErrInvalid)
		}
		if len(op.Value) > MaxValueSize {
			return fmt.Errorf("store: op %d (%s/%s): value is %d bytes, more than %d: %w",
				i, op.Kind, op.Name, len(op.Value), MaxValueSize, ErrInvalid)
		}
	}
	return nil
}
