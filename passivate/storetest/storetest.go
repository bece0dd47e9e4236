package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// Harness tells the suite how to make stores of one backend.
type Harness struct {
	// New returns a new, empty store and a DSN that Open accepts to open
	// another handle on the same data. The suite closes the store; New
	// should register any other cleanup with t.Cleanup.
	New func(t testing.TB) (passivate.Store, string)
	// Open opens another handle on the store at dsn. It is called in the
	// test process and, for the cross-process test, in a child process.
	// Nil means the backend cannot be shared (in-memory stores).
	Open func(dsn string) (passivate.Store, error)
}

const (
	childEnv = "STORETEST_CHILD"
	dsnEnv   = "STORETEST_DSN"
	// The cross-process test increments one shared counter this many times
	// from each process.
	childIncrements = 60
)

// Main is the TestMain of a backend's test package: it runs the child half
// of the cross-process test when the suite re-executes the binary, and the
// tests otherwise.
func Main(m *testing.M, open func(dsn string) (passivate.Store, error)) {
	if role := os.Getenv(childEnv); role != "" {
		n, err := runIncrementer(open, os.Getenv(dsnEnv), "child-"+role, childIncrements)
		if err != nil {
			fmt.Fprintln(os.Stderr, "storetest child:", err)
			os.Exit(3)
		}
		fmt.Printf("increments=%d\n", n)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Run("ActivateNew", func(t *testing.T) { testActivateNew(t, h) })
	t.Run("SaveAndReload", func(t *testing.T) { testSaveAndReload(t, h) })
	t.Run("CASConflicts", func(t *testing.T) { testCASConflicts(t, h) })
	t.Run("OwnedByLiveNode", func(t *testing.T) { testOwnedByLiveNode(t, h) })
	t.Run("TakeoverAfterLeaseExpiry", func(t *testing.T) { testLeaseExpiry(t, h) })
	t.Run("TakeoverAfterMarkDead", func(t *testing.T) { testMarkDead(t, h) })
	t.Run("TakeoverAfterDeregister", func(t *testing.T) { testDeregister(t, h) })
	t.Run("Release", func(t *testing.T) { testRelease(t, h) })
	t.Run("RemoveLeavesTombstone", func(t *testing.T) { testRemove(t, h) })
	t.Run("MissingKeys", func(t *testing.T) { testMissing(t, h) })
	t.Run("LargeValues", func(t *testing.T) { testLarge(t, h) })
	t.Run("LiveNodes", func(t *testing.T) { testLiveNodes(t, h) })
	t.Run("Sweep", func(t *testing.T) { testSweep(t, h) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrentWriters(t, h) })
	t.Run("FencedWriteAmongGroup", func(t *testing.T) { testFencedAmongGroup(t, h) })
	t.Run("ContendedClaims", func(t *testing.T) { testContendedClaims(t, h) })
	if h.Open != nil {
		t.Run("SecondHandle", func(t *testing.T) { testSecondHandle(t, h) })
		t.Run("TwoProcesses", func(t *testing.T) { testTwoProcesses(t, h) })
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t testing.TB, h Harness) (passivate.Store, string) {
	t.Helper()
	s, dsn := h.New(t)
	t.Cleanup(func() { _ = s.Close() })
	return s, dsn
}

func uniq(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", prefix, b)
}

func register(t testing.TB, s passivate.Store, lease time.Duration) passivate.Node {
	t.Helper()
	n := passivate.Node{Incarnation: uniq("node"), Addr: "127.0.0.1:" + strconv.Itoa(10000+int(time.Now().UnixNano()%50000))}
	require.NoError(t, s.Register(ctxT(t), n, lease))
	return n
}

func key(name string) passivate.Key { return passivate.Key{Component: "test", ID: uniq(name)} }

func testActivateNew(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	k := key("new")
	a, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	assert.Nil(t, a.State, "a new instance has no state")
	assert.Zero(t, a.Version)
	assert.Empty(t, a.Completions)
	assert.Equal(t, n.Incarnation, a.Owner.Node)
	assert.Positive(t, a.Owner.Epoch)

	// Activating again (the same node re-claims after dropping its
	// activation) bumps the epoch and fences the old one.
	b, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	assert.Greater(t, b.Owner.Epoch, a.Owner.Epoch)
	err = s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: []byte("x"), StateVersion: 1})
	assert.ErrorIs(t, err, passivate.ErrFenced)
}

