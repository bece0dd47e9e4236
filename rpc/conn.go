package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/containerd-lite/containerd-lite/registry"
)

// TransportError is a failure to reach a node or to hear back from it. The
// call may or may not have reached the node; exactly-once retries make it
// safe to try again.
type TransportError struct {
	Addr string
	Err  error
}

func (e *TransportError) Error() string { return "rpc: " + e.Addr + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// connConfig is what a connection needs from its client.
type connConfig struct {
	client       []byte
	token        string
	tls          *tls.Config
	dialTimeout  time.Duration
	maxFrame     int
	suspectAfter time.Duration
}

// conn is one client connection: a yamux session whose first stream carries
// multiplexed calls.
type conn struct {
	addr        string
	incarnation string
	announced   []string // live nodes, from the welcome
	cfg         connConfig
	sess        *yamux.Session
	st          *yamux.Stream
	fw          *frameWriter
	epoch       time.Time     // for lastRecv
	maxSend     int           // request limit: ours or the node's, the lower
	slots       chan struct{} // calls in flight, within the node's limit; nil: none

	mu      sync.Mutex
	pending map[uint64]chan frameIn
	nextID  uint64
	err     error

	lastRecv  atomic.Int64 // nanoseconds since epoch
	pingOut   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type frameIn struct {
	kind byte
	body []byte
	err  error // the call failed locally (kind 0 with err nil: connection failed)
}

var waiterPool = sync.Pool{New: func() any { return make(chan frameIn, 1) }}

// dial connects to addr and performs the handshake.
func dial(ctx context.Context, addr string, cfg connConfig) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	d := net.Dialer{}
	var nc net.Conn
	var err error
	if cfg.tls != nil {
		td := tls.Dialer{NetDialer: &d, Config: cfg.tls}
		nc, err = td.DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	rc := newReadErrConn(nc)
	sess, err := yamux.Client(rc, yamuxConfig())
	if err != nil {
		nc.Close()
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		err = rc.explain(err)
		sess.Close()
		return nil, err
	}
	c := &conn{
		addr: addr, cfg: cfg, sess: sess, st: st, epoch: time.Now(),
		pending: map[uint64]chan frameIn{}, closed: make(chan struct{}),
	}
	br := bufio.NewReaderSize(st, 32<<10)
	if err := c.handshake(ctx, br); err != nil {
		err = rc.explain(err)
		sess.Close()
		return nil, err
	}
	rc.opened.Store(true)
	c.fw = newFrameWriter(st)
	c.lastRecv.Store(int64(time.Since(c.epoch)))
	c.wg.Add(2)
	go c.readLoop(br)
	go c.watchdog()
	return c, nil
}

// readErrConn remembers the first error reading a connection. yamux ends
// its session on it without telling the streams why (they see EOF,
// "session shutdown" or "stream closed"), and under TLS it is the node's
// reason for refusing the client: TLS 1.3 reports a missing or rejected
// client certificate in an alert that arrives after the client's side of
// the handshake completed.
type readErrConn struct {
	net.Conn
	opened atomic.Bool   // the session is open: pass errors through
	failed chan struct{} // closed once err is set
	once   sync.Once
	err    error
}

// readErrWait is how long a failed write waits for the reader to see why.
const readErrWait = 100 * time.Millisecond

func newReadErrConn(c net.Conn) *readErrConn {
	return &readErrConn{Conn: c, failed: make(chan struct{})}
}

func (c *readErrConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { c.err = err; close(c.failed) })
	}
	return n, err
}

// Write, when it fails while the session opens (the node hung up: broken
// pipe), waits a moment for the reader to read the node's alert: once the
// write error ends the session, its close would cut the reader short.
func (c *readErrConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && !c.opened.Load() {
		t := time.NewTimer(readErrWait)
		select {
		case <-c.failed:
		case <-t.C:
		}
		t.Stop()
	}
	return n, err
}

