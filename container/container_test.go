package container_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/memstore"
	"github.com/containerd-lite/containerd-lite/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Counter is the test component. Res is transient: it stands for an open
// resource rebuilt in OnActivate.
type Counter struct {
	N   int
	Log []string

	Res    *resource     `cbor:"-"`
	probes *probeHandles `cbor:"-"`
}

type resource struct{ open bool }

type probeHandles struct {
	activated, passivated, removed atomic.Int32
	inTurn                         atomic.Int32
	overlap                        atomic.Bool
	gate                           chan struct{}
}

// probes is shared by every Counter of a test; set per test by newNode.
var hooks struct {
	sync.Mutex
	p *probeHandles
}

func currentProbes() *probeHandles {
	hooks.Lock()
	defer hooks.Unlock()
	return hooks.p
}

func (c *Counter) OnActivate(context.Context) error {
	c.Res = &resource{open: true}
	c.probes = currentProbes()
	c.probes.activated.Add(1)
	return nil
}

func (c *Counter) OnPassivate(context.Context) error {
	c.Res.open = false
	c.probes.passivated.Add(1)
	return nil
}

func (c *Counter) OnRemove(context.Context) error {
	c.probes.removed.Add(1)
	return nil
}

type Delta struct{ By int }

func (c *Counter) Add(_ context.Context, d Delta) (int, error) {
	c.N += d.By
	return c.N, nil
}

// Fail changes the state and then fails: the change must not survive.
func (c *Counter) Fail(_ context.Context, d Delta) (int, error) {
	c.N += d.By
	c.Log = append(c.Log, "failed")
	return 0, errors.New("boom")
}

// Panic changes the state and then panics.
func (c *Counter) Panic(_ context.Context, d Delta) (int, error) {
	c.N += d.By
	panic("kaboom")
}

func (c *Counter) Get(context.Context) (int, error) { return c.N, nil }

func (c *Counter) ResourceOpen(context.Context) (bool, error) { return c.Res != nil && c.Res.open, nil }