func testSaveAndReload(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	k := key("save")
	a, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	for v := int64(0); v < 3; v++ {
		require.NoError(t, s.Save(ctx, &passivate.Write{
			Key: k, Owner: a.Owner, Version: v,
			State: []byte(fmt.Sprintf("state-%d", v+1)), StateVersion: 2,
			Completions: []byte(fmt.Sprintf("done-%d", v+1)),
		}))
	}
	require.NoError(t, s.Release(ctx, k, a.Owner))
	b, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("state-3"), b.State)
	assert.Equal(t, 2, b.StateVersion)
	assert.Equal(t, int64(3), b.Version)
	assert.Equal(t, []byte("done-3"), b.Completions)
	assert.Greater(t, b.Owner.Epoch, a.Owner.Epoch)
}

func testCASConflicts(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	k := key("cas")
	a, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: []byte("one"), StateVersion: 1}))

	stale := &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: []byte("stale"), StateVersion: 1}
	assert.ErrorIs(t, s.Save(ctx, stale), passivate.ErrFenced, "stale version")
	ahead := &passivate.Write{Key: k, Owner: a.Owner, Version: 5, State: []byte("ahead"), StateVersion: 1}
	assert.ErrorIs(t, s.Save(ctx, ahead), passivate.ErrFenced, "version from the future")
	wrongEpoch := &passivate.Write{Key: k, Owner: passivate.Owner{Node: n.Incarnation, Epoch: a.Owner.Epoch + 1}, Version: 1, State: []byte("x"), StateVersion: 1}
	assert.ErrorIs(t, s.Save(ctx, wrongEpoch), passivate.ErrFenced, "wrong epoch")
	wrongNode := &passivate.Write{Key: k, Owner: passivate.Owner{Node: "someone-else", Epoch: a.Owner.Epoch}, Version: 1, State: []byte("x"), StateVersion: 1}
	assert.ErrorIs(t, s.Save(ctx, wrongNode), passivate.ErrFenced, "wrong node")

	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 1, State: []byte("two"), StateVersion: 1}))
	require.NoError(t, s.Release(ctx, k, a.Owner))
	b, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("two"), b.State, "refused writes left no trace")
	assert.Equal(t, int64(2), b.Version)
}

func testOwnedByLiveNode(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	a := register(t, s, time.Minute)
	b := register(t, s, time.Minute)
	k := key("owned")
	actA, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)

	_, err = s.Activate(ctx, k, b.Incarnation)
	var owned *passivate.OwnedError
	require.ErrorAs(t, err, &owned)
	assert.Equal(t, a.Incarnation, owned.Owner)
	assert.Equal(t, a.Addr, owned.Addr)
	assert.Equal(t, k, owned.Key)

	// The refused claim did not disturb the owner.
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 0, State: []byte("a"), StateVersion: 1}))
}

func testLeaseExpiry(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	const lease = 300 * time.Millisecond
	a := register(t, s, lease)
	b := register(t, s, time.Minute)
	k := key("lease")
	actA, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 0, State: []byte("a1"), StateVersion: 1}))

	_, err = s.Activate(ctx, k, b.Incarnation)
	var owned *passivate.OwnedError
	require.ErrorAs(t, err, &owned, "lease still valid")

	var actB *passivate.Activation
	require.Eventually(t, func() bool {
		actB, err = s.Activate(ctx, k, b.Incarnation)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "claim after the owner's lease expired")
	assert.Equal(t, []byte("a1"), actB.State)

	// The zombie cannot write, cannot renew, and must re-register.
	err = s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 1, State: []byte("zombie"), StateVersion: 1})
	assert.ErrorIs(t, err, passivate.ErrFenced)
	assert.ErrorIs(t, s.Renew(ctx, a.Incarnation, time.Minute), passivate.ErrLeaseLost)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actB.Owner, Version: 1, State: []byte("b2"), StateVersion: 1}))
}

