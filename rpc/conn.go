package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// conn is one accepted connection: the state its reader and its call loop share.
type conn struct {
	s        *Server
	nc       *net.UnixConn
	raw      syscall.RawConn
	peer     Peer
	readOnly bool
	wake     chan struct{} // a call was answered (capacity 1)
	// Calls run under callCtx (the connection's, with the peer), oneway calls under
	// onewayCtx (the server's, with the peer). Set before the reader starts.
	callCtx, onewayCtx context.Context

	mu          sync.Mutex
	pending     int           // calls read and not yet answered
	held        int64         // bytes of messages read or being read and not yet answered
	running     int64         // bytes charged for the copies the running call makes
	partial     bool          // a message has begun and not ended
	msgLeft     time.Duration // reading time the partial message has left
	msgDeadline time.Time     // when that time runs out, while the reader waits
	idleSince   time.Time     // when the last call was answered (or the connection accepted)
	armed       time.Time     // the read deadline set; zero for none

	// The writer of the calls the reader serves itself (serveHere).
	quickW connWriter

	// What readReady read, for read (the reader goroutine's only).
	readNow func(fd uintptr) bool
	rbuf    *[]byte
	rn      int
	rerr    error
}

// request is one framed message read from a connection, or the error that ended reading.
type request struct {
	data    []byte
	charged int // bytes of the budget this message holds until its call returns
	err     error
	head    callHead // the parsed envelope, when parsed
	parsed  bool
}

// chunks are the buffers reads go into; a connection holds one only while it copies the
// bytes out, never while it waits.
var chunks = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// beyondAllowance is what of a connection's charges the server's budget carries: each
// connection has connAllowance bytes of its own, so that small calls are never refused
// for memory, however much other connections hold.
func beyondAllowance(n int64) int64 { return max(0, n-connAllowance) }

// chargeLocked charges n more bytes to the connection, *into (held or running).
func (c *conn) chargeLocked(into *int64, n int64) bool {
	total := c.held + c.running
	if need := beyondAllowance(total+n) - beyondAllowance(total); need > 0 && !c.s.buf.take(need, c.peer.UID == 0) {
		return false
	}
	*into += n
	return true
}

func (c *conn) unchargeLocked(from *int64, n int64) {
	total := c.held + c.running
	c.s.buf.give(beyondAllowance(total) - beyondAllowance(total-n))
	*from -= n
}

// charge charges n bytes of a message being read.
func (c *conn) charge(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chargeLocked(&c.held, int64(n))
}

// chargeRunning charges n bytes for the copies a call makes while it runs.
func (c *conn) chargeRunning(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chargeLocked(&c.running, int64(n))
}

