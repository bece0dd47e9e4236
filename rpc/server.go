package rpc

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Handler serves what arrives on the wire. *container.Container implements it.
type Handler interface {
	registry.Caller
	// Nodes returns the RPC addresses of the live nodes.
	Nodes(ctx context.Context) ([]string, error)
}

// ServerConfig configures a Server. The zero value of a field means its
// default.
type ServerConfig struct {
	// Incarnation identifies this node process; it is sent in the handshake
	// so that peers can tell a restarted process on the same address. A
	// Handler with an Incarnation() string method overrides it: a node's
	// incarnation changes when it loses its lease and registers again, and
	// a stale one in the handshake would make peers prove a live node dead.
	Incarnation string
	// Addr is the advertised address sent in the handshake.
	Addr string
	// Token, when set, must be presented by clients in the handshake.
	Token string
	// TLS, when set, serves TLS (with client certificates if it asks for
	// them) on the listener given to Serve.
	TLS *tls.Config
	// MaxFrameSize bounds a frame body. Default DefaultMaxFrameSize.
	MaxFrameSize int
	// MaxStreams bounds concurrent yamux streams per connection (yamux has
	// no limit of its own). Default DefaultMaxStreams.
	MaxStreams int
	// MaxInflight bounds concurrent calls per connection. It is advertised
	// in the handshake and Client keeps within it; calls past it are refused
	// with unavailable. The node never stops reading a connection to wait
	// for a slot: the cancel frames, pings and end of stream queued behind
	// would go unseen, and calls waiting to be canceled would wedge it.
	// Default DefaultMaxInflight.
	MaxInflight int
	// MaxConns bounds the open connections, handshaking ones included;
	// past it a new connection is closed at once, and its client moves to
	// another node. Default DefaultMaxConns.
	MaxConns int
	// HandshakeTimeout bounds the time from accept to a valid hello.
	HandshakeTimeout time.Duration
	// Logger receives connection-level events. Nil discards them.
	Logger *slog.Logger
}

func (c *ServerConfig) withDefaults() ServerConfig {
	out := ServerConfig{}
	if c != nil {
		out = *c
	}
	if out.MaxFrameSize <= 0 {
		out.MaxFrameSize = DefaultMaxFrameSize
	}
	if out.MaxStreams <= 0 {
		out.MaxStreams = DefaultMaxStreams
	}
	if out.MaxInflight <= 0 {
		out.MaxInflight = DefaultMaxInflight
	}
	if out.MaxConns <= 0 {
		out.MaxConns = DefaultMaxConns
	}
	if out.HandshakeTimeout <= 0 {
		out.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// Server serves calls to a Handler. Create it with NewServer, run Serve on
// one or more listeners, and stop it with Shutdown or Close.
type Server struct {
	h   Handler
	cfg ServerConfig

	ctx    context.Context // canceled by Close: cancels every call
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*serverSession]struct{}
	closed    bool

	wg sync.WaitGroup // sessions and accept loops
}

// NewServer returns a server for h. cfg may be nil.
func NewServer(h Handler, cfg *ServerConfig) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		h: h, cfg: cfg.withDefaults(), ctx: ctx, cancel: cancel,
		listeners: map[net.Listener]struct{}{}, sessions: map[*serverSession]struct{}{},
	}
}

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.StreamCloseTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	return c
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s.startSession(c)
	}
}

func (s *Server) startSession(c net.Conn) {
	s.mu.Lock()
	full := len(s.sessions) >= s.cfg.MaxConns
	s.mu.Unlock()
	if full {
		s.cfg.Logger.Warn("connection refused: too many connections", "remote", c.RemoteAddr().String(), "max_conns", s.cfg.MaxConns)
		c.Close()
		return
	}
	sess, err := yamux.Server(c, yamuxConfig())
	if err != nil {
		c.Close()
		return
	}
	ss := s.newSession(sess, c.RemoteAddr().String())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Close()
		return
	}
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ss.run()
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting connections, waits for the calls in flight to
// finish (or ctx to end), then closes every connection. Stop the handler
// from taking new work first (container.Drain) so that clients move to
// other nodes rather than wait.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.inflight() > 0 {
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
	return s.Close()
}

