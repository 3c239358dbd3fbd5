// Package rpc is BitBuilder's Varlink transport. It owns the unix-socket listeners and every
// connection, parses each call once, and hands each checked call to its interface's
// generated github.com/varlink/go dispatch (org.varlink.service to the library's Service).
//
// It closes the gaps of the library that ../shared/spec/varlink-interop.md lists: it frames
// messages itself, reads the peer's credentials (SO_PEERCRED, SO_PEERGROUPS) and authorizes
// every call, normalizes missing or null parameters to {}, checks parameters strictly against
// the served IDL (naming the offending field), answers ExpectedMore and PermissionDenied
// itself, and cancels a connection's context when the client hangs up, so streaming
// handlers stop.
//
// No client can lock out another or take the daemon's memory (Config says each limit):
// connections are counted in total and per uid, and the last RootReserve of them are root's,
// so root (boot units, the administrator) can always connect; a connection idle too long, or
// one that does not finish a message in time, is closed; what a request costs in proportion
// to its size (its buffer while it arrives, the copies made while its call runs) is charged
// to one budget across all connections (MaxBufferedBytes, of which one call of the largest
// size is root's), and a request that would exceed it closes its connection; an idle
// connection holds no read buffer; parameters are checked without decoding them. Refusals
// are logged at a bounded rate. A server can also serve a read-only socket (ServeReadOnly)
// on which only Read methods are served, whoever calls.
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"
	"github.com/varlink/go/varlink/idl"
)

// Access is what a caller must be allowed to do for a method.
type Access int

const (
	// Read methods may be called by any local user.
	Read Access = iota
	// Write methods may be called by root and members of the admin group only.
	Write
)

// Method describes one served method beyond its IDL.
type Method struct {
	// Access is the privilege the method needs.
	Access Access
	// AccessFor, when set, decides the privilege from the call's parameters (for example,
	// a validation of a host path needs Write, one of a registered template only Read).
	AccessFor func(params json.RawMessage) Access
	// RequiresMore makes calls without the more flag fail with ExpectedMore.
	RequiresMore bool
	// Quick methods answer at once, waiting on nothing but local reads (a Get from the
	// store). The connection's reader serves such a call itself when no other call of the
	// connection is queued or running, which saves handing it to the call loop (a
	// goroutine wake-up per call). While it runs the connection is not read: no read-ahead,
	// and a hang-up is noticed when it returns.
	Quick bool
}

// Interface is a Varlink interface served by the Server.
type Interface struct {
	// Dispatcher is the generated VarlinkInterface, wrapping the implementation.
	Dispatcher interface {
		VarlinkDispatch(ctx context.Context, c varlink.Call, methodname string) error
		VarlinkGetName() string
		VarlinkGetDescription() string
	}
	// Methods maps method names (without the interface) to their policy. Methods of the IDL
	// that are missing here need Write and do not require more.
	Methods map[string]Method
}