func testMarkDead(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	a := register(t, s, time.Minute)
	b := register(t, s, time.Minute)
	k := key("dead")
	actA, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)

	require.NoError(t, s.MarkDead(ctx, a.Incarnation))
	actB, err := s.Activate(ctx, k, b.Incarnation)
	require.NoError(t, err, "a node marked dead owns nothing")
	assert.Greater(t, actB.Owner.Epoch, actA.Owner.Epoch)
	assert.ErrorIs(t, s.Renew(ctx, a.Incarnation, time.Minute), passivate.ErrLeaseLost)
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 0, State: []byte("z"), StateVersion: 1}), passivate.ErrFenced)
	require.NoError(t, s.MarkDead(ctx, "never-registered"), "marking an unknown node is harmless")
}

func testDeregister(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	a := register(t, s, time.Minute)
	b := register(t, s, time.Minute)
	k := key("dereg")
	_, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Deregister(ctx, a.Incarnation))
	_, err = s.Activate(ctx, k, b.Incarnation)
	require.NoError(t, err, "instances of a deregistered node are claimable at once")
	assert.ErrorIs(t, s.Renew(ctx, a.Incarnation, time.Minute), passivate.ErrLeaseLost)
}

func testRelease(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	a := register(t, s, time.Minute)
	b := register(t, s, time.Minute)
	k := key("release")
	actA, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 0, State: []byte("kept"), StateVersion: 1}))

	// A release with a stale epoch does nothing.
	require.NoError(t, s.Release(ctx, k, passivate.Owner{Node: a.Incarnation, Epoch: actA.Owner.Epoch - 1}))
	_, err = s.Activate(ctx, k, b.Incarnation)
	var owned *passivate.OwnedError
	require.ErrorAs(t, err, &owned)

	require.NoError(t, s.Release(ctx, k, actA.Owner))
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: actA.Owner, Version: 1, State: []byte("after release"), StateVersion: 1}), passivate.ErrFenced, "a released claim cannot write")
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: passivate.Owner{}, Version: 1, State: []byte("nobody"), StateVersion: 1}), passivate.ErrFenced, "an empty owner never matches")
	actB, err := s.Activate(ctx, k, b.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("kept"), actB.State)
	assert.Equal(t, int64(1), actB.Version)
	// Releasing again, or a claim that is gone, is not an error.
	require.NoError(t, s.Release(ctx, k, actA.Owner))
	_, err = s.Activate(ctx, k, a.Incarnation)
	require.ErrorAs(t, err, &owned, "a stale release must not free b's claim")
}

func testRemove(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	other := register(t, s, time.Minute)
	k := key("remove")
	a, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: []byte("cart"), StateVersion: 1}))
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 1, Completions: []byte("receipt"), Remove: true}))

	// Removal released ownership: another node claims at once and finds no
	// state, but the completion record of the removing call.
	b, err := s.Activate(ctx, k, other.Incarnation)
	require.NoError(t, err)
	assert.Nil(t, b.State)
	assert.Equal(t, int64(2), b.Version)
	assert.Equal(t, []byte("receipt"), b.Completions)
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 2, State: []byte("zombie"), StateVersion: 1}), passivate.ErrFenced)

	// The instance can be created again from scratch.
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: b.Owner, Version: 2, State: []byte("new cart"), StateVersion: 1}))
}

