package rpc

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

// ioTimeout bounds every blocking read or write a test makes, so a bug shows
// up as a failure instead of a hung test. Generous: tests never assert speed.
const ioTimeout = 15 * time.Second

// testHandler implements Handler. Its methods, chosen by Call.Method:
//
//	echo        returns Args unchanged
//	sleep       Args = milliseconds; sleeps (or until ctx ends), then echoes
//	block       waits for ctx to end and reports ctx.Err() on ended
//	deadline    returns the ctx deadline in Unix nanoseconds (0: none)
//	panic       panics
//	big         Args = n; returns a CBOR byte string of n bytes
//	fail        returns an application error
//	unavailable returns CodeUnavailable
//	redirect    returns CodeRedirect to redirectTo
//
// Every call is recorded (after started is signalled).
type testHandler struct {
	redirectTo string
	nodes      []string
	onNodes    func() // runs in every Nodes call when set

	invokes atomic.Int64
	started chan *registry.Call // a call began (dropped when full)
	ended   chan error          // ctx.Err() seen by "block" calls

	// hook, when set, runs before the method and may replace it by
	// returning handled=true.
	hook func(ctx context.Context, call *registry.Call) (res []byte, handled bool, err error)

	mu    sync.Mutex
	calls []registry.Call
}

func newTestHandler() *testHandler {
	return &testHandler{started: make(chan *registry.Call, 4096), ended: make(chan error, 4096)}
}

func (h *testHandler) Invoke(ctx context.Context, call *registry.Call) ([]byte, error) {
	h.invokes.Add(1)
	h.mu.Lock()
	h.calls = append(h.calls, *call)
	h.mu.Unlock()
	select {
	case h.started <- call:
	default:
	}
	if h.hook != nil {
		if res, ok, err := h.hook(ctx, call); ok {
			return res, err
		}
	}
	switch call.Method {
	case "echo":
		return call.Args, nil
	case "sleep":
		var ms int
		if err := cbor.Unmarshal(call.Args, &ms); err != nil {
			return nil, registry.Errorf(registry.CodeBadRequest, "sleep: %v", err)
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return call.Args, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "block":
		<-ctx.Done()
		h.ended <- ctx.Err()
		return nil, ctx.Err()
	case "deadline":
		var ns int64
		if dl, ok := ctx.Deadline(); ok {
			ns = dl.UnixNano()
		}
		return cbor.Marshal(ns)
	case "panic":
		panic("test handler panic")
	case "big":
		var n int
		if err := cbor.Unmarshal(call.Args, &n); err != nil {
			return nil, registry.Errorf(registry.CodeBadRequest, "big: %v", err)
		}
		return cbor.Marshal(make([]byte, n))
	case "fail":
		return nil, &registry.Error{Code: registry.CodeApplication, Message: "the method failed"}
	case "unavailable":
		return nil, &registry.Error{Code: registry.CodeUnavailable, Message: "not now"}
	case "redirect":
		return nil, &registry.Error{Code: registry.CodeRedirect, Message: "owned elsewhere", Addr: h.redirectTo}
	}
	return nil, registry.Errorf(registry.CodeNotFound, "no method %q", call.Method)
}

func (h *testHandler) Nodes(ctx context.Context) ([]string, error) {
	if h.onNodes != nil {
		h.onNodes()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodes, nil
}

// setNodes changes the live nodes reported from now on.
func (h *testHandler) setNodes(nodes ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes = nodes
}

// recorded returns the calls seen so far.
func (h *testHandler) recorded() []registry.Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]registry.Call(nil), h.calls...)
}

// waitStarted waits for the next call to reach the handler.
func (h *testHandler) waitStarted(t testing.TB) *registry.Call {
	t.Helper()
	select {
	case c := <-h.started:
		return c
	case <-time.After(ioTimeout):
		t.Fatal("no call reached the handler")
		return nil
	}
}

// testServer is a Server serving on 127.0.0.1:0.
type testServer struct {
	*Server
	h    *testHandler
	addr string
}

// startServer serves h (a fresh testHandler when nil) until the test ends.
func startServer(t testing.TB, h *testHandler, cfg *ServerConfig) *testServer {
	t.Helper()
	if h == nil {
		h = newTestHandler()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewServer(h, cfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, ErrServerClosed)
	})
	return &testServer{Server: srv, h: h, addr: ln.Addr().String()}
}

// newClient returns a client closed when the test ends.
func newClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	require.NoError(t, err)
	return b
}

// closedAddr returns a loopback address whose port refuses connections.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// codeOf asserts err is a *registry.Error and returns it.
func regErr(t testing.TB, err error) *registry.Error {
	t.Helper()
	require.Error(t, err)
	var re *registry.Error
	require.True(t, errors.As(err, &re), "not a *registry.Error: %T %v", err, err)
	return re
}

// rawConn is a hand-driven client connection: TCP + yamux and the frame
// helpers, with nothing of conn's logic, so tests can send anything.
type rawConn struct {
	t    testing.TB
	sess *yamux.Session
	main *rawStream
}

type rawStream struct {
	t  testing.TB
	st *yamux.Stream
	br *bufio.Reader
}

