package rpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

func echoCall(t testing.TB, v any) *registry.Call {
	return &registry.Call{Component: "c", ID: "i", Method: "echo", Args: mustCBOR(t, v)}
}

func TestEcho(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, ClientID: []byte("client-1")})
	res, err := c.Invoke(t.Context(), echoCall(t, "hello"))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, "hello"), res)

	got := srv.h.recorded()
	require.Len(t, got, 1)
	assert.Equal(t, "c", got[0].Component)
	assert.Equal(t, "i", got[0].ID)
	assert.Equal(t, "echo", got[0].Method)
	assert.Equal(t, []byte("client-1"), got[0].Client)
	assert.Equal(t, uint64(1), got[0].Seq)
	assert.Equal(t, uint64(1), got[0].Ack)
	assert.Equal(t, []byte("client-1"), c.ID())

	// Unknown methods are a final not_found from the node.
	_, err = c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "nope"})
	re := regErr(t, err)
	assert.Equal(t, registry.CodeNotFound, re.Code)
	assert.True(t, re.Remote)
}

func TestDeadlinePropagation(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, CallTimeout: 7 * time.Second})
	call := &registry.Call{Component: "c", ID: "i", Method: "deadline"}
	seen := func(res []byte) time.Time {
		var ns int64
		require.NoError(t, cbor.Unmarshal(res, &ns))
		require.NotZero(t, ns, "the handler saw no deadline")
		return time.Unix(0, ns)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	res, err := c.Invoke(ctx, call)
	require.NoError(t, err)
	got := seen(res)
	// The deadline travels as time left, so the node's is the client's plus
	// the transit time: never much earlier, a little later.
	assert.WithinRange(t, got, want.Add(-50*time.Millisecond), want.Add(2*time.Second))

	// Without a deadline of its own a call gets the client's CallTimeout.
	start := time.Now()
	res, err = c.Invoke(t.Context(), call)
	require.NoError(t, err)
	assert.WithinRange(t, seen(res), start.Add(7*time.Second-50*time.Millisecond), time.Now().Add(7*time.Second+50*time.Millisecond))

	// A raw call without a timeout has no deadline on the node.
	rc := rawHello(t, srv.addr)
	rc.main.send(kindCall, 1, &callMsg{Component: "c", ID: "i", Method: "deadline"})
	r := rc.main.reply(1)
	require.Empty(t, r.Code, r.Message)
	var ns int64
	require.NoError(t, cbor.Unmarshal(r.Result, &ns))
	require.Zero(t, ns)

	// A timeout far beyond any real deadline is not an instant expiry.
	rc.main.send(kindCall, 2, &callMsg{Component: "c", ID: "i", Method: "deadline", Timeout: 1 << 62})
	r = rc.main.reply(2)
	require.Empty(t, r.Code, r.Message)
	require.NoError(t, cbor.Unmarshal(r.Result, &ns))
	require.True(t, ns == 0 || time.Unix(0, ns).After(time.Now().Add(24*time.Hour)), "deadline %v", time.Unix(0, ns))
}

// TestDeadlineExceeded: a call still running at its deadline ends with
// deadline_exceeded, and the node's handler sees its context end.
func TestDeadlineExceeded(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "block"})
	require.Equal(t, registry.CodeDeadlineExceeded, regErr(t, err).Code, err)
	select {
	case err := <-srv.h.ended:
		// Its own deadline, or the client's cancel frame sent when the
		// client's (slightly earlier) deadline passed: either ends it.
		require.Error(t, err)
	case <-time.After(ioTimeout):
		t.Fatal("the handler's context did not end")
	}
	require.EqualValues(t, 1, srv.h.invokes.Load(), "a call that hit its deadline is not retried")
}

// TestCancel: canceling the caller's context cancels the call's context on
// the node, through the cancel frame.
func TestCancel(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "block"})
		errc <- err
	}()
	srv.h.waitStarted(t)
	cancel()
	err := <-errc
	require.Equal(t, registry.CodeCanceled, regErr(t, err).Code, err)
	select {
	case err := <-srv.h.ended:
		require.ErrorIs(t, err, context.Canceled, "the node must see a cancel, not its deadline")
	case <-time.After(ioTimeout):
		t.Fatal("the handler's context was not canceled")
	}
	// The connection is fine afterwards.
	_, err = c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
}

