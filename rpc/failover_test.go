package rpc

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

// seqs returns the sequence numbers of the calls h saw.
func seqs(h *testHandler) []uint64 {
	var out []uint64
	for _, c := range h.recorded() {
		out = append(out, c.Seq)
	}
	return out
}

// TestFailoverClosedNode: once a node is closed (its port refuses), every
// call keeps succeeding on the other one.
func TestFailoverClosedNode(t *testing.T) {
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
	for i := range 10 {
		_, err := c.Invoke(t.Context(), echoCall(t, i))
		require.NoError(t, err)
	}
	require.EqualValues(t, 10, a.h.invokes.Load(), "the first node is preferred")
	require.NoError(t, a.Close())
	for i := range 50 {
		res, err := c.Invoke(t.Context(), echoCall(t, i))
		require.NoError(t, err)
		require.Equal(t, mustCBOR(t, i), res)
	}
	require.EqualValues(t, 50, b.h.invokes.Load())
}

// slowOn makes "slow" calls on h wait until their context ends; with
// block false they are answered at once.
func slowOn(h *testHandler, block bool) {
	h.hook = func(ctx context.Context, call *registry.Call) ([]byte, bool, error) {
		if call.Method != "slow" {
			return nil, false, nil
		}
		if block {
			<-ctx.Done()
			return nil, true, ctx.Err()
		}
		return call.Args, true, nil
	}
}

// TestFailoverCallInFlight: a call running on a node that is closed under
// it completes on the other node, under the same sequence number: closing
// a node must not answer its calls with a final "canceled".
func TestFailoverCallInFlight(t *testing.T) {
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	slowOn(a.h, true)
	slowOn(b.h, false)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: "slow", Args: mustCBOR(t, 1)})
		errc <- err
	}()
	onA := a.h.waitStarted(t)
	require.NoError(t, a.Close())
	require.NoError(t, <-errc)
	onB := b.h.recorded()
	require.Len(t, onB, 1)
	require.Equal(t, onA.Seq, onB[0].Seq, "a retry keeps its sequence number")
	require.Equal(t, onA.Client, onB[0].Client)
}

// TestRedirect: a redirect is followed to the owner, which is then called
// directly; the retry keeps its sequence number.
func TestRedirect(t *testing.T) {
	down := closedAddr(t)
	hb := newTestHandler()
	hb.redirectTo = down
	b := startServer(t, hb, nil)
	ha := newTestHandler()
	ha.redirectTo = down
	ha.hook = func(ctx context.Context, call *registry.Call) ([]byte, bool, error) {
		if call.Method == "echo" {
			return nil, true, &registry.Error{Code: registry.CodeRedirect, Message: "owned by b", Addr: b.addr}
		}
		return nil, false, nil
	}
	a := startServer(t, ha, nil)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr}})
	res, err := c.Invoke(t.Context(), echoCall(t, "x"))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, "x"), res)
	require.EqualValues(t, 1, a.h.invokes.Load())
	require.EqualValues(t, 1, b.h.invokes.Load())
	require.Equal(t, seqs(a.h), seqs(b.h))

	// The owner is remembered for the instance.
	for i := range 5 {
		_, err := c.Invoke(t.Context(), echoCall(t, i))
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, a.h.invokes.Load())
	require.EqualValues(t, 6, b.h.invokes.Load())
	require.Contains(t, c.knownNodes(), b.addr)

	// A redirect to a node that is down is retried until the deadline, not
	// returned: unavailable, or deadline_exceeded when the deadline struck
	// during an attempt.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Invoke(ctx, &registry.Call{Component: "c", ID: "other", Method: "redirect"})
	require.Contains(t, []registry.Code{registry.CodeUnavailable, registry.CodeDeadlineExceeded}, regErr(t, err).Code, err)
	require.GreaterOrEqual(t, time.Since(start), 450*time.Millisecond)
}

// TestUnavailableRetried: unavailable moves the call to another node under
// the same sequence number.
func TestUnavailableRetried(t *testing.T) {
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	a.h.hook = func(ctx context.Context, call *registry.Call) ([]byte, bool, error) {
		return nil, true, &registry.Error{Code: registry.CodeUnavailable, Message: "draining"}
	}
	c := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
	res, err := c.Invoke(t.Context(), echoCall(t, 7))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, 7), res)
	require.EqualValues(t, 1, a.h.invokes.Load())
	require.EqualValues(t, 1, b.h.invokes.Load())
	require.Equal(t, seqs(a.h), seqs(b.h))

	// When every node is unavailable the call ends at its deadline.
	b.h.hook = a.h.hook
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = c.Invoke(ctx, echoCall(t, 8))
	re := regErr(t, err)
	require.Equal(t, registry.CodeUnavailable, re.Code, err)
	require.Contains(t, re.Message, "draining")
	last := a.h.recorded()
	for _, call := range append(last[1:], b.h.recorded()[1:]...) {
		require.Equal(t, last[1].Seq, call.Seq, "every retry of one call has its sequence number")
	}
}