// answered is called by the call loop when a call has returned: the bytes of its message
// and what ran go back, the reader may read ahead again, and with no call left the idle
// clock starts.
func (c *conn) answered(charged, running int) {
	c.mu.Lock()
	c.unchargeLocked(&c.running, int64(running))
	c.unchargeLocked(&c.held, int64(charged))
	c.pending--
	if c.pending == 0 {
		c.idleSince = time.Now()
	}
	c.armLocked()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// release gives back what the connection still holds when it ends: a partial message and
// calls read but never answered.
func (c *conn) release() {
	c.mu.Lock()
	c.s.buf.give(beyondAllowance(c.held + c.running))
	c.held, c.running = 0, 0
	c.mu.Unlock()
}

// wantLocked is the read deadline the state calls for: the partial message's; else, with
// no call running, the idle one; else none (a running call, a Watch say, keeps its
// connection however long it runs).
func (c *conn) wantLocked() time.Time {
	switch {
	case c.partial:
		return c.msgDeadline
	case c.pending == 0 && c.s.cfg.IdleTimeout > 0:
		return c.idleSince.Add(c.s.cfg.IdleTimeout)
	}
	return time.Time{}
}

// armLocked sets the read deadline when the one set is later than wanted, or none is. A
// deadline set that is earlier than wanted is left (the idle deadline moves on with every
// call): readLoop finds it has fired early and arms again, so a call changes no timer.
func (c *conn) armLocked() {
	if d := c.wantLocked(); !d.IsZero() && (c.armed.IsZero() || d.Before(c.armed)) {
		c.armed = d
		c.nc.SetReadDeadline(d)
	}
}

// expiredLocked is called when the read deadline set has fired: it reports whether the one
// wanted has passed too; if not, it clears the deadline for the next arm.
func (c *conn) expiredLocked() bool {
	if d := c.wantLocked(); !d.IsZero() && !time.Now().Before(d) {
		return true
	}
	c.armed = time.Time{}
	c.nc.SetReadDeadline(time.Time{})
	return false
}

// readLoop frames messages and queues them on out. When reading ends (the client hung up,
// a limit or a deadline closed the connection) it queues the reason behind the messages
// already read and ends the connection's context, so a streaming handler stops.
func (c *conn) readLoop(ctx context.Context, cancel context.CancelFunc, out chan<- request) {
	defer cancel()
	cfg := &c.s.cfg
	f := framer{limit: cfg.MaxMessageSize, charge: c.charge}
	var msgs []request
	emit := func(msg []byte, charged int) { msgs = append(msgs, request{data: msg, charged: charged}) }
	for {
		c.mu.Lock()
		// While a call runs, read ahead only a little: more would sit in memory for as
		// long as the call runs. The rest waits in the kernel.
		full := c.pending > 0 && c.held >= readAhead
		if !full {
			if c.partial && cfg.MessageTimeout > 0 {
				c.msgDeadline = time.Now().Add(c.msgLeft)
			}
			c.armLocked()
		}
		c.mu.Unlock()
		if full {
			select {
			case <-c.wake:
				continue
			case <-ctx.Done():
				return
			}
		}

		start := time.Now()
		err := c.read(&f, emit)
		c.mu.Lock()
		switch {
		case f.partial == nil:
		case c.partial && len(msgs) == 0:
			// The same message goes on: it has used up some of its time.
			c.msgLeft -= time.Since(start)
		default:
			c.msgLeft = cfg.MessageTimeout
		}
		timedOutInMessage := c.partial
		c.partial = f.partial != nil
		c.pending += len(msgs)
		idle := c.pending == len(msgs) // no call queued or running before these
		c.mu.Unlock()

		for _, m := range msgs {
			if idle {
				// The call loop is idle: a Quick call is served here, without handing it on.
				h, perr := parseCall(m.data, c.s.methodNames)
				if perr == nil && c.s.quick[h.Method] {
					if err := c.serveHere(m, &h); err != nil {
						select {
						case out <- request{err: err}:
						case <-ctx.Done():
						}
						return
					}
					continue
				}
				m.head, m.parsed = h, perr == nil
				idle = false
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
		clear(msgs) // the call loop owns them now; keep no reference
		msgs = msgs[:0]

		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.mu.Lock()
				expired := c.expiredLocked()
				c.mu.Unlock()
				if !expired {
					continue
				}
			}
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded) && timedOutInMessage:
				err = fmt.Errorf("%w (%s)", errMessageTimeout, cfg.MessageTimeout)
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = fmt.Errorf("%w (%s)", errIdle, cfg.IdleTimeout)
			case errors.Is(err, io.EOF) && f.partial != nil:
				err = fmt.Errorf("client closed the connection inside a message (no NUL terminator): %w", io.EOF)
			}
			select {
			case out <- request{err: err}:
			case <-ctx.Done():
			}
			return
		}
	}
}

// serveHere serves a Quick call in the reader, as the call loop would; an error ends the
// connection.
func (c *conn) serveHere(m request, h *callHead) error {
	extra := dispatchCopies * len(m.data)
	if !c.chargeRunning(extra) {
		c.answered(m.charged, 0)
		return errOverBudget
	}
	w := &c.quickW
	err := c.s.handleCall(c.callCtx, c.onewayCtx, w, c.peer, c.readOnly, m.data, h)
	if err == nil {
		err = w.flush()
	}
	c.s.calls.Add(1)
	c.s.servedHere.Add(1)
	c.answered(m.charged, extra)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		// The client hung up before its reply: as when the reader finds it gone.
		err = fmt.Errorf("%w (%w)", io.EOF, err)
	}
	return err
}

// read waits until the connection is readable, then reads one chunk into a pooled buffer
// and frames it. The buffer is taken only when bytes are waiting: waiting holds none. One
// non-blocking read does both the check and the read.
func (c *conn) read(f *framer, emit func([]byte, int)) error {
	if err := c.raw.Read(c.readNow); err != nil {
		return err
	}
	bp, n, err := c.rbuf, c.rn, c.rerr
	c.rbuf, c.rerr = nil, nil
	defer chunks.Put(bp)
	if n > 0 {
		if ferr := f.feed((*bp)[:n], emit); ferr != nil {
			return ferr
		}
	}
	if n == 0 && err == nil {
		err = io.EOF
	}
	return err
}

// readReady is read's callback (readNow, made once): it reads what is waiting into a
// pooled buffer, or, when nothing is, gives the buffer back and says to wait.
func (c *conn) readReady(fd uintptr) bool {
	bp := chunks.Get().(*[]byte)
	for {
		n, err := unix.Read(int(fd), *bp)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			chunks.Put(bp)
			return false
		case nil:
		default:
			// A hang-up or an error: the caller reports it.
			n, err = 0, os.NewSyscallError("read", err)
		}
		c.rbuf, c.rn, c.rerr = bp, n, err
		return true
	}
}