// TestNoHeadOfLineBlocking: calls keep completing on a connection while a
// slow call on the same connection is still running.
func TestNoHeadOfLineBlocking(t *testing.T) {
	h := newTestHandler()
	release := make(chan struct{})
	h.hook = func(ctx context.Context, call *registry.Call) ([]byte, bool, error) {
		if call.Method != "slow" {
			return nil, false, nil
		}
		select {
		case <-release:
			return []byte{0xf6}, true, nil
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
	srv := startServer(t, h, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	slow := make(chan error, 1)
	go func() {
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "slow", Method: "slow"})
		slow <- err
	}()
	h.waitStarted(t)
	conn := connTo(c, srv.addr)
	for i := range 50 {
		res, err := c.Invoke(t.Context(), echoCall(t, i))
		require.NoError(t, err)
		require.Equal(t, mustCBOR(t, i), res)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow call ended early: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-slow)
	require.Same(t, conn, connTo(c, srv.addr), "all calls shared one connection")
}

// TestHandlerPanic: a panic in the handler becomes an internal error for
// that call only; it is not retried and the node keeps serving.
func TestHandlerPanic(t *testing.T) {
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
	_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "panic"})
	re := regErr(t, err)
	require.Equal(t, registry.CodeInternal, re.Code)
	require.True(t, re.Remote)
	require.Contains(t, re.Message, "test handler panic")
	require.EqualValues(t, 1, a.h.invokes.Load())
	require.Zero(t, b.h.invokes.Load(), "internal errors are not retried")
	res, err := c.Invoke(t.Context(), echoCall(t, "after"))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, "after"), res)
}

func TestApplicationError(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "fail"})
	re := regErr(t, err)
	require.Equal(t, registry.CodeApplication, re.Code)
	require.Equal(t, "the method failed", re.Message)
	require.True(t, re.Remote)
}

// TestFrameLimits covers both directions and both ends' limits.
func TestFrameLimits(t *testing.T) {
	t.Run("reply over the node's limit", func(t *testing.T) {
		srv := startServer(t, nil, &ServerConfig{MaxFrameSize: 4096})
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "big", Args: mustCBOR(t, 8192)})
		re := regErr(t, err)
		require.Equal(t, registry.CodeTooLarge, re.Code, re.Message)
		require.True(t, re.Remote)
		require.EqualValues(t, 1, srv.h.invokes.Load(), "too_large is final")
		_, err = c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "big", Args: mustCBOR(t, 1000)})
		require.NoError(t, err)
	})
	t.Run("request over the client's limit", func(t *testing.T) {
		srv := startServer(t, nil, nil)
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, MaxFrameSize: 4096})
		_, err := c.Invoke(t.Context(), echoCall(t, 1))
		require.NoError(t, err)
		conn := connTo(c, srv.addr)
		_, err = c.Invoke(t.Context(), echoCall(t, make([]byte, 8192)))
		re := regErr(t, err)
		require.Equal(t, registry.CodeTooLarge, re.Code, re.Message)
		require.False(t, re.Remote, "detected locally")
		require.EqualValues(t, 1, srv.h.invokes.Load(), "never sent")
		_, err = c.Invoke(t.Context(), echoCall(t, 2))
		require.NoError(t, err)
		require.Same(t, conn, connTo(c, srv.addr), "the connection survived")
	})
	t.Run("request over the node's limit", func(t *testing.T) {
		srv := startServer(t, nil, &ServerConfig{MaxFrameSize: 1024})
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
		_, err := c.Invoke(t.Context(), echoCall(t, 1))
		require.NoError(t, err)
		conn := connTo(c, srv.addr)
		for _, size := range []int{2000, 64 << 10} { // skipped by the node; past 16x its limit
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			_, err = c.Invoke(ctx, echoCall(t, make([]byte, size)))
			cancel()
			re := regErr(t, err)
			require.Equal(t, registry.CodeTooLarge, re.Code, "%d bytes: %v", size, err)
		}
		require.EqualValues(t, 1, srv.h.invokes.Load())
		_, err = c.Invoke(t.Context(), echoCall(t, 2))
		require.NoError(t, err)
		require.Same(t, conn, connTo(c, srv.addr), "the connection survived")
	})
	t.Run("reply over the client's limit", func(t *testing.T) {
		srv := startServer(t, nil, nil)
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, MaxFrameSize: 4096})
		_, err := c.Invoke(t.Context(), echoCall(t, 1))
		require.NoError(t, err)
		conn := connTo(c, srv.addr)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "big", Args: mustCBOR(t, 8192)})
		re := regErr(t, err)
		require.Equal(t, registry.CodeTooLarge, re.Code, err)
		require.EqualValues(t, 2, srv.h.invokes.Load(), "too_large is final")
		_, err = c.Invoke(t.Context(), echoCall(t, 2))
		require.NoError(t, err)
		require.Same(t, conn, connTo(c, srv.addr), "the connection survived")
	})
}