// Slow holds the turn until the test's gate opens, noting overlaps.
func (c *Counter) Slow(ctx context.Context, d Delta) (int, error) {
	p := c.probes
	if p.inTurn.Add(1) > 1 {
		p.overlap.Store(true)
	}
	defer p.inTurn.Add(-1)
	select {
	case <-p.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c.N += d.By
	return c.N, nil
}

func (c *Counter) Grow(_ context.Context, n int) (int, error) {
	c.Log = append(c.Log, string(make([]byte, n)))
	return len(c.Log), nil
}

func (c *Counter) Close(context.Context) (int, error) { return c.N, nil }

var (
	counterType = registry.NewType[Counter]("counter", registry.Options{MaxStateSize: 64 << 10})
	addM        = registry.NewMethod(counterType, "Add", (*Counter).Add)
	failM       = registry.NewMethod(counterType, "Fail", (*Counter).Fail)
	panicM      = registry.NewMethod(counterType, "Panic", (*Counter).Panic)
	getM        = registry.NewMethod0(counterType, "Get", (*Counter).Get)
	resM        = registry.NewMethod0(counterType, "ResourceOpen", (*Counter).ResourceOpen)
	slowM       = registry.NewMethod(counterType, "Slow", (*Counter).Slow)
	growM       = registry.NewMethod(counterType, "Grow", (*Counter).Grow)
	closeM      = registry.NewMethod0(counterType, "Close", (*Counter).Close, registry.Removes())
)

// countingStore counts writes and can be told to fail renewals.
type countingStore struct {
	passivate.Store
	saves      atomic.Int64
	failRenew  atomic.Bool
	failWrites atomic.Bool
}

func (s *countingStore) Save(ctx context.Context, w *passivate.Write) error {
	if s.failWrites.Load() {
		return errors.New("disk on fire")
	}
	s.saves.Add(1)
	return s.Store.Save(ctx, w)
}

func (s *countingStore) Renew(ctx context.Context, inc string, lease time.Duration) error {
	if s.failRenew.Load() {
		return errors.New("store unreachable")
	}
	return s.Store.Renew(ctx, inc, lease)
}

type node struct {
	*container.Container
	store  *countingStore
	probes *probeHandles
}

func newNode(t *testing.T, store passivate.Store, mod func(*container.Config)) *node {
	t.Helper()
	p := &probeHandles{gate: make(chan struct{})}
	hooks.Lock()
	hooks.p = p
	hooks.Unlock()
	reg := registry.New()
	require.NoError(t, reg.Register(counterType))
	cs := &countingStore{Store: store}
	cfg := container.Config{Registry: reg, Store: cs, Addr: fmt.Sprintf("node-%p", cs)}
	if mod != nil {
		mod(&cfg)
	}
	c, err := container.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	return &node{Container: c, store: cs, probes: p}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPersistAfterCall(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, nil)
	ctx := ctxT(t)
	v, err := addM.Call(ctx, n, "a", Delta{By: 2})
	require.NoError(t, err)
	assert.Equal(t, 2, v)
	v, err = addM.Call(ctx, n, "a", Delta{By: 3})
	require.NoError(t, err)
	assert.Equal(t, 5, v)
	assert.EqualValues(t, 2, n.store.saves.Load())

	// A second node on the same store finds the state once the first is gone.
	require.NoError(t, n.Shutdown(ctx))
	n2 := newNode(t, st, nil)
	v, err = getM.Call(ctx, n2, "a")
	require.NoError(t, err)
	assert.Equal(t, 5, v)
}

func TestUnchangedStateWritesNothing(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	_, err := getM.Call(ctx, n, "fresh")
	require.NoError(t, err)
	assert.Zero(t, n.store.saves.Load(), "reading a new instance writes nothing")
	_, err = addM.Call(ctx, n, "fresh", Delta{By: 1})
	require.NoError(t, err)
	_, err = addM.Call(ctx, n, "fresh", Delta{By: 0})
	require.NoError(t, err)
	_, err = getM.Call(ctx, n, "fresh")
	require.NoError(t, err)
	assert.EqualValues(t, 1, n.store.saves.Load())
	assert.EqualValues(t, 3, n.Stats().Unchanged)
}

func TestErrorAndPanicLeaveNoTrace(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, nil)
	ctx := ctxT(t)
	_, err := addM.Call(ctx, n, "a", Delta{By: 10})
	require.NoError(t, err)

	_, err = failM.Call(ctx, n, "a", Delta{By: 5})
	assert.Equal(t, registry.CodeApplication, registry.CodeOf(err))
	assert.ErrorContains(t, err, "boom")
	_, err = panicM.Call(ctx, n, "a", Delta{By: 7})
	assert.Equal(t, registry.CodeInternal, registry.CodeOf(err))
	assert.ErrorContains(t, err, "kaboom")

	v, err := getM.Call(ctx, n, "a")
	require.NoError(t, err)
	assert.Equal(t, 10, v, "in-memory state rolled back")
	open, err := resM.Call(ctx, n, "a")
	require.NoError(t, err)
	assert.True(t, open, "rollback keeps transient fields")
	assert.EqualValues(t, 1, n.store.saves.Load(), "nothing written for failed calls")

	require.NoError(t, n.Shutdown(ctx))
	n2 := newNode(t, st, nil)
	v, err = getM.Call(ctx, n2, "a")
	require.NoError(t, err)
	assert.Equal(t, 10, v, "stored state untouched")
}

func TestTurnsSerializePerInstance(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	const calls = 8
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := slowM.Call(ctx, n, "one", Delta{By: 1})
			assert.NoError(t, err)
		}()
	}
	require.Eventually(t, func() bool { return n.probes.inTurn.Load() == 1 }, 10*time.Second, time.Millisecond)
	close(n.probes.gate)
	wg.Wait()
	assert.False(t, n.probes.overlap.Load(), "two calls ran on one instance at once")
	v, err := getM.Call(ctx, n, "one")
	require.NoError(t, err)
	assert.Equal(t, calls, v)
}

func TestDifferentInstancesRunInParallel(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := slowM.Call(ctx, n, fmt.Sprint("p", i), Delta{By: 1})
			assert.NoError(t, err)
		}()
	}
	// All four are inside their method at once, which is only possible if
	// different instances do not wait for each other.
	require.Eventually(t, func() bool { return n.probes.inTurn.Load() == 4 }, 10*time.Second, time.Millisecond)
	close(n.probes.gate)
	wg.Wait()
}

