package rpc

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

const smallFrame = 1024

// TestBadInputHarmsNothing sends every kind of bad frame on one connection:
// each gets its typed error in a reply carrying its id, and the connection
// keeps serving valid calls (DESIGN guarantee 6).
func TestBadInputHarmsNothing(t *testing.T) {
	srv := startServer(t, nil, &ServerConfig{MaxFrameSize: smallFrame})
	rc := rawHello(t, srv.addr)
	s := rc.main

	valid, err := frameEnc.Marshal(&callMsg{Component: "c", ID: "i", Method: "echo", Args: mustCBOR(t, "x")})
	require.NoError(t, err)
	nested := bytes.Repeat([]byte{0x81}, 100) // 100 nested one-element arrays
	nested = append(nested, 0x00)
	deep, err := frameEnc.Marshal(&callMsg{Component: "c", ID: "i", Method: "echo"})
	require.NoError(t, err)
	// Splice the over-deep value in as Args: map(4) {1:..,2:..,3:..,4:nested}.
	deep[0] = 0xa4
	deep = append(append(deep, 0x04), nested...)

	cases := []struct {
		name string
		id   uint64
		send func()
		code registry.Code
	}{
		{"malformed CBOR", 11, func() { s.sendBody(kindCall, 11, []byte{0xff, 0xfe, 0xfd}) }, registry.CodeBadRequest},
		{"truncated CBOR", 12, func() { s.sendBody(kindCall, 12, valid[:len(valid)-3]) }, registry.CodeBadRequest},
		{"oversized frame", 13, func() { s.sendBody(kindCall, 13, bytes.Repeat([]byte{0xff}, 4*smallFrame)) }, registry.CodeTooLarge},
		{"unknown kind", 14, func() { s.sendBody(99, 14, valid) }, registry.CodeBadRequest},
		{"second hello", 15, func() { s.send(kindHello, 15, &hello{Version: ProtocolVersion}) }, registry.CodeBadRequest},
		{"wrong field types", 16, func() {
			s.send(kindCall, 16, map[int]any{1: 42, 2: []int{1, 2}, 3: true, 6: "seven"})
		}, registry.CodeBadRequest},
		{"empty call body", 17, func() { s.sendBody(kindCall, 17, nil) }, registry.CodeBadRequest},
		{"duplicate keys", 18, func() {
			// map(2) {1: "a", 1: "b"}
			s.sendBody(kindCall, 18, []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'})
		}, registry.CodeBadRequest},
		{"indefinite length", 19, func() {
			// map(_) {1: "a"} break
			s.sendBody(kindCall, 19, []byte{0xbf, 0x01, 0x61, 'a', 0xff})
		}, registry.CodeBadRequest},
		{"nesting too deep", 20, func() { s.sendBody(kindCall, 20, deep) }, registry.CodeBadRequest},
		{"trailing bytes", 21, func() { s.sendBody(kindCall, 21, append(append([]byte{}, valid...), 0x00)) }, registry.CodeBadRequest},
		{"not a map", 22, func() { s.send(kindCall, 22, "a string") }, registry.CodeBadRequest},
		{"frame one byte over the limit", 23, func() { s.sendBody(kindCall, 23, make([]byte, smallFrame+1)) }, registry.CodeTooLarge},
		{"oversized unknown kind", 24, func() { s.sendBody(77, 24, make([]byte, 2*smallFrame)) }, registry.CodeTooLarge},
		{"reply from a client", 25, func() { s.sendBody(kindReply, 25, valid) }, registry.CodeBadRequest},
		{"welcome from a client", 26, func() { s.sendBody(kindWelcome, 26, nil) }, registry.CodeBadRequest},
	}
	for _, c := range cases {
		c.send()
	}
	// Frames that get no answer and must not disturb anything.
	s.sendBody(kindCancel, 999, nil)
	s.sendBody(kindPong, 998, nil)

	ids := make([]uint64, 0, len(cases))
	for _, c := range cases {
		ids = append(ids, c.id)
	}
	got := s.replies(ids...)
	for _, c := range cases {
		r := got[c.id]
		assert.Equal(t, string(c.code), r.Code, "%s: %s", c.name, r.Message)
		assert.NotEmpty(t, r.Message, c.name)
		assert.Empty(t, r.Result, c.name)
	}
	require.Zero(t, srv.h.invokes.Load(), "no bad frame may reach the handler")

	// The same connection keeps working, for calls and for pings.
	s.echo(100)
	s.sendBody(kindPing, 101, nil)
	require.Equal(t, "pong", s.reply(101).Message)

	// A call whose frame is exactly at the limit is served.
	m := &callMsg{Component: "c", ID: "i", Method: "echo"}
	base, err := frameEnc.Marshal(m)
	require.NoError(t, err)
	// 1 key byte, then the 3-byte head of the byte string carrying Args,
	// then the 3-byte head of the CBOR byte string that Args encodes.
	m.Args = mustCBOR(t, make([]byte, smallFrame-len(base)-7))
	f, err := encodeFrame(kindCall, 102, m)
	require.NoError(t, err)
	require.Equal(t, smallFrame, len(f)-headerSize)
	s.write(f)
	r := s.reply(102)
	require.Empty(t, r.Code, r.Message)
	require.Equal(t, []byte(m.Args), []byte(r.Result[:len(m.Args)]))
}

// TestBrokenStreams: a stream cut in the middle of a frame, and a stream
// that announces a frame far over the limit, end only themselves.
func TestBrokenStreams(t *testing.T) {
	srv := startServer(t, nil, &ServerConfig{MaxFrameSize: smallFrame})
	rc := rawHello(t, srv.addr)

	t.Run("cut in the header", func(t *testing.T) {
		s := rc.open()
		s.echo(1)
		s.write(make([]byte, headerSize-4))
		require.NoError(t, s.st.Close())
		s.expectEOF()
		rc.main.echo(2)
	})
	t.Run("cut in the body", func(t *testing.T) {
		s := rc.open()
		s.echo(3)
		f, err := encodeFrame(kindCall, 4, &callMsg{Component: "c", ID: "i", Method: "echo"})
		require.NoError(t, err)
		s.write(f[:len(f)-2])
		require.NoError(t, s.st.Close())
		s.expectEOF()
		rc.main.echo(5)
	})
	t.Run("cut while skipping an oversized body", func(t *testing.T) {
		s := rc.open()
		f := make([]byte, headerSize+smallFrame)
		putHeader(f, header{length: 2 * smallFrame, kind: kindCall, id: 6})
		s.write(f)
		require.NoError(t, s.st.Close())
		s.expectEOF()
		rc.main.echo(7)
	})
	t.Run("frame over 16 times the limit", func(t *testing.T) {
		s := rc.open()
		s.echo(8)
		s.sendBody(kindCall, 9, nil) // a valid header, then:
		f := make([]byte, headerSize)
		putHeader(f, header{length: discardFactor*smallFrame + 1, kind: kindCall, id: 10})
		s.write(f)
		s.write(make([]byte, 4096)) // part of the huge body, never read
		r := s.replies(9, 10)
		require.Equal(t, string(registry.CodeBadRequest), r[9].Code)
		require.Equal(t, string(registry.CodeTooLarge), r[10].Code, r[10].Message)
		s.expectEOF()
		// Only that stream is gone.
		rc.main.echo(11)
		rc.open().echo(12)
	})
	t.Run("a frame 16 times the limit is still skipped", func(t *testing.T) {
		s := rc.open()
		s.sendBody(kindCall, 13, make([]byte, discardFactor*smallFrame))
		require.Equal(t, string(registry.CodeTooLarge), s.reply(13).Code)
		s.echo(14)
	})
	require.False(t, rc.sess.IsClosed())
	require.EqualValues(t, 9, srv.h.invokes.Load(), "only the valid echo calls reached the handler")
}

func TestHandshake(t *testing.T) {
	srv := startServer(t, nil, &ServerConfig{Token: "s3cret", Incarnation: "inc-1", Addr: "node-1:7401", HandshakeTimeout: 300 * time.Millisecond})

	refused := func(t *testing.T, rc *rawConn, w welcome, code registry.Code) {
		t.Helper()
		require.Equal(t, string(code), w.Code, w.Message)
		require.NotEmpty(t, w.Message)
		require.Empty(t, w.Incarnation, "a refused session learns nothing about the node")
		require.Eventually(t, rc.sess.IsClosed, ioTimeout, 5*time.Millisecond, "the node must close a refused session")
	}

	t.Run("accepted", func(t *testing.T) {
		rc := rawDial(t, srv.addr, nil)
		w := rc.main.hello(hello{Version: ProtocolVersion, Client: []byte("me"), Token: "s3cret"})
		require.Empty(t, w.Code, w.Message)
		require.Equal(t, "inc-1", w.Incarnation)
		require.Equal(t, "node-1:7401", w.Addr)
		require.Equal(t, uint64(ProtocolVersion), w.Version)
		require.Equal(t, uint64(DefaultMaxFrameSize), w.MaxFrame)
		rc.main.echo(1)
		// The session outlives the handshake timeout.
		time.Sleep(2 * srv.cfg.HandshakeTimeout)
		rc.main.echo(2)
	})
	t.Run("wrong version", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		refused(t, rc, rc.main.hello(hello{Version: ProtocolVersion + 1, Token: "s3cret"}), registry.CodeBadRequest)
	})
	t.Run("no version", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		refused(t, rc, rc.main.hello(hello{Token: "s3cret"}), registry.CodeBadRequest)
	})
	t.Run("missing token", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		refused(t, rc, rc.main.hello(hello{Version: ProtocolVersion}), registry.CodeUnauthenticated)
	})
	t.Run("wrong token", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		refused(t, rc, rc.main.hello(hello{Version: ProtocolVersion, Token: "s3cre"}), registry.CodeUnauthenticated)
	})
	t.Run("client id too long", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		refused(t, rc, rc.main.hello(hello{Version: ProtocolVersion, Token: "s3cret", Client: make([]byte, 65)}), registry.CodeBadRequest)
	})
	t.Run("first frame is not a hello", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		rc.main.send(kindCall, 1, &callMsg{Component: "c", ID: "i", Method: "echo"})
		refused(t, rc, rc.main.welcome(), registry.CodeBadRequest)
	})
	t.Run("malformed hello", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		rc.main.sendBody(kindHello, 0, []byte{0xa1, 0x01})
		refused(t, rc, rc.main.welcome(), registry.CodeBadRequest)
	})
	t.Run("empty hello", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		rc.main.sendBody(kindHello, 0, nil)
		refused(t, rc, rc.main.welcome(), registry.CodeBadRequest)
	})
	t.Run("oversized hello", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		f := make([]byte, headerSize)
		putHeader(f, header{length: DefaultMaxFrameSize + 1, kind: kindHello})
		rc.main.write(f)
		refused(t, rc, rc.main.welcome(), registry.CodeTooLarge)
	})
	t.Run("no hello in time", func(t *testing.T) {
		t.Parallel()
		rc := rawDial(t, srv.addr, nil)
		rc.main.write(make([]byte, headerSize-1)) // not even a whole header
		require.Eventually(t, rc.sess.IsClosed, ioTimeout, 5*time.Millisecond)
	})
	t.Run("no stream in time", func(t *testing.T) {
		t.Parallel()
		rc := rawConnect(t, srv.addr, nil)
		require.Eventually(t, rc.sess.IsClosed, ioTimeout, 5*time.Millisecond)
	})
	t.Run("client with the wrong token gets unauthenticated, not retries", func(t *testing.T) {
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, Token: "nope"})
		before := srv.h.invokes.Load()
		start := time.Now()
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "echo"})
		re := regErr(t, err)
		require.Equal(t, registry.CodeUnauthenticated, re.Code, re.Message)
		require.True(t, re.Remote)
		require.Less(t, time.Since(start), DefaultCallTimeout/2, "a refused handshake is final")
		require.Equal(t, before, srv.h.invokes.Load())
	})
	t.Run("client with the token", func(t *testing.T) {
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, Token: "s3cret"})
		res, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "echo", Args: mustCBOR(t, 1)})
		require.NoError(t, err)
		require.Equal(t, mustCBOR(t, 1), res)
	})
}