// inflight counts the calls running and the streams with replies not yet
// written: a call releases its slot once its reply is queued, and closing
// the connection then would lose the reply of a call that did complete.
func (s *Server) inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ss := range s.sessions {
		n += len(ss.sem) // before the writers: a reply is queued before its slot is freed
		ss.mu.Lock()
		for fw := range ss.writers {
			if !fw.flushed() {
				n++
			}
		}
		ss.mu.Unlock()
	}
	return n
}

// Close closes the listeners and every connection at once, cancels the
// calls in flight and waits for their goroutines.
func (s *Server) Close() error {
	s.closeListeners()
	// Connections first, then the calls: a call canceled while its
	// connection still works would send a final "canceled" reply, where a
	// lost connection makes the client retry on another node.
	s.mu.Lock()
	for ss := range s.sessions {
		ss.sess.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// serverSession serves one connection.
type serverSession struct {
	srv    *Server
	sess   *yamux.Session
	remote string
	client []byte        // from the hello
	sem    chan struct{} // in-flight calls
	wg     sync.WaitGroup

	// Calls run on workers that outlive them: a call that starts on a
	// fresh goroutine pays for growing its stack (decoding CBOR is deep),
	// about a tenth of a call's CPU.
	tasks       chan func()
	stopWorkers chan struct{}

	mu      sync.Mutex
	writers map[*frameWriter]struct{} // of the streams being served
}

func (s *Server) newSession(sess *yamux.Session, remote string) *serverSession {
	return &serverSession{
		srv: s, sess: sess, remote: remote,
		sem: make(chan struct{}, s.cfg.MaxInflight), writers: map[*frameWriter]struct{}{},
		tasks: make(chan func()), stopWorkers: make(chan struct{}),
	}
}

// workerIdle is how long an idle worker waits for another call.
const workerIdle = 5 * time.Second

// spawn runs f on an idle worker, or on a new one.
func (ss *serverSession) spawn(f func()) {
	select {
	case ss.tasks <- f:
	default:
		ss.wg.Add(1)
		go ss.worker(f)
	}
}

func (ss *serverSession) worker(f func()) {
	defer ss.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-ss.tasks:
		case <-idle.C:
			return
		case <-ss.stopWorkers:
			return
		}
	}
}

func (ss *serverSession) run() {
	defer ss.wg.Wait()
	defer ss.sess.Close()
	defer close(ss.stopWorkers)
	cfg := &ss.srv.cfg

	// Handshake: the first stream must carry a valid hello in time.
	timer := time.AfterFunc(cfg.HandshakeTimeout, func() { ss.sess.Close() })
	st, err := ss.sess.AcceptStream()
	if err != nil {
		timer.Stop()
		return
	}
	br := bufio.NewReaderSize(st, 16<<10)
	fw := newFrameWriter(st)
	ok := ss.handshake(br, fw)
	if !ok {
		fw.close()
		st.Close()
		// Let the client read the refusal and hang up: closing the session
		// at once races the refusal (the client's hello write, or its read,
		// can fail with "session shutdown" first, turning a final
		// unauthenticated into a retried transport error). The handshake
		// timer still bounds the wait.
		<-ss.sess.CloseChan()
		timer.Stop()
		return
	}
	timer.Stop()

	streams := make(chan struct{}, cfg.MaxStreams)
	streams <- struct{}{}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		ss.serveStream(st, br, fw)
		<-streams
		// The handshake stream is the session's lifeline: when the client
		// closes it, the session is done.
		ss.sess.Close()
	}()
	for {
		st, err := ss.sess.AcceptStream()
		if err != nil {
			return
		}
		select {
		case streams <- struct{}{}:
		default:
			cfg.Logger.Warn("rpc: stream refused: too many streams", "remote", ss.remote, "max", cfg.MaxStreams)
			st.Close()
			continue
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			ss.serveStream(st, bufio.NewReaderSize(st, 16<<10), newFrameWriter(st))
			<-streams
		}()
	}
}