func TestBadInput(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		call registry.Call
		code registry.Code
	}{
		{"unknown component", registry.Call{Component: "nope", ID: "a", Method: "Add"}, registry.CodeNotFound},
		{"unknown method", registry.Call{Component: "counter", ID: "a", Method: "Nope"}, registry.CodeNotFound},
		{"empty id", registry.Call{Component: "counter", ID: "", Method: "Get"}, registry.CodeBadRequest},
		{"NUL in id", registry.Call{Component: "counter", ID: "a\x00b", Method: "Get"}, registry.CodeBadRequest},
		{"missing args", registry.Call{Component: "counter", ID: "a", Method: "Add"}, registry.CodeBadRequest},
		{"wrong arg type", registry.Call{Component: "counter", ID: "a", Method: "Add", Args: mustCBOR(t, map[string]any{"By": "x"})}, registry.CodeBadRequest},
		{"unknown field", registry.Call{Component: "counter", ID: "a", Method: "Add", Args: mustCBOR(t, map[string]any{"Bye": 1})}, registry.CodeBadRequest},
		{"garbage args", registry.Call{Component: "counter", ID: "a", Method: "Add", Args: []byte{0xff, 0x00}}, registry.CodeBadRequest},
		{"args to a no-arg method", registry.Call{Component: "counter", ID: "a", Method: "Get", Args: mustCBOR(t, 5)}, registry.CodeBadRequest},
	} {
		_, err := n.Invoke(ctx, &tc.call)
		assert.Equal(t, tc.code, registry.CodeOf(err), tc.name)
	}
	v, err := addM.Call(ctx, n, "a", Delta{By: 1})
	require.NoError(t, err, "the node keeps working")
	assert.Equal(t, 1, v)
}

func mustCBOR(t *testing.T, v any) []byte {
	b, err := registry.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestStateSizeLimit(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	_, err := growM.Call(ctx, n, "g", 1000)
	require.NoError(t, err)
	_, err = growM.Call(ctx, n, "g", 100<<10)
	assert.Equal(t, registry.CodeTooLarge, registry.CodeOf(err))
	v, err := growM.Call(ctx, n, "g", 10)
	require.NoError(t, err)
	assert.Equal(t, 2, v, "the oversized change was rolled back")
}

func TestRemoveEndsInstance(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, nil)
	ctx := ctxT(t)
	_, err := addM.Call(ctx, n, "r", Delta{By: 4})
	require.NoError(t, err)
	v, err := closeM.Call(ctx, n, "r")
	require.NoError(t, err)
	assert.Equal(t, 4, v)
	assert.EqualValues(t, 1, n.probes.removed.Load())
	assert.Zero(t, n.ActiveInstances())
	v, err = getM.Call(ctx, n, "r")
	require.NoError(t, err)
	assert.Zero(t, v, "a call after removal starts a new instance")
}

func TestHooksAndIdlePassivation(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, func(c *container.Config) { c.IdleTimeout = 200 * time.Millisecond })
	ctx := ctxT(t)
	_, err := addM.Call(ctx, n, "idle", Delta{By: 1})
	require.NoError(t, err)
	assert.EqualValues(t, 1, n.probes.activated.Load())
	assert.Equal(t, 1, n.ActiveInstances())
	require.Eventually(t, func() bool { return n.ActiveInstances() == 0 }, 10*time.Second, 10*time.Millisecond, "idle instance passivated")
	assert.EqualValues(t, 1, n.probes.passivated.Load())

	// Passivation released ownership: another node takes it at once.
	n2 := newNode(t, st, nil)
	v, err := addM.Call(ctx, n2, "idle", Delta{By: 1})
	require.NoError(t, err)
	assert.Equal(t, 2, v)
}

func TestMaxActiveEvictsLeastRecentlyUsed(t *testing.T) {
	n := newNode(t, memstore.New(), func(c *container.Config) { c.MaxActive = 64 })
	ctx := ctxT(t)
	for i := range 64 {
		_, err := addM.Call(ctx, n, fmt.Sprint("i", i), Delta{By: 1})
		require.NoError(t, err)
	}
	// Touch the first half again so the second half is least recently used.
	for i := range 32 {
		_, err := getM.Call(ctx, n, fmt.Sprint("i", i))
		require.NoError(t, err)
	}
	for i := 64; i < 80; i++ {
		_, err := addM.Call(ctx, n, fmt.Sprint("i", i), Delta{By: 1})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return n.ActiveInstances() <= 64 }, 10*time.Second, 10*time.Millisecond)
	before := n.Stats().Activations
	for i := range 32 {
		_, err := getM.Call(ctx, n, fmt.Sprint("i", i))
		require.NoError(t, err)
	}
	assert.Equal(t, before, n.Stats().Activations, "recently used instances stayed active")
	v, err := getM.Call(ctx, n, "i40")
	require.NoError(t, err)
	assert.Equal(t, 1, v, "an evicted instance reactivates with its state")
}