func testMissing(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	k := key("missing")
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: passivate.Owner{Node: n.Incarnation, Epoch: 1}, Version: 0, State: []byte("x"), StateVersion: 1}), passivate.ErrFenced)
	require.NoError(t, s.Release(ctx, k, passivate.Owner{Node: n.Incarnation, Epoch: 1}))
	assert.ErrorIs(t, s.Renew(ctx, "never-registered", time.Minute), passivate.ErrLeaseLost)
	require.NoError(t, s.Deregister(ctx, "never-registered"))
	// Keys are compared exactly: neighbours do not leak.
	a, err := s.Activate(ctx, passivate.Key{Component: "test", ID: k.ID + " "}, n.Incarnation)
	require.NoError(t, err)
	assert.Nil(t, a.State)
	a, err = s.Activate(ctx, passivate.Key{Component: "Test", ID: k.ID}, n.Incarnation)
	require.NoError(t, err)
	assert.Nil(t, a.State)
}

func testLarge(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	k := passivate.Key{Component: "test", ID: strings.Repeat("é", 200) + uniq("")}
	big := make([]byte, 4<<20)
	_, _ = rand.Read(big)
	big[0], big[len(big)-1] = 0, 0 // NUL bytes must survive too
	comps := bytes.Repeat([]byte{0, 1, 2, 0xff}, 64<<10)
	a, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: big, StateVersion: 1, Completions: comps}))
	require.NoError(t, s.Release(ctx, k, a.Owner))
	b, err := s.Activate(ctx, k, n.Incarnation)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(big, b.State), "4 MiB state round trip")
	assert.True(t, bytes.Equal(comps, b.Completions), "256 KiB completions round trip")
}

func testLiveNodes(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	a := register(t, s, time.Minute)
	b := register(t, s, time.Minute)
	c := register(t, s, time.Minute)
	short := register(t, s, 200*time.Millisecond)
	require.NoError(t, s.MarkDead(ctx, b.Incarnation))
	require.NoError(t, s.Deregister(ctx, c.Incarnation))
	require.Eventually(t, func() bool {
		nodes, err := s.LiveNodes(ctx)
		if !assert.NoError(t, err) {
			return false
		}
		for _, n := range nodes {
			if n == short {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "expired nodes leave the list")
	nodes, err := s.LiveNodes(ctx)
	require.NoError(t, err)
	assert.Contains(t, nodes, a)
	assert.NotContains(t, nodes, b, "dead")
	assert.NotContains(t, nodes, c, "deregistered")

	// Re-registering an incarnation replaces its address and lease.
	a.Addr = "127.0.0.1:1"
	require.NoError(t, s.Register(ctx, a, time.Minute))
	nodes, err = s.LiveNodes(ctx)
	require.NoError(t, err)
	assert.Contains(t, nodes, a)
	for i := 1; i < len(nodes); i++ {
		assert.LessOrEqual(t, nodes[i-1].Addr, nodes[i].Addr, "ordered by address")
	}
}

func testSweep(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	alive, removed, empty := key("alive"), key("removed"), key("empty")
	a, err := s.Activate(ctx, alive, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: alive, Owner: a.Owner, Version: 0, State: []byte("keep"), StateVersion: 1}))
	require.NoError(t, s.Release(ctx, alive, a.Owner))
	r, err := s.Activate(ctx, removed, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: removed, Owner: r.Owner, Version: 0, Remove: true}))
	e, err := s.Activate(ctx, empty, n.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Release(ctx, empty, e.Owner))
	owned := key("owned-empty")
	_, err = s.Activate(ctx, owned, n.Incarnation)
	require.NoError(t, err)

	expired := register(t, s, time.Millisecond)

	// Nothing is old enough yet.
	swept, err := s.Sweep(ctx, time.Hour)
	require.NoError(t, err)
	assert.Zero(t, swept)
	time.Sleep(50 * time.Millisecond)
	swept, err = s.Sweep(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, swept, "the tombstone and the released empty record")
	// An expired node stays unable to renew after a sweep.
	assert.ErrorIs(t, s.Renew(ctx, expired.Incarnation, time.Minute), passivate.ErrLeaseLost)

	other := register(t, s, time.Minute)
	got, err := s.Activate(ctx, alive, other.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("keep"), got.State, "state is never swept")
	assert.Equal(t, int64(1), got.Version)
	got, err = s.Activate(ctx, removed, other.Incarnation)
	require.NoError(t, err)
	assert.Zero(t, got.Version, "an old tombstone is swept")
	got, err = s.Activate(ctx, empty, other.Incarnation)
	require.NoError(t, err)
	assert.Zero(t, got.Version)
	_, err = s.Activate(ctx, owned, other.Incarnation)
	var ownedErr *passivate.OwnedError
	assert.ErrorAs(t, err, &ownedErr, "a record with a live owner is not swept")
}