// Config configures a Server.
type Config struct {
	// Vendor, Product, Version and URL are returned by org.varlink.service.GetInfo; all must
	// be non-empty (varlinkctl info needs them).
	Vendor, Product, Version, URL string
	// Interfaces are the served interfaces.
	Interfaces []Interface
	// AdminGroup is the numeric group whose members may call Write methods; -1 for none.
	AdminGroup int
	// MaxMessageSize is the largest request accepted, in bytes; a larger one closes the
	// connection. Default 8 MiB.
	MaxMessageSize int
	// MaxConnections is the number of connections served at once, over all listeners;
	// more are closed at once. Default 4096.
	MaxConnections int
	// MaxConnectionsPerUID is the number of connections one uid other than root may have
	// open at once; more are closed at once. Default 256.
	MaxConnectionsPerUID int
	// RootReserve is how many of the MaxConnections only root (uid 0) may take: other
	// users together get MaxConnections - RootReserve, so root can always connect. Default
	// 64 (at most a quarter of MaxConnections); negative for none.
	RootReserve int
	// MaxBufferedBytes bounds the memory requests cost over all connections: a message's
	// buffer from its first byte read (by its capacity), and while its call runs 3 more
	// times its size, for the copies that decoding it and encoding the reply make. Each
	// connection's first 4 KiB are its own, so calls of up to 1 KiB are never refused; a
	// request that would exceed the limit closes its connection. The last
	// CallCost(MaxMessageSize) bytes are for root's requests only, so root can always make
	// a call of the largest size. Default, and least, twice CallCost(MaxMessageSize): 64 MiB
	// and 256 KiB with the default MaxMessageSize.
	MaxBufferedBytes int
	// IdleTimeout closes a connection that sent nothing for this long while none of its
	// calls was running (a Watch keeps its connection). Default 5 min; negative for never.
	IdleTimeout time.Duration
	// MessageTimeout closes a connection that does not finish a message (its NUL) within
	// this much reading time of its first byte, however slowly bytes trickle in. Default
	// 10 s; negative for never.
	MessageTimeout time.Duration
	// WriteTimeout bounds each reply write, so a client that stops reading cannot block
	// its handler forever. Default 30 s.
	WriteTimeout time.Duration
	// Logger receives connection-level problems. Default slog.Default().
	Logger *slog.Logger
}

// Server serves Varlink on listeners. One Server may serve several listeners (Serve,
// ServeReadOnly); its limits hold over all of them together.
type Server struct {
	cfg         Config
	svc         *varlink.Service
	ifaces      map[string]*servedInterface
	log         *slog.Logger
	admission   admission
	buf         budget
	logLimit    logLimiter
	methodNames map[string]string // the full names of the served methods, each one string
	quick       map[string]bool   // the full names of the Quick methods
	refused     atomic.Int64      // connections refused at accept (tests)
	calls       atomic.Int64      // calls handled (tests)
	servedHere  atomic.Int64      // Quick calls the reader served itself (tests)
}

type servedInterface struct {
	idl      *idl.IDL
	aliases  map[string]*idl.Type
	methods  map[string]*idl.Method
	policy   map[string]Method
	dispatch dispatcher
}

// New checks the configuration and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Vendor == "" || cfg.Product == "" || cfg.Version == "" || cfg.URL == "" {
		return nil, errors.New("rpc: vendor, product, version and url must all be set")
	}
	if err := validateLimits(&cfg); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	svc, err := varlink.NewService(cfg.Vendor, cfg.Product, cfg.Version, cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := checkServiceCall(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, svc: svc, ifaces: map[string]*servedInterface{}, log: cfg.Logger,
		methodNames: map[string]string{}, quick: map[string]bool{}}
	for _, m := range []string{"GetInfo", "GetInterfaceDescription"} {
		s.methodNames["org.varlink.service."+m] = "org.varlink.service." + m
	}
	s.admission.perUID = map[uint32]int{}
	s.buf.limit = int64(cfg.MaxBufferedBytes)
	s.buf.reserve = int64(CallCost(cfg.MaxMessageSize))
	for _, iface := range cfg.Interfaces {
		parsed, err := idl.New(iface.Dispatcher.VarlinkGetDescription())
		if err != nil {
			return nil, fmt.Errorf("rpc: parse IDL of %s: %w", iface.Dispatcher.VarlinkGetName(), err)
		}
		si := &servedInterface{idl: parsed, aliases: map[string]*idl.Type{}, methods: map[string]*idl.Method{}, policy: iface.Methods,
			dispatch: iface.Dispatcher}
		for _, a := range parsed.Aliases {
			si.aliases[a.Name] = a.Type
		}
		for _, m := range parsed.Methods {
			si.methods[m.Name] = m
			s.methodNames[parsed.Name+"."+m.Name] = parsed.Name + "." + m.Name
		}
		for name, m := range iface.Methods {
			if si.methods[name] == nil {
				return nil, fmt.Errorf("rpc: policy for %s.%s, which the IDL does not have", parsed.Name, name)
			}
			if m.Quick {
				s.quick[parsed.Name+"."+name] = true
			}
		}
		if err := svc.RegisterInterface(iface.Dispatcher); err != nil {
			return nil, err
		}
		s.ifaces[parsed.Name] = si
	}
	return s, nil
}