// explain replaces a failure to open the session (EOF, session shutdown,
// broken pipe) with the read error that ended it, if any. Call it before
// closing the session, whose own close would be the read error then.
func (c *readErrConn) explain(err error) error {
	var re *registry.Error
	if errors.As(err, &re) { // the node's refusal: final
		return err
	}
	select {
	case <-c.failed:
		return fmt.Errorf("handshake: %w", c.err)
	default:
		return err
	}
}

func (c *conn) handshake(ctx context.Context, br *bufio.Reader) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.st.SetDeadline(dl)
		defer c.st.SetDeadline(time.Time{})
	}
	f, err := encodeFrame(kindHello, 0, &hello{Version: ProtocolVersion, Client: c.cfg.client, Token: c.cfg.token})
	if err != nil {
		return err
	}
	if _, err := c.st.Write(f); err != nil {
		return err
	}
	h, body, err := readFrame(br, c.cfg.maxFrame)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	var w welcome
	if h.kind != kindWelcome {
		return fmt.Errorf("handshake: unexpected frame kind %d", h.kind)
	}
	if err := decodeBody(body, &w); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if w.Code != "" {
		return &registry.Error{Code: registry.Code(w.Code), Message: w.Message, Remote: true}
	}
	c.incarnation = w.Incarnation
	c.announced = w.Nodes
	c.maxSend = c.cfg.maxFrame
	if w.MaxFrame > 0 && w.MaxFrame < uint64(c.maxSend) {
		// The node would refuse a larger request, and one past 16 times its
		// limit ends the connection with every call on it: fail it here.
		c.maxSend = int(w.MaxFrame)
	}
	if w.MaxInflight > 0 {
		// Past its limit the node refuses calls: queue them here instead.
		c.slots = make(chan struct{}, min(w.MaxInflight, 1<<16))
	}
	return nil
}

func (c *conn) readLoop(br *bufio.Reader) {
	defer c.wg.Done()
	for {
		h, body, err := readFrame(br, c.cfg.maxFrame)
		if tl := (*frameTooLarge)(nil); errors.As(err, &tl) {
			err = fmt.Errorf("node sent %w", err)
			if int64(tl.length) <= discardFactor*int64(c.cfg.maxFrame) {
				// A reply over our limit (the node's is higher) fails its
				// call only, as the node does with oversized requests.
				if _, err = io.CopyN(io.Discard, br, int64(tl.length)); err == nil {
					c.lastRecv.Store(int64(time.Since(c.epoch)))
					c.deliver(h.id, frameIn{err: registry.Errorf(registry.CodeTooLarge, "reply: %v", tl)})
					continue
				}
			}
		}
		if err != nil {
			c.fail(err)
			return
		}
		c.lastRecv.Store(int64(time.Since(c.epoch)))
		switch h.kind {
		case kindPong:
			c.pingOut.Store(false)
		case kindPing:
			_ = c.fw.send(emptyFrame(kindPong, h.id))
			continue
		}
		c.deliver(h.id, frameIn{kind: h.kind, body: body})
	}
}

// deliver hands a frame to the call waiting for it, if any.
func (c *conn) deliver(id uint64, in frameIn) {
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		ch <- in
	}
}

// watchdog pings a node that has been silent while calls wait on it, and
// abandons the connection when the ping goes unanswered too: a SIGSTOPped
// or wedged node keeps its TCP port open but answers nothing.
func (c *conn) watchdog() {
	defer c.wg.Done()
	tick := time.NewTicker(max(c.cfg.suspectAfter/4, time.Millisecond)) // NewTicker panics on 0
	defer tick.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		waiting := len(c.pending)
		c.mu.Unlock()
		if waiting == 0 {
			continue
		}
		silent := time.Since(c.epoch) - time.Duration(c.lastRecv.Load())
		switch {
		case silent > 2*c.cfg.suspectAfter:
			c.fail(ErrUnresponsive)
			return
		case silent > c.cfg.suspectAfter && !c.pingOut.Load():
			c.pingOut.Store(true)
			_ = c.fw.send(emptyFrame(kindPing, 0))
		}
	}
}