// testConcurrentWriters saves from many goroutines at once, the pattern
// group commit batches, and checks that every write landed exactly once.
func testConcurrentWriters(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	const writers, rounds = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	keys := make([]passivate.Key, writers)
	for i := range writers {
		keys[i] = key(fmt.Sprintf("w%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.Activate(ctx, keys[i], n.Incarnation)
			if err != nil {
				errs <- err
				return
			}
			for v := int64(0); v < rounds; v++ {
				w := &passivate.Write{Key: keys[i], Owner: a.Owner, Version: v, State: counter(v + 1), StateVersion: 1, Completions: counter(v)}
				if err := s.Save(ctx, w); err != nil {
					errs <- fmt.Errorf("writer %d version %d: %w", i, v, err)
					return
				}
			}
			errs <- s.Release(ctx, keys[i], a.Owner)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, k := range keys {
		a, err := s.Activate(ctx, k, n.Incarnation)
		require.NoError(t, err)
		assert.Equal(t, int64(rounds), a.Version)
		assert.Equal(t, counter(rounds), a.State)
	}
}

// testFencedAmongGroup mixes refused writes into a burst of good ones: with
// group commit they share a batch, and each must fail or succeed alone.
func testFencedAmongGroup(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	const writers = 32
	acts := make([]*passivate.Activation, writers)
	keys := make([]passivate.Key, writers)
	for i := range writers {
		keys[i] = key(fmt.Sprintf("g%d", i))
		a, err := s.Activate(ctx, keys[i], n.Incarnation)
		require.NoError(t, err)
		acts[i] = a
	}
	var wg sync.WaitGroup
	results := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &passivate.Write{Key: keys[i], Owner: acts[i].Owner, Version: 0, State: []byte("ok"), StateVersion: 1}
			if i%3 == 0 {
				w.Version = 7 // stale condition
			}
			results[i] = s.Save(ctx, w)
		}()
	}
	wg.Wait()
	for i, err := range results {
		if i%3 == 0 {
			assert.ErrorIs(t, err, passivate.ErrFenced, "writer %d", i)
		} else {
			assert.NoError(t, err, "writer %d", i)
		}
	}
	for i, k := range keys {
		require.NoError(t, s.Release(ctx, k, acts[i].Owner))
		a, err := s.Activate(ctx, k, n.Incarnation)
		require.NoError(t, err)
		if i%3 == 0 {
			assert.Zero(t, a.Version)
		} else {
			assert.Equal(t, int64(1), a.Version)
			assert.Equal(t, []byte("ok"), a.State)
		}
	}
}

// testContendedClaims has many nodes race to claim one instance: exactly
// one wins each round, and only the winner can write.
func testContendedClaims(t *testing.T, h Harness) {
	s, _ := newStore(t, h)
	ctx := ctxT(t)
	const nodes = 8
	ns := make([]passivate.Node, nodes)
	for i := range ns {
		ns[i] = register(t, s, time.Minute)
	}
	k := key("contended")
	for round := range 5 {
		var wins atomic.Int32
		var winner atomic.Pointer[passivate.Activation]
		var wg sync.WaitGroup
		for i := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := s.Activate(ctx, k, ns[i].Incarnation)
				var owned *passivate.OwnedError
				switch {
				case err == nil:
					wins.Add(1)
					winner.Store(a)
				case errors.As(err, &owned):
				default:
					t.Errorf("round %d node %d: %v", round, i, err)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load(), "round %d: exactly one claim wins", round)
		a := winner.Load()
		require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: int64(round), State: counter(int64(round + 1)), StateVersion: 1}))
		require.NoError(t, s.Release(ctx, k, a.Owner))
	}
}