// TestConcurrentCalls: many goroutines share one client; every call gets
// its own reply, sequence numbers are unique, and no call acknowledges a
// call on the same instance whose reply the node has not even produced yet.
func TestConcurrentCalls(t *testing.T) {
	const workers, each = 64, 200
	h := newTestHandler()
	type handled struct {
		id       string
		seq, ack uint64
		order    int
	}
	var (
		mu      sync.Mutex
		seen    = map[uint64]handled{}
		badAcks []string
	)
	h.hook = func(ctx context.Context, call *registry.Call) ([]byte, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := seen[call.Seq]; dup {
			badAcks = append(badAcks, fmt.Sprintf("seq %d used twice", call.Seq))
		}
		if call.Ack > call.Seq {
			badAcks = append(badAcks, fmt.Sprintf("seq %d acks %d, past itself", call.Seq, call.Ack))
		}
		seen[call.Seq] = handled{id: call.ID, seq: call.Seq, ack: call.Ack, order: len(seen)}
		return call.Args, true, nil
	}
	srv := startServer(t, h, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// Two workers per instance, so acks must account for calls
				// of the other worker in flight on the same instance.
				id := fmt.Sprint(w / 2)
				want := mustCBOR(t, fmt.Sprintf("%d/%d", w, i))
				res, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: id, Method: "echo", Args: want})
				if err != nil {
					errs <- err
					return
				}
				if string(res) != string(want) {
					errs <- fmt.Errorf("worker %d call %d got %x", w, i, res)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// A client acknowledges a call only once it has its reply, so every
	// call on the same instance numbered below a call's Ack must have been
	// handled before that call.
	byID := map[string][]handled{}
	for _, c := range seen {
		byID[c.id] = append(byID[c.id], c)
	}
	for _, calls := range byID {
		for _, c := range calls {
			for _, d := range calls {
				if d.seq < c.ack && d.order > c.order {
					badAcks = append(badAcks, fmt.Sprintf("seq %d on %s acks %d but %d was handled after it", c.seq, c.id, c.ack, d.seq))
				}
			}
		}
	}
	require.Empty(t, badAcks)
	require.Len(t, seen, workers*each)
	require.EqualValues(t, workers*each, srv.h.invokes.Load())
}

// TestAckBelowInflight: Ack never passes the lowest sequence number still
// in flight on the same instance, however many later calls complete there;
// calls elsewhere do not hold it back.
func TestAckBelowInflight(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "block"})
		errc <- err
	}()
	stuck := srv.h.waitStarted(t)
	for i := range 20 {
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "echo", Args: mustCBOR(t, i)})
		require.NoError(t, err)
	}
	_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "other", Method: "echo", Args: mustCBOR(t, "x")})
	require.NoError(t, err)
	cancel()
	<-errc
	_, err = c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "echo", Args: mustCBOR(t, "last")})
	require.NoError(t, err)
	calls := srv.h.recorded()
	require.Len(t, calls, 23)
	for _, call := range calls[1:21] {
		require.Equal(t, stuck.Seq, call.Ack, "seq %d", call.Seq)
		require.Greater(t, call.Seq, stuck.Seq)
	}
	other := calls[21]
	require.Equal(t, other.Seq, other.Ack, "another instance is not held back")
	last := calls[22]
	require.Equal(t, last.Seq, last.Ack, "with nothing else in flight on the instance Ack is the call's own seq")
}