// fail closes the connection and fails every pending call with err.
func (c *conn) fail(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		pending := c.pending
		c.pending = nil
		c.mu.Unlock()
		close(c.closed)
		c.sess.Close()
		for _, ch := range pending {
			ch <- frameIn{} // kind 0: connection failed
		}
	})
}

func (c *conn) close() {
	c.fail(ErrConnClosed)
	c.fw.close()
	c.wg.Wait()
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrConnClosed
}

// roundTrip sends one frame and waits for its answer. Transport failures
// come back as *TransportError; a canceled ctx as ctx.Err() after telling
// the node to cancel the call.
func (c *conn) roundTrip(ctx context.Context, kind byte, body any) (frameIn, error) {
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
			defer func() { <-c.slots }()
		case <-ctx.Done():
			return frameIn{}, ctx.Err()
		case <-c.closed:
			return frameIn{}, &TransportError{Addr: c.addr, Err: c.failure()}
		}
	}
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return frameIn{}, &TransportError{Addr: c.addr, Err: c.failure()}
	}
	if len(c.pending) == 0 {
		// The watchdog measures the node's silence while calls wait: it
		// starts now, not at the last frame received before an idle spell.
		c.lastRecv.Store(int64(time.Since(c.epoch)))
	}
	c.nextID++
	id := c.nextID
	ch := waiterPool.Get().(chan frameIn)
	c.pending[id] = ch
	c.mu.Unlock()

	f, err := encodeFrame(kind, id, body)
	if err == nil && len(f)-headerSize > c.maxSend {
		err = registry.Errorf(registry.CodeTooLarge, "request of %d bytes exceeds the frame limit of %d", len(f)-headerSize, c.maxSend)
	}
	if err == nil {
		if err = c.fw.send(f); err != nil {
			err = &TransportError{Addr: c.addr, Err: err}
		}
	}
	if err != nil {
		c.forget(id)
		return frameIn{}, err
	}
	select {
	case in := <-ch:
		waiterPool.Put(ch)
		if in.err != nil {
			return frameIn{}, in.err
		}
		if in.kind == 0 {
			return frameIn{}, &TransportError{Addr: c.addr, Err: c.failure()}
		}
		return in, nil
	case <-ctx.Done():
		if c.forget(id) {
			_ = c.fw.send(emptyFrame(kindCancel, id))
		}
		return frameIn{}, ctx.Err()
	}
}

// forget drops a pending call; it reports whether the call was still
// pending (no answer had been routed to it).
func (c *conn) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; ok {
		delete(c.pending, id)
		return true
	}
	return false
}

// call performs one call on this connection.
func (c *conn) call(ctx context.Context, m *callMsg) ([]byte, error) {
	in, err := c.roundTrip(ctx, kindCall, m)
	if err != nil {
		return nil, err
	}
	return decodeReply(c.addr, in)
}

func decodeReply(addr string, in frameIn) ([]byte, error) {
	if in.kind != kindReply {
		return nil, &TransportError{Addr: addr, Err: fmt.Errorf("unexpected frame kind %d", in.kind)}
	}
	var r replyMsg
	err := decodeBody(in.body, &r)
	releaseFrame(in.body)
	if err != nil {
		return nil, &TransportError{Addr: addr, Err: fmt.Errorf("malformed reply: %w", err)}
	}
	if r.Code != "" {
		return nil, &registry.Error{Code: registry.Code(r.Code), Message: r.Message, Addr: r.Addr, Remote: true}
	}
	return r.Result, nil
}

// nodes asks the node for the live nodes.
func (c *conn) nodes(ctx context.Context) ([]string, error) {
	in, err := c.roundTrip(ctx, kindNodes, nil)
	if err != nil {
		return nil, err
	}
	if in.kind != kindReply {
		return nil, &TransportError{Addr: c.addr, Err: fmt.Errorf("unexpected frame kind %d", in.kind)}
	}
	var r replyMsg
	if err := decodeBody(in.body, &r); err != nil {
		return nil, &TransportError{Addr: c.addr, Err: err}
	}
	if r.Code != "" {
		return nil, &registry.Error{Code: registry.Code(r.Code), Message: r.Message, Remote: true}
	}
	return r.Nodes, nil
}