func (ss *serverSession) handshake(br *bufio.Reader, fw *frameWriter) bool {
	cfg := &ss.srv.cfg
	refuse := func(code registry.Code, msg string) bool {
		f, _ := encodeFrame(kindWelcome, 0, &welcome{Version: ProtocolVersion, Code: string(code), Message: msg})
		_ = fw.send(f)
		return false
	}
	h, body, err := readFrame(br, cfg.MaxFrameSize)
	if err != nil {
		var tl *frameTooLarge
		if errors.As(err, &tl) {
			return refuse(registry.CodeTooLarge, "hello frame too large")
		}
		return false
	}
	if h.kind != kindHello {
		return refuse(registry.CodeBadRequest, "the session must start with a hello frame")
	}
	var m hello
	if err := decodeBody(body, &m); err != nil {
		return refuse(registry.CodeBadRequest, "malformed hello: "+err.Error())
	}
	if m.Version != ProtocolVersion {
		return refuse(registry.CodeBadRequest, fmt.Sprintf("unsupported protocol version %d (this node speaks %d)", m.Version, ProtocolVersion))
	}
	if cfg.Token != "" && subtle.ConstantTimeCompare([]byte(m.Token), []byte(cfg.Token)) != 1 {
		return refuse(registry.CodeUnauthenticated, "invalid or missing token")
	}
	if len(m.Client) > 64 {
		return refuse(registry.CodeBadRequest, "client id longer than 64 bytes")
	}
	ss.client = m.Client
	inc := cfg.Incarnation
	if h, ok := ss.srv.h.(interface{ Incarnation() string }); ok {
		inc = h.Incarnation()
	}
	w := &welcome{
		Version: ProtocolVersion, Incarnation: inc, Addr: cfg.Addr,
		MaxFrame: uint64(cfg.MaxFrameSize), MaxInflight: uint64(cfg.MaxInflight),
	}
	// The live nodes come with the welcome, so that a client that knows
	// one node learns the others before its first call.
	nctx, cancel := context.WithTimeout(ss.srv.ctx, time.Second)
	if nodes, err := ss.srv.h.Nodes(nctx); err == nil && len(nodes) <= 1024 {
		w.Nodes = nodes
	}
	cancel()
	f, err := encodeFrame(kindWelcome, 0, w)
	if err != nil {
		return false
	}
	return fw.send(f) == nil
}