// TestMaxStreams: streams past the limit are closed by the node; the ones
// already open keep working, and a freed slot can be used again.
func TestMaxStreams(t *testing.T) {
	const limit = 4
	srv := startServer(t, nil, &ServerConfig{MaxStreams: limit})
	rc := rawHello(t, srv.addr)
	streams := []*rawStream{rc.main}
	for i := 1; i < limit; i++ {
		s := rc.open()
		s.echo(uint64(i))
		streams = append(streams, s)
	}
	for i := range 3 {
		extra := rc.open()
		extra.sendBody(kindPing, uint64(100+i), nil)
		extra.expectEOF()
	}
	for i, s := range streams {
		s.echo(uint64(10 + i))
	}
	require.False(t, rc.sess.IsClosed())

	// Ending a stream frees its slot.
	require.NoError(t, streams[limit-1].st.Close())
	streams[limit-1].expectEOF()
	require.Eventually(t, func() bool {
		s := rc.open()
		s.sendBody(kindPing, 7, nil)
		h, _, err := s.next()
		return err == nil && h.kind == kindPong
	}, ioTimeout, 10*time.Millisecond)
	streams[0].echo(20)
}

// TestMaxConns: past MaxConns a new connection is closed at once and its
// client moves to another node; the connections already open keep working,
// and a closed one frees its slot.
func TestMaxConns(t *testing.T) {
	a := startServer(t, nil, &ServerConfig{MaxConns: 2})
	b := startServer(t, nil, nil)
	c1 := newClient(t, ClientConfig{Nodes: []string{a.addr}})
	c2 := newClient(t, ClientConfig{Nodes: []string{a.addr}})
	for _, c := range []*Client{c1, c2} {
		_, err := c.Invoke(t.Context(), echoCall(t, 1))
		require.NoError(t, err)
	}

	c3 := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
	_, err := c3.Invoke(t.Context(), echoCall(t, 2))
	require.NoError(t, err)
	require.EqualValues(t, 2, a.h.invokes.Load())
	require.EqualValues(t, 1, b.h.invokes.Load(), "the third connection was refused; b served")
	_, err = c1.Invoke(t.Context(), echoCall(t, 3))
	require.NoError(t, err, "open connections keep working")

	require.NoError(t, c2.Close())
	require.Eventually(t, func() bool {
		c4, err := NewClient(ClientConfig{Nodes: []string{a.addr}, CallTimeout: 200 * time.Millisecond})
		require.NoError(t, err)
		defer c4.Close()
		_, err = c4.Invoke(t.Context(), echoCall(t, 4))
		return err == nil
	}, ioTimeout, 20*time.Millisecond, "a closed connection frees its slot")
}