// TestMaxInflight: a client with more concurrent calls than the node's
// MaxInflight keeps within it (the node would refuse the excess): every
// call completes, none is refused or retried.
func TestMaxInflight(t *testing.T) {
	srv := startServer(t, nil, &ServerConfig{MaxInflight: 2})
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := range 10 {
				_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "sleep", Args: mustCBOR(t, (w+i)%3)})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.EqualValues(t, 320, srv.h.invokes.Load(), "no call was retried")
}

// TestDisconnectCancelsCalls: when a client goes away, the calls it left
// running on the node are canceled, even when the node is not reading the
// connection because MaxInflight calls are running.
func TestDisconnectCancelsCalls(t *testing.T) {
	for _, inflight := range []int{0, 1} {
		t.Run(fmt.Sprintf("MaxInflight=%d", inflight), func(t *testing.T) {
			srv := startServer(t, nil, &ServerConfig{MaxInflight: inflight})
			rc := rawHello(t, srv.addr)
			rc.main.send(kindCall, 1, &callMsg{Component: "c", ID: "i", Method: "block"})
			rc.main.send(kindCall, 2, &callMsg{Component: "c", ID: "i", Method: "block"})
			srv.h.waitStarted(t)
			require.NoError(t, rc.sess.Close())
			select {
			case err := <-srv.h.ended:
				require.ErrorIs(t, err, context.Canceled)
			case <-time.After(ioTimeout):
				t.Fatal("the call outlived its connection")
			}
		})
	}
}

// TestNodesFlood: nodes requests are bounded like calls, so a flood of them
// cannot start unbounded work on the node; those past the limit are refused.
func TestNodesFlood(t *testing.T) {
	const limit = 4
	h := newTestHandler()
	h.nodes = []string{"a:1"}
	var active, most atomic.Int64
	h.onNodes = func() {
		n := active.Add(1)
		defer active.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(100 * time.Microsecond) // a store round trip
	}
	srv := startServer(t, h, &ServerConfig{MaxInflight: limit})
	rc := rawHello(t, srv.addr)
	const n = 2000
	buf := make([]byte, 0, n*headerSize)
	for i := range n {
		buf = append(buf, emptyFrame(kindNodes, uint64(i+1))...)
	}
	rc.main.write(buf)
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	served := 0
	for id, r := range rc.main.replies(ids...) {
		if r.Code != "" {
			require.Equal(t, string(registry.CodeUnavailable), r.Code, "id %d: %s", id, r.Message)
			continue
		}
		require.Equal(t, []string{"a:1"}, r.Nodes)
		served++
	}
	require.NotZero(t, served)
	require.LessOrEqual(t, most.Load(), int64(limit), "concurrent Nodes calls")
	rc.main.echo(n + 1)
}

// TestIdleConnectionIsNotSuspect: a connection that was idle for a while is
// not declared unresponsive by the first slow call made on it.
func TestIdleConnectionIsNotSuspect(t *testing.T) {
	srv := startServer(t, nil, nil)
	const suspect = 400 * time.Millisecond
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, SuspectAfter: suspect})
	_, err := c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
	time.Sleep(3 * suspect) // idle: nothing received for longer than 2*SuspectAfter
	// Longer than a watchdog tick (SuspectAfter/4), shorter than SuspectAfter.
	_, err = c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "sleep", Args: mustCBOR(t, 300)})
	require.NoError(t, err)
	require.EqualValues(t, 2, srv.h.invokes.Load(), "the slow call was abandoned and retried")
}

// TestSlowCallIsNotSuspect: a node that answers pings is not abandoned,
// however long a call takes.
func TestSlowCallIsNotSuspect(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, SuspectAfter: 200 * time.Millisecond})
	_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "sleep", Args: mustCBOR(t, 1200)})
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.h.invokes.Load())
}