func testSecondHandle(t *testing.T, h Harness) {
	s, dsn := newStore(t, h)
	ctx := ctxT(t)
	s2, err := h.Open(dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s2.Close() })
	a := register(t, s, time.Minute)
	b := register(t, s2, time.Minute)
	k := key("handles")
	act, err := s.Activate(ctx, k, a.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: act.Owner, Version: 0, State: []byte("shared"), StateVersion: 1}))
	_, err = s2.Activate(ctx, k, b.Incarnation)
	var owned *passivate.OwnedError
	require.ErrorAs(t, err, &owned, "the second handle sees the first's claim")
	assert.Equal(t, a.Addr, owned.Addr)
	require.NoError(t, s.Release(ctx, k, act.Owner))
	act2, err := s2.Activate(ctx, k, b.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("shared"), act2.State)
	nodes, err := s2.LiveNodes(ctx)
	require.NoError(t, err)
	assert.Contains(t, nodes, a)
}

// testTwoProcesses increments one shared counter from this process and a
// child process at the same time, each claiming, writing and releasing it.
// Fencing must make every acknowledged increment count: the final value is
// the sum of both processes' successful writes.
func testTwoProcesses(t *testing.T, h Harness) {
	_, dsn := newStore(t, h)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", dsnEnv+"="+dsn)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	mine, err := runIncrementer(h.Open, dsn, "parent", childIncrements)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait(), "child process: %s", out.String())
	var theirs int
	_, err = fmt.Sscanf(strings.TrimSpace(lastLine(out.String())), "increments=%d", &theirs)
	require.NoError(t, err, "child output: %s", out.String())
	assert.Equal(t, childIncrements, mine)
	assert.Equal(t, childIncrements, theirs)

	s, err := h.Open(dsn)
	require.NoError(t, err)
	defer s.Close()
	ctx := ctxT(t)
	n := register(t, s, time.Minute)
	var a *passivate.Activation
	require.Eventually(t, func() bool {
		a, err = s.Activate(ctx, sharedKey, n.Incarnation)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, counter(int64(mine+theirs)), a.State, "no lost update across processes")
	assert.Equal(t, int64(mine+theirs), a.Version)
}

var sharedKey = passivate.Key{Component: "test", ID: "shared-counter"}

// runIncrementer opens the store at dsn and adds n to the shared counter,
// one claim-read-write-release cycle per increment, retrying claims that
// another process holds and writes that were fenced.
func runIncrementer(open func(string) (passivate.Store, error), dsn, name string, n int) (int, error) {
	s, err := open(dsn)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	node := passivate.Node{Incarnation: uniq(name), Addr: name}
	if err := s.Register(ctx, node, time.Minute); err != nil {
		return 0, err
	}
	defer s.Deregister(context.Background(), node.Incarnation)
	done := 0
	for done < n {
		a, err := s.Activate(ctx, sharedKey, node.Incarnation)
		var owned *passivate.OwnedError
		if errors.As(err, &owned) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return done, err
		}
		v := decodeCounter(a.State)
		w := &passivate.Write{Key: sharedKey, Owner: a.Owner, Version: a.Version, State: counter(v + 1), StateVersion: 1}
		if err := s.Save(ctx, w); err != nil {
			if errors.Is(err, passivate.ErrFenced) {
				continue
			}
			return done, err
		}
		done++
		if err := s.Release(ctx, sharedKey, a.Owner); err != nil {
			return done, err
		}
	}
	return done, nil
}

func counter(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeCounter(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