// TestReusedCallID: a call id reused while its call runs cancels the older
// call; the newer one stays cancelable, and both end with the connection.
func TestReusedCallID(t *testing.T) {
	srv := startServer(t, nil, nil)
	rc := rawHello(t, srv.addr)
	block := &callMsg{Component: "c", ID: "i", Method: "block"}
	rc.main.send(kindCall, 5, block)
	srv.h.waitStarted(t)
	rc.main.send(kindCall, 5, block)
	srv.h.waitStarted(t)
	r := rc.main.reply(5)
	require.Equal(t, string(registry.CodeCanceled), r.Code, "the older call was canceled")
	require.ErrorIs(t, <-srv.h.ended, context.Canceled)

	// The newer call still answers to its cancel frame...
	rc.main.sendBody(kindCancel, 5, nil)
	select {
	case err := <-srv.h.ended:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(ioTimeout):
		t.Fatal("the newer call ignored its cancel frame")
	}
	require.Equal(t, string(registry.CodeCanceled), rc.main.reply(5).Code)

	// ...and a reused id still ends with its connection.
	rc.main.send(kindCall, 6, block)
	srv.h.waitStarted(t)
	rc.main.send(kindCall, 6, block)
	srv.h.waitStarted(t)
	rc.main.reply(6)
	<-srv.h.ended
	require.NoError(t, rc.sess.Close())
	select {
	case err := <-srv.h.ended:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(ioTimeout):
		t.Fatal("the newer call outlived its connection")
	}
}