func TestExactlyOnce(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, nil)
	ctx := ctxT(t)
	client := []byte("client-1")
	call := func(seq, ack uint64, by int) (int, error) {
		reply, err := n.Invoke(ctx, &registry.Call{Component: "counter", ID: "x", Method: "Add", Args: mustCBOR(t, Delta{By: by}), Client: client, Seq: seq, Ack: ack})
		if err != nil {
			return 0, err
		}
		var v int
		require.NoError(t, registry.Unmarshal(reply, &v))
		return v, nil
	}
	v, err := call(1, 1, 5)
	require.NoError(t, err)
	assert.Equal(t, 5, v)
	v, err = call(1, 1, 5)
	require.NoError(t, err)
	assert.Equal(t, 5, v, "a retry gets the original reply")
	_, err = call(1, 1, 6)
	assert.Equal(t, registry.CodeConflict, registry.CodeOf(err), "same sequence number, other call")
	assert.EqualValues(t, 1, n.Stats().Replayed)

	// Across a failover: the record travels with the state.
	require.NoError(t, n.Shutdown(ctx))
	n2 := newNode(t, st, nil)
	reply, err := n2.Invoke(ctx, &registry.Call{Component: "counter", ID: "x", Method: "Add", Args: mustCBOR(t, Delta{By: 5}), Client: client, Seq: 1, Ack: 1})
	require.NoError(t, err)
	var got int
	require.NoError(t, registry.Unmarshal(reply, &got))
	assert.Equal(t, 5, got)
	v, err = getM.Call(ctx, n2, "x")
	require.NoError(t, err)
	assert.Equal(t, 5, v, "applied once")

	// Once acknowledged, a record is dropped with the client's next write.
	_, err = n2.Invoke(ctx, &registry.Call{Component: "counter", ID: "x", Method: "Add", Args: mustCBOR(t, Delta{By: 1}), Client: client, Seq: 2, Ack: 2})
	require.NoError(t, err)
	_, err = n2.Invoke(ctx, &registry.Call{Component: "counter", ID: "x", Method: "Add", Args: mustCBOR(t, Delta{By: 5}), Client: client, Seq: 1, Ack: 3})
	assert.Equal(t, registry.CodeConflict, registry.CodeOf(err), "a copy of an acknowledged call is stale, never run again")
	v, err = getM.Call(ctx, n2, "x")
	require.NoError(t, err)
	assert.Equal(t, 6, v)
	assert.EqualValues(t, 1, n2.Stats().Stale)
}

// TestStaleCopyAfterFailover replays what the torture test caught: a call
// sits unread on a frozen node while the client retries it elsewhere, gets
// the reply and moves on (its next call acknowledges the first, whose record
// is dropped). When the frozen node finally reads the old copy and
// activates the instance, the copy must be refused, not run a second time.
func TestStaleCopyAfterFailover(t *testing.T) {
	st := memstore.New()
	ctx := ctxT(t)
	client := []byte("client-frozen")
	add := func(n *node, seq, ack uint64) error {
		_, err := n.Invoke(ctx, &registry.Call{Component: "counter", ID: "s", Method: "Add", Args: mustCBOR(t, Delta{By: 1}), Client: client, Seq: seq, Ack: ack})
		return err
	}
	b := newNode(t, st, nil)
	require.NoError(t, add(b, 7, 7), "the retry of call 7 runs on b")
	require.NoError(t, add(b, 8, 8), "the next call acknowledges 7: its record goes")
	require.NoError(t, b.Shutdown(ctx))

	a := newNode(t, st, nil) // the frozen node, resumed, takes the instance
	assert.Equal(t, registry.CodeConflict, registry.CodeOf(add(a, 7, 7)))
	v, err := getM.Call(ctx, a, "s")
	require.NoError(t, err)
	assert.Equal(t, 2, v, "call 7 applied once")
}