// Serve accepts connections on l until ctx ends or l fails, then closes l, closes every
// connection it accepted and waits for their handlers. A cancelled ctx is not an error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return s.serve(ctx, l, false)
}

// ServeReadOnly serves l as Serve does, but only the methods whose Access is Read (and
// org.varlink.service): any other call is answered with PermissionDenied, whoever makes it,
// root included. It is for a socket every local user may connect to.
func (s *Server) ServeReadOnly(ctx context.Context, l net.Listener) error {
	return s.serve(ctx, l, true)
}

func (s *Server) serve(ctx context.Context, l net.Listener, readOnly bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var wg sync.WaitGroup
	var err error
	var backoff time.Duration
	for {
		var nc net.Conn
		nc, err = l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if temporaryAcceptError(err) {
				// Out of file descriptors or memory: wait, as net/http does, rather than
				// stop serving.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logClient(slog.LevelWarn, "accept failed, retrying", "err", err, "retryIn", backoff)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				continue
			}
			break
		}
		backoff = 0
		c := s.admitConn(nc, readOnly)
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.leave(c.peer.UID)
			s.serveConn(ctx, c)
		}()
	}
	cancel()
	wg.Wait()
	return err
}

func temporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// admitConn reads the peer's credentials and takes a connection slot for it; when a limit
// refuses it, the connection is closed at once and nil returned.
func (s *Server) admitConn(nc net.Conn, readOnly bool) *conn {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		s.logClient(slog.LevelWarn, "not a unix socket connection, closing it")
		nc.Close()
		return nil
	}
	peer, err := peerOf(uc)
	if err != nil {
		s.logClient(slog.LevelWarn, "cannot read peer credentials, closing connection", "err", err)
		nc.Close()
		return nil
	}
	if reason, ok := s.admit(peer.UID); !ok {
		s.refused.Add(1)
		s.logClient(slog.LevelWarn, "refusing connection", "reason", reason, "uid", peer.UID, "pid", peer.PID,
			"maxConnections", s.cfg.MaxConnections, "maxConnectionsPerUID", s.cfg.MaxConnectionsPerUID, "rootReserve", s.cfg.RootReserve)
		nc.Close()
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		s.leave(peer.UID)
		nc.Close()
		return nil
	}
	c := &conn{s: s, nc: uc, raw: raw, peer: peer, readOnly: readOnly, wake: make(chan struct{}, 1), idleSince: time.Now()}
	c.readNow = c.readReady
	c.quickW = connWriter{conn: uc, timeout: s.cfg.WriteTimeout}
	return c
}

