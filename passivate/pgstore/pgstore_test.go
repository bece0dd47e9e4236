package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
	"github.com/containerd-lite/containerd-lite/passivate/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m, open) }

// open is the harness's Open: another handle on the store at dsn.
func open(dsn string) (passivate.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn, nil)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// newStore opens a store on a fresh schema of its own, closed with t.
func newStore(t testing.TB, opts *pgstore.Options) (*pgstore.Store, string) {
	t.Helper()
	dsn := pgtest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, dsn
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t testing.TB) (passivate.Store, string) {
			dsn := pgtest.DSN(t)
			s, err := open(dsn)
			require.NoError(t, err)
			return s, dsn
		},
		Open: open,
	})
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestCloseStopsEverything closes a store while Saves are in flight: each
// Save either commits or reports ErrClosed, later calls report ErrClosed,
// and no goroutine outlives the store.
func TestCloseStopsEverything(t *testing.T) {
	dsn := pgtest.DSN(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := ctxT(t, 30*time.Second)
	s, err := pgstore.Open(ctx, dsn, nil)
	require.NoError(t, err)
	node := passivate.Node{Incarnation: "inc-close", Addr: "127.0.0.1:1"}
	require.NoError(t, s.Register(ctx, node, time.Minute))

	const writers = 16
	var wg sync.WaitGroup
	started := make(chan struct{}, writers)
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := passivate.Key{Component: "close", ID: string(rune('a' + i))}
			a, err := s.Activate(ctx, k, node.Incarnation)
			if err != nil {
				errs <- err
				return
			}
			started <- struct{}{}
			for v := a.Version; ; v++ {
				err := s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: v, State: []byte("x"), StateVersion: 1})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, s.Close())
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.ErrorIs(t, err, passivate.ErrClosed)
	}
	require.NoError(t, s.Close(), "Close is idempotent")

	k := passivate.Key{Component: "close", ID: "a"}
	_, err = s.Activate(ctx, k, node.Incarnation)
	assert.ErrorIs(t, err, passivate.ErrClosed)
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k}), passivate.ErrClosed)
	assert.ErrorIs(t, s.Release(ctx, k, passivate.Owner{}), passivate.ErrClosed)
	assert.ErrorIs(t, s.Register(ctx, node, time.Minute), passivate.ErrClosed)
	assert.ErrorIs(t, s.Renew(ctx, node.Incarnation, time.Minute), passivate.ErrClosed)
	assert.ErrorIs(t, s.Deregister(ctx, node.Incarnation), passivate.ErrClosed)
	assert.ErrorIs(t, s.MarkDead(ctx, node.Incarnation), passivate.ErrClosed)
	_, err = s.LiveNodes(ctx)
	assert.ErrorIs(t, err, passivate.ErrClosed)
	_, err = s.Sweep(ctx, time.Hour)
	assert.ErrorIs(t, err, passivate.ErrClosed)
}

// TestSaveOutcomeIsPerWrite drives many groups with a mix of fenced and
// good writes, including two activations of one instance writing in the
// same burst: only the newest may win.
func TestSaveOutcomeIsPerWrite(t *testing.T) {
	s, _ := newStore(t, &pgstore.Options{MaxGroup: 8, Flushers: 3})
	ctx := ctxT(t, 60*time.Second)
	node := passivate.Node{Incarnation: "inc-mix", Addr: "127.0.0.1:2"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	const keys = 40
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := passivate.Key{Component: "mix", ID: string(rune('A' + i))}
			old, err := s.Activate(ctx, k, node.Incarnation)
			if !assert.NoError(t, err) {
				return
			}
			cur, err := s.Activate(ctx, k, node.Incarnation)
			if !assert.NoError(t, err) {
				return
			}
			var inner sync.WaitGroup
			var zombie, owner error
			inner.Add(2)
			go func() {
				defer inner.Done()
				zombie = s.Save(ctx, &passivate.Write{Key: k, Owner: old.Owner, Version: 0, State: []byte("zombie"), StateVersion: 1})
			}()
			go func() {
				defer inner.Done()
				owner = s.Save(ctx, &passivate.Write{Key: k, Owner: cur.Owner, Version: 0, State: []byte("owner"), StateVersion: 1})
			}()
			inner.Wait()
			assert.ErrorIs(t, zombie, passivate.ErrFenced)
			assert.NoError(t, owner)
			got, err := s.Activate(ctx, k, node.Incarnation)
			if assert.NoError(t, err) {
				assert.Equal(t, []byte("owner"), got.State)
				assert.Equal(t, int64(1), got.Version)
			}
		}()
	}
	wg.Wait()
}