// TestEvictedRecordIsNeverRunTwice: more clients than MaxCompletions push a
// record out before its client has the reply. A late retry of that call
// must not run again: it is refused as of unknown outcome, and once the
// client acknowledges it, its later calls run normally.
func TestEvictedRecordIsNeverRunTwice(t *testing.T) {
	n := newNode(t, memstore.New(), func(c *container.Config) { c.MaxCompletions = 4 })
	ctx := ctxT(t)
	add := func(client string, seq, ack uint64) error {
		_, err := n.Invoke(ctx, &registry.Call{Component: "counter", ID: "e", Method: "Add", Args: mustCBOR(t, Delta{By: 1}), Client: []byte(client), Seq: seq, Ack: ack})
		return err
	}
	require.NoError(t, add("slow", 3, 3))
	for i := range 4 {
		require.NoError(t, add(fmt.Sprint("other-", i), 1, 1))
	}
	err := add("slow", 3, 3)
	assert.Equal(t, registry.CodeConflict, registry.CodeOf(err), "a retry whose record was evicted is refused")
	assert.ErrorContains(t, err, "outcome of call 3 unknown")
	v, err := getM.Call(ctx, n, "e")
	require.NoError(t, err)
	assert.Equal(t, 5, v, "call 3 applied once")

	require.NoError(t, add("slow", 4, 4), "a new call runs")
	assert.Equal(t, registry.CodeConflict, registry.CodeOf(add("slow", 3, 4)), "and call 3 stays refused")
	v, err = getM.Call(ctx, n, "e")
	require.NoError(t, err)
	assert.Equal(t, 6, v)

	// Records evicted after their client acknowledged them leave nothing
	// behind: those clients' next calls run.
	for i := range 4 {
		require.NoError(t, add(fmt.Sprint("other-", i), 2, 2))
	}
	v, err = getM.Call(ctx, n, "e")
	require.NoError(t, err)
	assert.Equal(t, 10, v)
}

func TestCallerThatGaveUpIsNotRun(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	_, err := addM.Call(ctx, n, "gone", Delta{By: 1})
	assert.Equal(t, registry.CodeCanceled, registry.CodeOf(err))
	v, err := getM.Call(ctxT(t), n, "gone")
	require.NoError(t, err)
	assert.Zero(t, v)
}

func TestFencedZombieNeverAcknowledges(t *testing.T) {
	st := memstore.New()
	a := newNode(t, st, func(c *container.Config) { c.Addr = "a:1" })
	b := newNode(t, st, func(c *container.Config) { c.Addr = "b:1" })
	ctx := ctxT(t)
	_, err := addM.Call(ctx, a, "z", Delta{By: 1})
	require.NoError(t, err)

	_, err = addM.Call(ctx, b, "z", Delta{By: 1})
	var re *registry.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, registry.CodeRedirect, re.Code)
	assert.Equal(t, "a:1", re.Addr)

	// a is declared dead behind its back; b takes over and writes.
	require.NoError(t, st.MarkDead(ctx, a.Incarnation()))
	v, err := addM.Call(ctx, b, "z", Delta{By: 10})
	require.NoError(t, err)
	assert.Equal(t, 11, v)

	// a still holds z in memory; its next write is refused and not acked.
	_, err = addM.Call(ctx, a, "z", Delta{By: 100})
	assert.Equal(t, registry.CodeUnavailable, registry.CodeOf(err))
	assert.EqualValues(t, 1, a.Stats().Fenced)
	v, err = getM.Call(ctx, b, "z")
	require.NoError(t, err)
	assert.Equal(t, 11, v, "the zombie's write left no trace")
}

func TestLeaseExpiryStopsServing(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, func(c *container.Config) { c.Lease = 400 * time.Millisecond; c.Heartbeat = 100 * time.Millisecond })
	ctx := ctxT(t)
	_, err := addM.Call(ctx, n, "l", Delta{By: 1})
	require.NoError(t, err)
	n.store.failRenew.Store(true)
	require.Eventually(t, func() bool {
		_, err := getM.Call(ctx, n, "l")
		return registry.CodeOf(err) == registry.CodeUnavailable
	}, 10*time.Second, 10*time.Millisecond, "reads refused once the lease is gone")
	old := n.Incarnation()

	// Another node takes the instance over after the lease expired.
	other := newNode(t, st, nil)
	require.Eventually(t, func() bool {
		_, err := addM.Call(ctx, other, "l", Delta{By: 10})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	// When the store comes back, the node learns it lost its lease,
	// discards its activations and registers again.
	n.store.failRenew.Store(false)
	require.Eventually(t, func() bool { return n.Incarnation() != old }, 10*time.Second, 20*time.Millisecond)
	_, err = getM.Call(ctx, n, "l")
	var re *registry.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, registry.CodeRedirect, re.Code, "the new owner is named, the stale state is not served")
}