func (s *Server) serveConn(srvCtx context.Context, c *conn) {
	peer := c.peer
	// connCtx ends when the client hangs up or the connection is done; calls that expect a
	// reply run under it, so a stream to a vanished client stops at once. Oneway calls run
	// under srvCtx: nobody waits for them, but they must still happen.
	connCtx, cancel := context.WithCancel(srvCtx)
	// Handlers find the peer in their context (PeerOf).
	c.callCtx = context.WithValue(connCtx, peerKey{}, peer)
	c.onewayCtx = context.WithValue(srvCtx, peerKey{}, peer)
	stop := context.AfterFunc(srvCtx, func() { c.nc.Close() })
	reqs := make(chan request, 8)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.readLoop(connCtx, cancel, reqs)
	}()
	defer func() {
		stop()
		cancel()
		c.nc.Close()
		<-readerDone
		c.release()
	}()

	w := &connWriter{conn: c.nc, timeout: s.cfg.WriteTimeout}
	for {
		var r request
		select {
		case <-srvCtx.Done():
			return
		case r = <-reqs:
		}
		if r.err != nil {
			switch {
			case errors.Is(r.err, io.EOF) || srvCtx.Err() != nil:
			case errors.Is(r.err, errIdle):
				s.log.Debug("closing connection", "uid", peer.UID, "pid", peer.PID, "reason", r.err.Error())
			case errors.Is(r.err, errTooLarge) || errors.Is(r.err, errOverBudget) || errors.Is(r.err, errMessageTimeout):
				s.logClient(slog.LevelWarn, "closing connection", "uid", peer.UID, "pid", peer.PID, "reason", r.err.Error())
			default:
				s.logClient(slog.LevelInfo, "closing connection", "uid", peer.UID, "pid", peer.PID, "reason", r.err.Error())
			}
			return
		}
		// While the call runs, decoding it and encoding its reply make copies of about its
		// size (the decoded values, the reply, which may repeat them, and for
		// org.varlink.service the library's copy of the parameters): charge them too, so
		// that the budget bounds them as well.
		extra := dispatchCopies * len(r.data)
		if !c.chargeRunning(extra) {
			s.logClient(slog.LevelWarn, "closing connection", "uid", peer.UID, "pid", peer.PID, "reason", errOverBudget.Error())
			c.answered(r.charged, 0)
			return
		}
		var err error
		if r.parsed {
			err = s.handleCall(c.callCtx, c.onewayCtx, w, peer, c.readOnly, r.data, &r.head)
		} else {
			err = s.handle(c.callCtx, c.onewayCtx, w, peer, c.readOnly, r.data)
		}
		if err == nil {
			err = w.flush()
		}
		r.data = nil
		s.calls.Add(1)
		c.answered(r.charged, extra)
		if err != nil {
			if connCtx.Err() == nil {
				s.logClient(slog.LevelInfo, "closing connection", "uid", peer.UID, "pid", peer.PID, "reason", err.Error())
			}
			return
		}
	}
}

// connWriter adapts a net.Conn to varlink.ReadWriterContext for replies. It buffers: the
// replies of one call go out together when the call is done (a List of thousands of items
// costs a few writes, not thousands), and streaming handlers flush each item with Flush.
type connWriter struct {
	conn    net.Conn
	timeout time.Duration
	buf     []byte
}

// flushAt is the buffer size at which replies are written out before the call is done.
const flushAt = 64 << 10

func (w *connWriter) Write(ctx context.Context, b []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(w.buf)+len(b) < flushAt {
		w.buf = append(w.buf, b...)
		return len(b), nil
	}
	// Write out what is buffered, then b itself: a large reply is not copied again.
	if err := w.flush(); err != nil {
		return 0, err
	}
	if err := w.write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *connWriter) write(b []byte) error {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.conn.Write(b)
	return err
}

func (w *connWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.write(w.buf)
	w.buf = w.buf[:0]
	if cap(w.buf) > 4*flushAt {
		w.buf = nil // don't keep a large buffer on an idle connection
	}
	return err
}

// Flush writes out the replies buffered on a call's connection. Handlers that stream (more
// replies spread over time, like Watch) call it after each reply; others need not.
func Flush(conn varlink.ReadWriterContext) error {
	if w, ok := conn.(*connWriter); ok {
		return w.flush()
	}
	return nil
}

func (w *connWriter) Read(context.Context, []byte) (int, error) {
	return 0, errors.New("rpc: handlers cannot read from the connection")
}

func (w *connWriter) ReadBytes(context.Context, byte) ([]byte, error) {
	return nil, errors.New("rpc: handlers cannot read from the connection")
}

// handle checks one call and dispatches it, under ctx, or onewayCtx for a oneway call (both
// carry the peer). An error closes the connection.
func (s *Server) handle(ctx, onewayCtx context.Context, w *connWriter, peer Peer, readOnly bool, data []byte) error {
	// One pass over the message checks its syntax and reads all but the parameters, which
	// stay a slice of data: a message may be 8 MiB, and a decoded copy would be held beside
	// it, outside the buffer budget.
	call, err := parseCall(data, s.methodNames)
	if err != nil {
		return fmt.Errorf("malformed call: %w", err)
	}
	return s.handleCall(ctx, onewayCtx, w, peer, readOnly, data, &call)
}