// rawDial connects to addr and opens the first stream without a hello.
func rawDial(t testing.TB, addr string, tlsCfg *tls.Config) *rawConn {
	t.Helper()
	rc := rawConnect(t, addr, tlsCfg)
	rc.main = rc.open()
	return rc
}

// rawConnect connects to addr and opens no stream.
func rawConnect(t testing.TB, addr string, tlsCfg *tls.Config) *rawConn {
	t.Helper()
	var nc net.Conn
	var err error
	if tlsCfg != nil {
		nc, err = tls.Dial("tcp", addr, tlsCfg)
	} else {
		nc, err = net.Dial("tcp", addr)
	}
	require.NoError(t, err)
	sess, err := yamux.Client(nc, yamuxConfig())
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })
	return &rawConn{t: t, sess: sess}
}

// rawHello dials addr and completes a handshake.
func rawHello(t testing.TB, addr string) *rawConn {
	t.Helper()
	rc := rawDial(t, addr, nil)
	w := rc.main.hello(hello{Version: ProtocolVersion, Client: []byte("raw")})
	require.Empty(t, w.Code, w.Message)
	return rc
}

func (rc *rawConn) open() *rawStream {
	rc.t.Helper()
	st, err := rc.sess.OpenStream()
	require.NoError(rc.t, err)
	return &rawStream{t: rc.t, st: st, br: bufio.NewReader(st)}
}

func (s *rawStream) write(b []byte) {
	s.t.Helper()
	require.NoError(s.t, s.st.SetWriteDeadline(time.Now().Add(ioTimeout)))
	_, err := s.st.Write(b)
	require.NoError(s.t, err)
}

// sendBody writes a frame with the given raw body.
func (s *rawStream) sendBody(kind byte, id uint64, body []byte) {
	s.t.Helper()
	f := make([]byte, headerSize+len(body))
	putHeader(f, header{length: uint32(len(body)), kind: kind, id: id})
	copy(f[headerSize:], body)
	s.write(f)
}

// send writes a frame with v encoded as its body.
func (s *rawStream) send(kind byte, id uint64, v any) {
	s.t.Helper()
	f, err := encodeFrame(kind, id, v)
	require.NoError(s.t, err)
	s.write(f)
}

// next reads the next frame.
func (s *rawStream) next() (header, []byte, error) {
	require.NoError(s.t, s.st.SetReadDeadline(time.Now().Add(ioTimeout)))
	return readFrame(s.br, 64<<20)
}

func (s *rawStream) hello(m hello) welcome {
	s.t.Helper()
	s.send(kindHello, 0, &m)
	return s.welcome()
}

func (s *rawStream) welcome() welcome {
	s.t.Helper()
	h, body, err := s.next()
	require.NoError(s.t, err)
	require.Equal(s.t, kindWelcome, h.kind)
	var w welcome
	require.NoError(s.t, decodeBody(body, &w))
	return w
}

// replies reads frames until a reply (or pong) arrived for each id.
func (s *rawStream) replies(ids ...uint64) map[uint64]replyMsg {
	s.t.Helper()
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[uint64]replyMsg{}
	for len(got) < len(want) {
		h, body, err := s.next()
		require.NoError(s.t, err, "waiting for replies to %v, have %v", ids, got)
		require.True(s.t, want[h.id], "frame for unexpected id %d (kind %d)", h.id, h.kind)
		_, dup := got[h.id]
		require.False(s.t, dup, "two answers for id %d", h.id)
		var r replyMsg
		switch h.kind {
		case kindReply:
			require.NoError(s.t, decodeBody(body, &r))
		case kindPong:
			r.Message = "pong"
		default:
			s.t.Fatalf("unexpected frame kind %d for id %d", h.kind, h.id)
		}
		got[h.id] = r
	}
	return got
}

func (s *rawStream) reply(id uint64) replyMsg {
	s.t.Helper()
	return s.replies(id)[id]
}

// echo makes a valid call and checks its answer.
func (s *rawStream) echo(id uint64) {
	s.t.Helper()
	args := mustCBOR(s.t, id)
	s.send(kindCall, id, &callMsg{Component: "c", ID: "i", Method: "echo", Args: args, Seq: id})
	r := s.reply(id)
	require.Empty(s.t, r.Code, r.Message)
	require.Equal(s.t, args, []byte(r.Result))
}

// expectEOF asserts that the node closed the stream (after any frames).
func (s *rawStream) expectEOF() {
	s.t.Helper()
	for {
		h, _, err := s.next()
		if err != nil {
			require.ErrorIs(s.t, err, io.EOF)
			return
		}
		s.t.Logf("frame kind %d id %d before EOF", h.kind, h.id)
	}
}

// proxy forwards TCP connections to a target until frozen: then it stops
// forwarding bytes either way but keeps every connection open, like a
// SIGSTOPped process whose kernel still accepts connections.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn
	gate   chan struct{} // closed while forwarding
	closed chan struct{}
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, gate: make(chan struct{}), closed: make(chan struct{})}
	close(p.gate)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// freeze stops forwarding.
func (p *proxy) freeze() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			select {
			case <-gate:
			case <-p.closed:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "containerd-lite test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}