func TestClientClosed(t *testing.T) {
	srv := startServer(t, nil, nil)
	c, err := NewClient(ClientConfig{Nodes: []string{srv.addr}})
	require.NoError(t, err)
	_, err = c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)

	// A call in flight when the client closes fails promptly.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "block"})
		errc <- err
	}()
	srv.h.waitStarted(t)
	start := time.Now()
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	err = <-errc
	require.ErrorIs(t, err, ErrClientClosed)
	// Later calls fail at once, not at their deadline.
	_, err = c.Invoke(t.Context(), echoCall(t, 2))
	require.ErrorIs(t, err, ErrClientClosed)
	require.Less(t, time.Since(start), DefaultCallTimeout/2)
	_, err = c.Nodes(t.Context())
	require.ErrorIs(t, err, ErrClientClosed)
}

func TestNewClientValidation(t *testing.T) {
	_, err := NewClient(ClientConfig{})
	require.Error(t, err)
	_, err = NewClient(ClientConfig{Nodes: []string{" ", ""}})
	require.Error(t, err)
	_, err = NewClient(ClientConfig{Nodes: []string{"a:1"}, ClientID: make([]byte, 65)})
	require.Error(t, err)
	c, err := NewClient(ClientConfig{Nodes: []string{"a:1", " a:1 ", "b:2"}})
	require.NoError(t, err)
	require.Len(t, c.ID(), 16)
	require.Equal(t, []string{"a:1", "b:2"}, c.knownNodes())
	require.NoError(t, c.Close())
}

// TestShutdown waits for the calls in flight, then refuses connections.
func TestShutdown(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "sleep", Args: mustCBOR(t, 300)})
		errc <- err
	}()
	srv.h.waitStarted(t)
	require.NoError(t, srv.Shutdown(t.Context()))
	require.NoError(t, <-errc, "Shutdown let the call finish")

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Invoke(ctx, echoCall(t, 1))
	require.Equal(t, registry.CodeUnavailable, regErr(t, err).Code, err)
}

// connTo returns the client's current connection to addr.
func connTo(c *Client, addr string) *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[addr]
}

// TestMaxInflightCancel: with MaxInflight calls running, the node still
// reads cancel frames, pings and the end of a stream: calls that wait to be
// canceled cannot wedge a connection.
func TestMaxInflightCancel(t *testing.T) {
	const limit = 2
	srv := startServer(t, nil, &ServerConfig{MaxInflight: limit})
	rc := rawHello(t, srv.addr)
	block := &callMsg{Component: "c", ID: "i", Method: "block"} // no deadline
	for id := uint64(1); id <= limit+3; id++ {
		rc.main.send(kindCall, id, block)
	}
	for range limit {
		srv.h.waitStarted(t)
	}
	rc.main.sendBody(kindPing, 100, nil)
	for id := uint64(1); id <= limit+3; id++ {
		rc.main.sendBody(kindCancel, id, nil)
	}
	ids := []uint64{100}
	for id := uint64(1); id <= limit+3; id++ {
		ids = append(ids, id)
	}
	got := rc.main.replies(ids...)
	require.Equal(t, "pong", got[100].Message)
	for id := uint64(1); id <= limit+3; id++ {
		require.Contains(t, []string{string(registry.CodeCanceled), string(registry.CodeUnavailable)}, got[id].Code, "call %d: %s", id, got[id].Message)
	}
	rc.main.echo(200)

	// The real client queues its calls within the node's limit instead of
	// being refused.
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 3 * limit {
		wg.Go(func() {
			_, err := c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "block"})
			assert.Equal(t, registry.CodeCanceled, registry.CodeOf(err), "%v", err)
		})
	}
	for range limit {
		srv.h.waitStarted(t)
	}
	cancel()
	wg.Wait()
	_, err := c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
}

// TestTinySuspectAfter: a nonsensical SuspectAfter does not crash the
// client's watchdog (it used to panic in time.NewTicker). Whether calls
// succeed with such a setting is not the point.
func TestTinySuspectAfter(t *testing.T) {
	srv := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, SuspectAfter: time.Nanosecond})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, _ = c.Invoke(ctx, &registry.Call{Component: "c", ID: "i", Method: "sleep", Args: mustCBOR(t, 5)})
}