// handleCall is handle once the message was parsed into call.
func (s *Server) handleCall(ctx, onewayCtx context.Context, w *connWriter, peer Peer, readOnly bool, data []byte, call *callHead) error {
	reply := func(name string, params any) error {
		if call.Oneway {
			return nil
		}
		return writeReply(w, ctx, name, params)
	}
	if call.Method == "" {
		return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": "method"})
	}
	if call.Upgrade {
		return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": "upgrade"})
	}
	if call.Oneway && call.More {
		return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": "more"})
	}
	params := call.Params
	if len(params) == 0 || bytes.Equal(params, []byte("null")) {
		params = []byte("{}")
	}
	if params[0] != '{' {
		return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": "parameters"})
	}

	dot := lastDot(call.Method)
	if dot <= 0 {
		return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": "method"})
	}
	ifaceName, methodName := call.Method[:dot], call.Method[dot+1:]
	if call.Method == "org.varlink.service.GetInterfaceDescription" {
		// The library answers an unknown interface with InvalidParameter; the protocol says
		// InterfaceNotFound.
		var in struct {
			Interface *string `json:"interface"`
		}
		if err := json.Unmarshal(params, &in); err == nil && in.Interface != nil &&
			*in.Interface != "org.varlink.service" && s.ifaces[*in.Interface] == nil {
			return reply("org.varlink.service.InterfaceNotFound", map[string]string{"interface": *in.Interface})
		}
	}
	var si *servedInterface
	if ifaceName != "org.varlink.service" {
		si = s.ifaces[ifaceName]
		if si == nil {
			return reply("org.varlink.service.InterfaceNotFound", map[string]string{"interface": ifaceName})
		}
		m := si.methods[methodName]
		if m == nil {
			return reply("org.varlink.service.MethodNotFound", map[string]string{"method": call.Method})
		}
		if field, err := si.check(m.In, params); err != nil {
			s.log.Debug("invalid parameter", "method", call.Method, "parameter", field, "err", err)
			return reply("org.varlink.service.InvalidParameter", map[string]string{"parameter": field})
		}
		policy, ok := si.policy[methodName]
		if !ok {
			policy = Method{Access: Write}
		}
		need := policy.Access
		if policy.AccessFor != nil {
			need = policy.AccessFor(params)
		}
		if need == Write && (readOnly || !peer.privileged(s.cfg.AdminGroup)) {
			s.logClient(slog.LevelInfo, "permission denied", "method", call.Method, "uid", peer.UID, "pid", peer.PID, "readOnlySocket", readOnly)
			return reply("org.varlink.service.PermissionDenied", struct{}{})
		}
		if policy.RequiresMore && !call.More {
			return reply("org.varlink.service.ExpectedMore", struct{}{})
		}
	}
	if call.Oneway {
		ctx = onewayCtx
	}
	if si != nil {
		// The checked call goes to the interface's dispatch as the library would pass it,
		// without the library decoding the message again.
		return si.dispatch.VarlinkDispatch(ctx, libraryCall(w, data, call, params), methodName)
	}
	// org.varlink.service is the library's own: it gets the message, re-encoded only when
	// its parameters had to be normalized to {}.
	if !bytes.Equal(call.Params, params) {
		var err error
		if data, err = json.Marshal(struct {
			Method     string          `json:"method"`
			Parameters json.RawMessage `json:"parameters"`
			More       bool            `json:"more,omitempty"`
			Oneway     bool            `json:"oneway,omitempty"`
		}{call.Method, params, call.More, call.Oneway}); err != nil {
			return err
		}
	}
	return s.svc.HandleMessage(ctx, w, data)
}

func writeReply(w *connWriter, ctx context.Context, name string, params any) error {
	b, err := json.Marshal(struct {
		Parameters any    `json:"parameters"`
		Error      string `json:"error"`
	}{params, name})
	if err != nil {
		return err
	}
	_, err = w.Write(ctx, append(b, 0))
	return err
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}
