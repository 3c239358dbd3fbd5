// Package rpc is BitBuilder's Varlink transport. It owns the unix-socket listener and every
// connection, and hands each checked call to a github.com/varlink/go Service for dispatch.
//
// It closes the gaps of the library that ../shared/spec/varlink-interop.md lists: it frames
// messages itself with a size limit, limits the number of connections, reads the peer's
// credentials (SO_PEERCRED, SO_PEERGROUPS) and authorizes every call, normalizes missing or
// null parameters to {}, checks parameters strictly against the served IDL (naming the
// offending field), answers ExpectedMore and PermissionDenied itself, and cancels a
// connection's context when the client hangs up, so streaming handlers stop.
package rpc

import (
	"bufio"
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
	// MaxConnections is the number of connections served at once; more are closed at
	// once. Default 4096.
	MaxConnections int
	// WriteTimeout bounds each reply write, so a client that stops reading cannot block
	// its handler forever. Default 30 s.
	WriteTimeout time.Duration
	// Logger receives connection-level problems. Default slog.Default().
	Logger *slog.Logger
}

// Server serves Varlink on listeners.
type Server struct {
	cfg    Config
	svc    *varlink.Service
	ifaces map[string]*servedInterface
	log    *slog.Logger
	conns  atomic.Int64
	wg     sync.WaitGroup
}

type servedInterface struct {
	idl     *idl.IDL
	aliases map[string]*idl.Type
	methods map[string]*idl.Method
	policy  map[string]Method
}

// New checks the configuration and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Vendor == "" || cfg.Product == "" || cfg.Version == "" || cfg.URL == "" {
		return nil, errors.New("rpc: vendor, product, version and url must all be set")
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 8 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 4096
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	svc, err := varlink.NewService(cfg.Vendor, cfg.Product, cfg.Version, cfg.URL)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, svc: svc, ifaces: map[string]*servedInterface{}, log: cfg.Logger}
	for _, iface := range cfg.Interfaces {
		parsed, err := idl.New(iface.Dispatcher.VarlinkGetDescription())
		if err != nil {
			return nil, fmt.Errorf("rpc: parse IDL of %s: %w", iface.Dispatcher.VarlinkGetName(), err)
		}
		si := &servedInterface{idl: parsed, aliases: map[string]*idl.Type{}, methods: map[string]*idl.Method{}, policy: iface.Methods}
		for _, a := range parsed.Aliases {
			si.aliases[a.Name] = a.Type
		}
		for _, m := range parsed.Methods {
			si.methods[m.Name] = m
		}
		for name := range iface.Methods {
			if si.methods[name] == nil {
				return nil, fmt.Errorf("rpc: policy for %s.%s, which the IDL does not have", parsed.Name, name)
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var err error
	for {
		var conn net.Conn
		conn, err = l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			break
		}
		if s.conns.Add(1) > int64(s.cfg.MaxConnections) {
			s.conns.Add(-1)
			s.log.Warn("connection limit reached, closing new connection", "limit", s.cfg.MaxConnections)
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.conns.Add(-1)
			s.serveConn(ctx, conn)
		}()
	}
	cancel()
	s.wg.Wait()
	return err
}

// request is one framed message read from a connection.
type request struct {
	data []byte
	err  error
}

func (s *Server) serveConn(srvCtx context.Context, conn net.Conn) {
	peer, err := peerOf(conn)
	if err != nil {
		s.log.Warn("cannot read peer credentials, closing connection", "err", err)
		conn.Close()
		return
	}
	// connCtx ends when the client hangs up or the connection is done; calls that expect a
	// reply run under it, so a stream to a vanished client stops at once. Oneway calls run
	// under srvCtx: nobody waits for them, but they must still happen.
	connCtx, cancel := context.WithCancel(srvCtx)
	defer cancel()
	stop := context.AfterFunc(srvCtx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	reqs := make(chan request, 8)
	go s.readRequests(connCtx, cancel, conn, reqs)

	w := &connWriter{conn: conn, timeout: s.cfg.WriteTimeout}
	for {
		var r request
		select {
		case <-srvCtx.Done():
			return
		case r = <-reqs:
		}
		if r.err != nil {
			if !errors.Is(r.err, io.EOF) && srvCtx.Err() == nil {
				s.log.Info("closing connection", "uid", peer.UID, "pid", peer.PID, "reason", r.err.Error())
			}
			return
		}
		err := s.handle(connCtx, srvCtx, w, peer, r.data)
		if err == nil {
			err = w.flush()
		}
		if err != nil {
			if connCtx.Err() == nil {
				s.log.Info("closing connection", "uid", peer.UID, "pid", peer.PID, "reason", err.Error())
			}
			return
		}
	}
}

// readRequests frames NUL-terminated messages. When the client hangs up it queues io.EOF
// behind the messages already read and ends the connection's context.
func (s *Server) readRequests(ctx context.Context, cancel context.CancelFunc, conn net.Conn, out chan<- request) {
	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		msg, err := readMessage(br, s.cfg.MaxMessageSize)
		r := request{data: msg, err: err}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
		if err != nil {
			cancel()
			return
		}
	}
}

// errTooLarge closes a connection whose request exceeds the size limit.
var errTooLarge = errors.New("request exceeds the message size limit")

func readMessage(br *bufio.Reader, limit int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice(0)
		if len(buf)+len(chunk) > limit+1 {
			return nil, errTooLarge
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return nil, fmt.Errorf("client closed the connection inside a message (no NUL terminator): %w", io.EOF)
		default:
			return nil, err
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
	w.buf = append(w.buf, b...)
	if len(w.buf) >= flushAt {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (w *connWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.conn.Write(w.buf)
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

// envelope is a call as the protocol defines it.
type envelope struct {
	Method     string          `json:"method"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	More       bool            `json:"more,omitempty"`
	Oneway     bool            `json:"oneway,omitempty"`
	Upgrade    bool            `json:"upgrade,omitempty"`
}

// handle checks one call and dispatches it. An error closes the connection.
func (s *Server) handle(ctx, onewayCtx context.Context, w *connWriter, peer Peer, data []byte) error {
	var call envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&call); err != nil {
		return fmt.Errorf("malformed call: %w", err)
	}
	if dec.More() {
		return errors.New("malformed call: data after the JSON object")
	}
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
	params := bytes.TrimSpace(call.Parameters)
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
	if ifaceName != "org.varlink.service" {
		si := s.ifaces[ifaceName]
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
		if need == Write && !peer.privileged(s.cfg.AdminGroup) {
			s.log.Info("permission denied", "method", call.Method, "uid", peer.UID, "pid", peer.PID)
			return reply("org.varlink.service.PermissionDenied", struct{}{})
		}
		if policy.RequiresMore && !call.More {
			return reply("org.varlink.service.ExpectedMore", struct{}{})
		}
	}
	// Re-encode the call only when its parameters had to be normalized to {}.
	normalized := data
	if len(call.Parameters) == 0 || !bytes.Equal(bytes.TrimSpace(call.Parameters), params) {
		call.Parameters = params
		var err error
		if normalized, err = json.Marshal(call); err != nil {
			return err
		}
	}
	if call.Oneway {
		ctx = onewayCtx
	}
	return s.svc.HandleMessage(ctx, w, normalized)
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