// TestFinalErrorsNotRetried: errors from the method or the node other than
// unavailable and redirect end the call on the first node.
func TestFinalErrorsNotRetried(t *testing.T) {
	for _, method := range []string{"fail", "panic", "nope"} {
		t.Run(method, func(t *testing.T) {
			a := startServer(t, nil, nil)
			b := startServer(t, nil, nil)
			c := newClient(t, ClientConfig{Nodes: []string{a.addr, b.addr}})
			_, err := c.Invoke(t.Context(), &registry.Call{Component: "c", ID: "i", Method: method})
			require.True(t, regErr(t, err).Remote)
			require.EqualValues(t, 1, a.h.invokes.Load())
			require.Zero(t, b.h.invokes.Load())
		})
	}
}

// TestFrozenNode: a node that keeps its connection open but stops
// answering is abandoned after about 2*SuspectAfter and the call completes
// on the other node.
func TestFrozenNode(t *testing.T) {
	const suspect = 200 * time.Millisecond
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	p := startProxy(t, a.addr)
	c := newClient(t, ClientConfig{Nodes: []string{p.addr(), b.addr}, SuspectAfter: suspect})
	_, err := c.Invoke(t.Context(), echoCall(t, 0))
	require.NoError(t, err)
	require.EqualValues(t, 1, a.h.invokes.Load())

	p.freeze()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, echoCall(t, 1))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, 1), res)
	require.EqualValues(t, 1, b.h.invokes.Load())
	require.GreaterOrEqual(t, time.Since(start), 2*suspect, "abandoned before it was suspect")

	// Later calls avoid the frozen node.
	for i := range 5 {
		_, err := c.Invoke(t.Context(), echoCall(t, i))
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, a.h.invokes.Load())
}

// TestFrozenNodeAtDial: a node frozen before the client connects costs the
// dial timeout, then the call moves on.
func TestFrozenNodeAtDial(t *testing.T) {
	a := startServer(t, nil, nil)
	b := startServer(t, nil, nil)
	p := startProxy(t, a.addr)
	p.freeze()
	c := newClient(t, ClientConfig{Nodes: []string{p.addr(), b.addr}, DialTimeout: 200 * time.Millisecond})
	res, err := c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
	require.Equal(t, mustCBOR(t, 1), res)
	require.Zero(t, a.h.invokes.Load())
}

// TestAllNodesDown: with no node reachable a call ends at its deadline with
// unavailable.
func TestAllNodesDown(t *testing.T) {
	a := startServer(t, nil, nil)
	down := closedAddr(t)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr, down}, CallTimeout: 700 * time.Millisecond})
	_, err := c.Invoke(t.Context(), echoCall(t, 0))
	require.NoError(t, err)
	require.NoError(t, a.Close())

	for _, withDeadline := range []bool{true, false} {
		ctx := t.Context()
		if withDeadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
		}
		start := time.Now()
		_, err = c.Invoke(ctx, echoCall(t, 1))
		re := regErr(t, err)
		require.Equal(t, registry.CodeUnavailable, re.Code, err)
		require.GreaterOrEqual(t, time.Since(start), 450*time.Millisecond, "gave up before the deadline")
		require.Less(t, time.Since(start), ioTimeout, "hung past the deadline")
	}
}

// TestClientNodes: Nodes reports what a node's handler reports, and the
// client learns the nodes it was not given.
func TestClientNodes(t *testing.T) {
	b := startServer(t, nil, nil)
	a := startServer(t, nil, nil)
	a.h.nodes = []string{a.addr, b.addr}
	b.h.nodes = a.h.nodes
	c := newClient(t, ClientConfig{Nodes: []string{a.addr}})
	nodes, err := c.Nodes(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{a.addr, b.addr}, nodes)
	require.Eventually(t, func() bool { return len(c.knownNodes()) == 2 }, ioTimeout, 5*time.Millisecond)

	// The learned node takes over when the seed goes.
	require.NoError(t, a.Close())
	_, err = c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
	require.EqualValues(t, 1, b.h.invokes.Load())
	nodes, err = c.Nodes(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{a.addr, b.addr}, nodes)
}

// TestClientRefreshesNodes: a node that joins after the client connected is
// learned while the client is in use, so it takes over when every node the
// client knew from its dial is gone (a rolling deploy).
func TestClientRefreshesNodes(t *testing.T) {
	a := startServer(t, nil, nil)
	a.h.setNodes(a.addr)
	c := newClient(t, ClientConfig{Nodes: []string{a.addr}, RefreshNodes: 20 * time.Millisecond})
	_, err := c.Invoke(t.Context(), echoCall(t, 0))
	require.NoError(t, err)
	require.Equal(t, []string{a.addr}, c.knownNodes())

	b := startServer(t, nil, nil)
	a.h.setNodes(a.addr, b.addr)
	require.Eventually(t, func() bool {
		_, err := c.Invoke(t.Context(), echoCall(t, 1))
		require.NoError(t, err)
		return slices.Contains(c.knownNodes(), b.addr)
	}, ioTimeout, 25*time.Millisecond)

	require.NoError(t, a.Close())
	_, err = c.Invoke(t.Context(), echoCall(t, 2))
	require.NoError(t, err)
	require.EqualValues(t, 1, b.h.invokes.Load())
}
