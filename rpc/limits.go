package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the limits in Config. Together they bound what clients can make the server
// hold, whoever they are and whatever they send (see Config and ARCHITECTURE.md, Limits).
const (
	DefaultMaxMessageSize       = 8 << 20
	DefaultMaxConnections       = 4096
	DefaultMaxConnectionsPerUID = 256
	DefaultRootReserve          = 64
	DefaultIdleTimeout          = 5 * time.Minute
	DefaultMessageTimeout       = 10 * time.Second
	DefaultWriteTimeout         = 30 * time.Second
)

// CallCost is the most a call of the largest size is charged to MaxBufferedBytes: its
// buffer, 3 times its size more while it runs, and what its connection reads ahead
// meanwhile. Root's share is one such call; MaxBufferedBytes is at least, and by default,
// two (64 MiB and 256 KiB with the default MaxMessageSize).
func CallCost(maxMessageSize int) int {
	return (1+dispatchCopies)*maxMessageSize + readAhead + readChunk
}

const (
	// readAhead is how many bytes of further calls a connection reads while one of its
	// calls is being answered (enough to pipeline small calls and to notice a hang-up);
	// beyond it the bytes wait in the kernel. So a long call (Watch) pins at most this much
	// (plus one read) of the buffer budget.
	readAhead = 64 << 10
	// readChunk is the size of one read. Chunks are pooled and held only while the bytes
	// are copied out; an idle connection holds none.
	readChunk = 64 << 10
	// dispatchCopies is how many more times its size a call is charged while it runs.
	dispatchCopies = 3
	// connAllowance is what each connection may hold outside the server's budget: a call
	// of up to 1 KiB (with its copies while it runs) is never refused for memory.
	connAllowance = 4 << 10
	// minPartial is the first buffer of a message that does not end within one read.
	minPartial = 256
	// Refusals, timeouts and closes caused by clients are logged at most logBurst times per
	// logWindow; the next line logged says how many were left out.
	logBurst  = 10
	logWindow = 10 * time.Second
)

// Reasons a connection is closed because of a limit.
var (
	// errTooLarge closes a connection whose request exceeds the size limit.
	errTooLarge = errors.New("request exceeds the message size limit")
	// errOverBudget closes a connection whose request would take the bytes buffered for
	// requests of all connections beyond MaxBufferedBytes.
	errOverBudget = errors.New("requests of all connections hold the buffer limit")
	// errIdle closes a connection that sent nothing for IdleTimeout with no call running.
	errIdle = errors.New("idle timeout")
	// errMessageTimeout closes a connection that did not finish a message in time.
	errMessageTimeout = errors.New("message not completed in time")
)

// budget counts the bytes requests cost on all connections: a message's buffer from its
// first byte read, and while its call runs dispatchCopies more times its size. The last
// reserve bytes are for root's connections only.
type budget struct {
	used           atomic.Int64
	peak           atomic.Int64
	limit, reserve int64
}