// serveStream reads frames from one stream until it ends, dispatching each
// call to its own goroutine.
func (ss *serverSession) serveStream(st *yamux.Stream, br *bufio.Reader, fw *frameWriter) {
	cfg := &ss.srv.cfg
	ss.mu.Lock()
	ss.writers[fw] = struct{}{}
	ss.mu.Unlock()
	var (
		mu       sync.Mutex
		inflight = map[uint64]*context.CancelFunc{} // by call id; the pointer tells calls apart
		calls    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for _, cancel := range inflight {
			(*cancel)()
		}
		mu.Unlock()
		calls.Wait()
		fw.close()
		st.Close()
		ss.mu.Lock()
		delete(ss.writers, fw)
		ss.mu.Unlock()
	}()
	reply := func(id uint64, m *replyMsg) {
		f, err := encodeFrame(kindReply, id, m)
		if err != nil {
			f, _ = encodeFrame(kindReply, id, &replyMsg{Code: string(registry.CodeInternal), Message: "encode reply: " + err.Error()})
		}
		if len(f)-headerSize > cfg.MaxFrameSize {
			f, _ = encodeFrame(kindReply, id, &replyMsg{Code: string(registry.CodeTooLarge), Message: fmt.Sprintf("reply of %d bytes exceeds the frame limit of %d", len(f)-headerSize, cfg.MaxFrameSize)})
		}
		_ = fw.send(f)
	}
	fail := func(id uint64, code registry.Code, msg string) {
		reply(id, &replyMsg{Code: string(code), Message: msg})
	}
	for {
		h, body, err := readFrame(br, cfg.MaxFrameSize)
		if err != nil {
			var tl *frameTooLarge
			if !errors.As(err, &tl) {
				return // end of stream, reset, or truncated frame
			}
			if int64(tl.length) > int64(discardFactor)*int64(cfg.MaxFrameSize) {
				cfg.Logger.Warn("rpc: closing stream after a huge frame", "remote", ss.remote, "bytes", tl.length)
				fail(h.id, registry.CodeTooLarge, tl.Error()+"; closing the stream")
				return
			}
			if _, err := io.CopyN(io.Discard, br, int64(tl.length)); err != nil {
				return
			}
			fail(h.id, registry.CodeTooLarge, tl.Error())
			continue
		}
		switch h.kind {
		case kindCall:
			var m callMsg
			err := decodeBody(body, &m)
			releaseFrame(body)
			if err != nil {
				fail(h.id, registry.CodeBadRequest, "malformed call frame: "+err.Error())
				continue
			}
			if !ss.acquire() {
				fail(h.id, registry.CodeUnavailable, fmt.Sprintf("node busy: %d calls in flight on this connection", cap(ss.sem)))
				continue
			}
			var (
				ctx    context.Context
				cancel context.CancelFunc
			)
			if m.Timeout > 0 && m.Timeout <= maxTimeout {
				ctx, cancel = context.WithTimeout(ss.srv.ctx, time.Duration(m.Timeout)*time.Microsecond)
			} else { // none, or too far away to matter (and to fit a Duration)
				ctx, cancel = context.WithCancel(ss.srv.ctx)
			}
			mu.Lock()
			if old, dup := inflight[h.id]; dup {
				(*old)() // a reused id cancels the older call; its reply is dropped by the client
			}
			self := &cancel
			inflight[h.id] = self
			mu.Unlock()
			calls.Add(1)
			id := h.id
			ss.spawn(func() {
				defer calls.Done()
				defer func() { <-ss.sem }()
				r := ss.invoke(ctx, &m)
				mu.Lock()
				if inflight[id] == self { // not a newer call that reused the id
					delete(inflight, id)
				}
				mu.Unlock()
				cancel()
				reply(id, r)
			})
		case kindCancel:
			mu.Lock()
			if cancel, ok := inflight[h.id]; ok {
				(*cancel)()
			}
			mu.Unlock()
		case kindPing:
			_ = fw.send(emptyFrame(kindPong, h.id))
		case kindPong:
		case kindNodes:
			// Bounded like calls: each runs the handler in a goroutine.
			if !ss.acquire() {
				fail(h.id, registry.CodeUnavailable, fmt.Sprintf("node busy: %d calls in flight on this connection", cap(ss.sem)))
				continue
			}
			calls.Add(1)
			go func(id uint64) {
				defer calls.Done()
				defer func() { <-ss.sem }()
				ctx, cancel := context.WithTimeout(ss.srv.ctx, 5*time.Second)
				defer cancel()
				nodes, err := ss.srv.h.Nodes(ctx)
				if err != nil {
					e := registry.AsError(err, registry.CodeUnavailable)
					reply(id, &replyMsg{Code: string(e.Code), Message: e.Message})
					return
				}
				reply(id, &replyMsg{Nodes: nodes})
			}(h.id)
		case kindHello:
			fail(h.id, registry.CodeBadRequest, "unexpected hello: the session is already open")
		default:
			fail(h.id, registry.CodeBadRequest, fmt.Sprintf("unknown frame kind %d", h.kind))
		}
	}
}

// maxTimeout is the largest call timeout, in microseconds, that fits a
// time.Duration.
const maxTimeout = int64(1<<63-1) / int64(time.Microsecond)

// acquire takes an in-flight slot if one is free.
func (ss *serverSession) acquire() bool {
	select {
	case ss.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// invoke runs one call on the handler and turns its outcome into a reply.
func (ss *serverSession) invoke(ctx context.Context, m *callMsg) (r *replyMsg) {
	call := &registry.Call{
		Component: m.Component, ID: m.ID, Method: m.Method, Args: m.Args,
		Client: m.Client, Seq: m.Seq, Ack: m.Ack,
	}
	if len(call.Client) == 0 {
		call.Client = ss.client
	}
	defer func() {
		// The handler recovers panics of component methods; this is the
		// last line for bugs in the handler itself.
		if p := recover(); p != nil {
			ss.srv.cfg.Logger.Error("rpc: handler panic", "panic", p, "component", m.Component, "method", m.Method)
			r = &replyMsg{Code: string(registry.CodeInternal), Message: fmt.Sprint("internal error: ", p)}
		}
	}()
	res, err := ss.srv.h.Invoke(ctx, call)
	if err != nil {
		e := registry.AsError(err, registry.CodeInternal)
		return &replyMsg{Code: string(e.Code), Message: e.Message, Addr: e.Addr}
	}
	return &replyMsg{Result: res}
}