func TestStoreFailureIsUnavailableAndRecovers(t *testing.T) {
	n := newNode(t, memstore.New(), nil)
	ctx := ctxT(t)
	_, err := addM.Call(ctx, n, "s", Delta{By: 1})
	require.NoError(t, err)
	n.store.failWrites.Store(true)
	_, err = addM.Call(ctx, n, "s", Delta{By: 1})
	assert.Equal(t, registry.CodeUnavailable, registry.CodeOf(err))
	n.store.failWrites.Store(false)
	v, err := addM.Call(ctx, n, "s", Delta{By: 1})
	require.NoError(t, err)
	assert.Equal(t, 2, v, "the failed write was not applied; state reloaded from the store")
}

func TestShutdownDrainsAndFreesInstances(t *testing.T) {
	st := memstore.New()
	n := newNode(t, st, nil)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		_, err := slowM.Call(ctx, n, "d", Delta{By: 1})
		done <- err
	}()
	require.Eventually(t, func() bool { return n.probes.inTurn.Load() == 1 }, 10*time.Second, time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- n.Shutdown(ctx) }()
	require.Eventually(t, func() bool {
		_, err := getM.Call(ctx, n, "other")
		return registry.CodeOf(err) == registry.CodeUnavailable
	}, 10*time.Second, time.Millisecond, "new calls are turned away while draining")
	close(n.probes.gate)
	require.NoError(t, <-done, "the call in flight finished")
	require.NoError(t, <-shut)

	n2 := newNode(t, st, nil)
	v, err := getM.Call(ctx, n2, "d")
	require.NoError(t, err, "deregistration freed the instance at once")
	assert.Equal(t, 1, v)
}

func TestProvenDeadOwnerIsReplacedAtOnce(t *testing.T) {
	st := memstore.New()
	a := newNode(t, st, func(c *container.Config) { c.Addr = "a:1" })
	ctx := ctxT(t)
	_, err := addM.Call(ctx, a, "k", Delta{By: 3})
	require.NoError(t, err)
	var probed atomic.Int32
	b := newNode(t, st, func(c *container.Config) {
		c.Addr = "b:1"
		c.ProveDead = func(_ context.Context, addr, inc string) bool {
			probed.Add(1)
			return addr == "a:1" && inc == a.Incarnation()
		}
	})
	v, err := addM.Call(ctx, b, "k", Delta{By: 1})
	require.NoError(t, err, "no wait for the lease")
	assert.Equal(t, 4, v)
	assert.EqualValues(t, 1, probed.Load())
}

type recorder struct {
	mu     sync.Mutex
	events []container.CallEvent
}

func (r *recorder) ObserveCall(ev container.CallEvent) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func TestObserver(t *testing.T) {
	rec := &recorder{}
	n := newNode(t, memstore.New(), func(c *container.Config) { c.Observer = rec })
	ctx := ctxT(t)
	client := []byte("obs")
	add := &registry.Call{Component: "counter", ID: "o", Method: "Add", Args: mustCBOR(t, Delta{By: 2}), Client: client, Seq: 1, Ack: 1}
	_, err := n.Invoke(ctx, add)
	require.NoError(t, err)
	_, err = n.Invoke(ctx, add) // a retry: replayed
	require.NoError(t, err)
	_, err = getM.Call(ctx, n, "o")
	require.NoError(t, err)
	_, err = n.Invoke(ctx, &registry.Call{Component: "no-such-component-" + t.Name(), ID: "o", Method: "X"})
	require.Error(t, err)
	_, err = n.Invoke(ctx, &registry.Call{Component: "counter", ID: "o", Method: "NoSuchMethod"})
	require.Error(t, err)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.events, 5)
	e := rec.events
	assert.Equal(t, "counter", e[0].Component)
	assert.Equal(t, "Add", e[0].Method)
	assert.Equal(t, registry.Code(""), e[0].Code)
	assert.True(t, e[0].Wrote)
	assert.Positive(t, e[0].StateBytes)
	assert.Positive(t, e[0].Duration)
	assert.True(t, e[1].Replayed)
	assert.False(t, e[1].Wrote)
	assert.False(t, e[2].Wrote, "a read writes nothing")
	assert.Equal(t, registry.CodeNotFound, e[3].Code)
	assert.Empty(t, e[3].Component, "unknown names are not reported as sent")
	assert.Equal(t, "counter", e[4].Component)
	assert.Empty(t, e[4].Method)
	assert.True(t, n.LeaseValid())
}