func (b *budget) take(n int64, root bool) bool {
	limit := b.limit
	if !root {
		limit -= b.reserve
	}
	for {
		u := b.used.Load()
		if u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// admission counts connections, in total and per uid.
type admission struct {
	mu     sync.Mutex
	total  int
	perUID map[uint32]int
}

// admit takes a connection slot for uid, or says which limit refuses it. Root may use every
// slot and has no per-uid cap; others may not use the last RootReserve slots.
func (s *Server) admit(uid uint32) (string, bool) {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	limit := s.cfg.MaxConnections
	if uid != 0 {
		limit -= s.cfg.RootReserve
	}
	if a.total >= limit {
		return "connection limit", false
	}
	if uid != 0 && a.perUID[uid] >= s.cfg.MaxConnectionsPerUID {
		return "connection limit per uid", false
	}
	a.total++
	a.perUID[uid]++
	return "", true
}

func (s *Server) leave(uid uint32) {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perUID[uid]--; a.perUID[uid] == 0 {
		delete(a.perUID, uid)
	}
}

// logLimiter lets through at most logBurst lines per logWindow.
type logLimiter struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether a line may be logged now, and how many were left out before it.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= logWindow {
		l.window, l.n = now, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	left := l.suppressed
	l.suppressed = 0
	return true, left
}

// logClient logs what a client caused (a refusal, a timeout, a bad message), rate-limited
// so that a flood of hostile connections cannot flood the journal.
func (s *Server) logClient(level slog.Level, msg string, args ...any) {
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	ok, left := s.logLimit.allow(time.Now())
	if !ok {
		return
	}
	if left > 0 {
		args = append(args, "suppressed", left)
	}
	s.log.Log(context.Background(), level, msg, args...)
}

// framer splits a byte stream into NUL-terminated messages of at most limit bytes. It
// charges every byte it keeps before copying it (a message's buffer by its capacity), so
// nothing is buffered that the budget did not grant.
type framer struct {
	limit   int
	charge  func(n int) bool
	partial []byte // the message begun and not yet ended; nil between messages
}

// feed consumes b and passes each complete message, with the bytes charged for it, to emit.
func (f *framer) feed(b []byte, emit func(msg []byte, charged int)) error {
	for len(b) > 0 {
		end := bytes.IndexByte(b, 0)
		seg := b
		if end >= 0 {
			seg = b[:end]
		}
		if len(f.partial)+len(seg) > f.limit {
			return errTooLarge
		}
		if end >= 0 && f.partial == nil {
			// A whole message within b: one exact copy.
			if !f.charge(len(seg)) {
				return errOverBudget
			}
			emit(bytes.Clone(seg), len(seg))
		} else {
			if err := f.grow(len(seg)); err != nil {
				return err
			}
			f.partial = append(f.partial, seg...)
			if end >= 0 {
				msg := f.partial
				f.partial = nil
				emit(msg, cap(msg))
			}
		}
		if end < 0 {
			return nil
		}
		b = b[end+1:]
	}
	return nil
}

// grow makes room for n more bytes of the partial message, charging the new capacity.
func (f *framer) grow(n int) error {
	need := len(f.partial) + n
	if need <= cap(f.partial) {
		return nil
	}
	c := min(max(need, 2*cap(f.partial), minPartial), f.limit)
	c = max(c, need)
	if !f.charge(c - cap(f.partial)) {
		return errOverBudget
	}
	buf := make([]byte, len(f.partial), c)
	copy(buf, f.partial)
	f.partial = buf
	return nil
}

// validateLimits applies the defaults of the limits and checks that they fit together.
func validateLimits(cfg *Config) error {
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnectionsPerUID <= 0 {
		cfg.MaxConnectionsPerUID = DefaultMaxConnectionsPerUID
	}
	switch {
	case cfg.RootReserve == 0:
		cfg.RootReserve = min(DefaultRootReserve, cfg.MaxConnections/4)
	case cfg.RootReserve < 0:
		cfg.RootReserve = 0
	}
	if cfg.RootReserve >= cfg.MaxConnections {
		return fmt.Errorf("rpc: root reserve %d leaves none of the %d connections to other users", cfg.RootReserve, cfg.MaxConnections)
	}
	perCall := CallCost(cfg.MaxMessageSize)
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = 2 * perCall
	}
	if cfg.MaxBufferedBytes < 2*perCall {
		return fmt.Errorf("rpc: buffer limit %d is less than twice what a call of the largest size is charged (%d)", cfg.MaxBufferedBytes, perCall)
	}
	switch {
	case cfg.IdleTimeout == 0:
		cfg.IdleTimeout = DefaultIdleTimeout
	case cfg.IdleTimeout < 0:
		cfg.IdleTimeout = 0
	}
	switch {
	case cfg.MessageTimeout == 0:
		cfg.MessageTimeout = DefaultMessageTimeout
	case cfg.MessageTimeout < 0:
		cfg.MessageTimeout = 0
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	return nil
}