// TestOptions checks the validation of Options against the URL.
func TestOptions(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := ctxT(t, 30*time.Second)
	_, err := pgstore.Open(ctx, dsn, &pgstore.Options{Flushers: -1})
	assert.ErrorContains(t, err, "Flushers")
	_, err = pgstore.Open(ctx, dsn, &pgstore.Options{Flushers: 4, MaxConns: 4})
	assert.ErrorContains(t, err, "must exceed Options.Flushers")
	s, err := pgstore.Open(ctx, dsn, &pgstore.Options{Flushers: 4, MaxConns: 5, MaxGroup: 1})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	s, err = pgstore.Open(ctx, dsn, &pgstore.Options{Flushers: 8})
	require.NoError(t, err, "the default pool grows to fit the flushers")
	require.NoError(t, s.Close())
	if strings.Contains(dsn, "://") {
		_, err = pgstore.Open(ctx, dsn+"&pool_max_conns=3", &pgstore.Options{Flushers: 4})
		assert.ErrorContains(t, err, "pool_max_conns", "an explicit pool size is kept, and checked")
	}
	_, err = pgstore.Open(ctx, "postgres://[::1", nil)
	assert.Error(t, err)
	assert.False(t, errors.Is(err, pgstore.ErrNotMigrated))
}

// TestGroupedActivations: Activates waiting at the same time share
// statements, and each one still gets its own outcome: new instances,
// stored ones with their state, ones a live peer owns (redirect), and keys
// two nodes race for (exactly one wins each).
func TestGroupedActivations(t *testing.T) {
	s, _ := newStore(t, &pgstore.Options{MaxGroup: 16, Flushers: 1})
	ctx := ctxT(t, 60*time.Second)
	a := passivate.Node{Incarnation: "inc-a", Addr: "127.0.0.1:1"}
	b := passivate.Node{Incarnation: "inc-b", Addr: "127.0.0.1:2"}
	require.NoError(t, s.Register(ctx, a, time.Minute))
	require.NoError(t, s.Register(ctx, b, time.Minute))
	key := func(kind string, i int) passivate.Key {
		return passivate.Key{Component: "grp", ID: fmt.Sprintf("%s-%03d", kind, i)}
	}
	const n = 48
	// Stored instances, released; and instances b owns.
	for i := range n {
		act, err := s.Activate(ctx, key("stored", i), a.Incarnation)
		require.NoError(t, err)
		require.NoError(t, s.Save(ctx, &passivate.Write{Key: key("stored", i), Owner: act.Owner, State: []byte(fmt.Sprint("state-", i)), StateVersion: 1}))
		require.NoError(t, s.Release(ctx, key("stored", i), passivate.Owner{Node: a.Incarnation, Epoch: act.Owner.Epoch}))
		_, err = s.Activate(ctx, key("peer", i), b.Incarnation)
		require.NoError(t, err)
	}
	before := s.ActivationStats()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins = map[passivate.Key][]string{}
	)
	claim := func(k passivate.Key, node string, check func(*passivate.Activation, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			act, err := s.Activate(ctx, k, node)
			check(act, err)
		}()
	}
	for i := range n {
		claim(key("new", i), a.Incarnation, func(act *passivate.Activation, err error) {
			if assert.NoError(t, err) {
				assert.EqualValues(t, 1, act.Owner.Epoch)
				assert.Empty(t, act.State)
			}
		})
		claim(key("stored", i), a.Incarnation, func(act *passivate.Activation, err error) {
			if assert.NoError(t, err) {
				assert.Equal(t, fmt.Sprint("state-", i), string(act.State))
				assert.EqualValues(t, 1, act.Version)
				assert.EqualValues(t, 2, act.Owner.Epoch)
			}
		})
		claim(key("peer", i), a.Incarnation, func(_ *passivate.Activation, err error) {
			var owned *passivate.OwnedError
			if assert.ErrorAs(t, err, &owned) {
				assert.Equal(t, b.Incarnation, owned.Owner)
				assert.Equal(t, b.Addr, owned.Addr)
			}
		})
		for _, node := range []string{a.Incarnation, b.Incarnation} {
			claim(key("race", i), node, func(act *passivate.Activation, err error) {
				var owned *passivate.OwnedError
				if err == nil {
					mu.Lock()
					wins[key("race", i)] = append(wins[key("race", i)], node)
					mu.Unlock()
				} else {
					assert.ErrorAs(t, err, &owned)
				}
			})
		}
	}
	wg.Wait()
	assert.Len(t, wins, n, "every raced key was won")
	for k, w := range wins {
		assert.Len(t, w, 1, "%s won by exactly one node", k)
	}
	after := s.ActivationStats()
	claims, groups := after.Writes-before.Writes, after.Groups-before.Groups
	t.Logf("%d activations in %d statements", claims, groups)
	assert.Less(t, groups, claims, "activations were grouped")
}
