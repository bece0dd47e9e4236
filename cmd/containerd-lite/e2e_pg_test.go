package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/internal/cluster"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
	"github.com/containerd-lite/containerd-lite/registry"
	"github.com/containerd-lite/containerd-lite/rpc"
)

// pgCluster migrates a fresh schema with the CLI and starts n nodes on it.
func pgCluster(t *testing.T, dsn string, n int, args ...string) []*cluster.Node {
	t.Helper()
	nodes := make([]*cluster.Node, n)
	for i := range nodes {
		nodes[i] = startNode(t, append([]string{"--store", dsn}, args...)...)
	}
	return nodes
}

func goClient(t *testing.T, nodes ...*cluster.Node) *rpc.Client {
	t.Helper()
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	c, err := rpc.NewClient(rpc.ClientConfig{Nodes: addrs})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestMigrateCommand(t *testing.T) {
	dsn := pgtest.EmptyDSN(t)
	r := cli(t, "migrate", "--store", dsn)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "applied migrations [1]")
	r = cli(t, "migrate", "--store", dsn)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "schema is up to date")

	unmigrated := pgtest.EmptyDSN(t)
	r = cli(t, "serve", "--listen", "127.0.0.1:0", "--store", unmigrated)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "containerd-lite migrate --store URL")
	n := startNode(t, "--store", unmigrated, "--migrate")
	r = cli(t, "call", nodesFlag(n), "cart", "m", "Add", `{"sku":"a","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)
}

// TestPostgresFailover: three nodes on one PostgreSQL; SIGKILL the owner of
// a cart and the next call, from a client that lists all three, succeeds on
// another node with the full cart.
func TestPostgresFailover(t *testing.T) {
	ns := pgCluster(t, pgtest.DSN(t), 3)
	c := goClient(t, ns...)
	ctx := t.Context()
	for i := range 5 {
		_, err := cart.Add.Call(ctx, c, "k1", cart.Item{SKU: fmt.Sprint("sku", i), Qty: i + 1})
		require.NoError(t, err)
	}
	// The client routes a new instance to its first node, which owns it.
	require.NoError(t, ns[0].Kill())
	start := time.Now()
	sum, err := cart.Get.Call(ctx, c, "k1")
	failover := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"sku0": 1, "sku1": 2, "sku2": 3, "sku3": 4, "sku4": 5}, sum.Items)
	t.Logf("SIGKILL failover (port refused): first call took %v", failover)

	// The CLI fails over the same way, and the killed node comes back.
	r := cli(t, "call", nodesFlag(ns...), "cart", "k1", "Add", `{"sku":"sku0","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, ns[0].Restart(ctx))
	r = cli(t, "call", nodesFlag(ns[0]), "cart", "k1", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"sku0":2`)
}

// TestClientLearnsNodes: a client that knows one node learns the others
// from it and survives that node's death.
func TestClientLearnsNodes(t *testing.T) {
	ns := pgCluster(t, pgtest.DSN(t), 3)
	r := cli(t, "nodes", nodesFlag(ns[1]))
	require.Equal(t, 0, r.code, r.stderr)
	for _, n := range ns {
		assert.Contains(t, r.stdout, n.Addr())
	}
	c := goClient(t, ns[0])
	ctx := t.Context()
	_, err := cart.Add.Call(ctx, c, "learn", cart.Item{SKU: "a", Qty: 1})
	require.NoError(t, err)
	require.NoError(t, ns[0].Kill())
	sum, err := cart.Get.Call(ctx, c, "learn")
	require.NoError(t, err, "the client carries on with the nodes it learned")
	assert.Equal(t, 1, sum.Items["a"])
}

// TestGracefulShutdownNeedsNoLease: with a 30 s lease, a SIGTERMed node's
// instances are served elsewhere on the very next call.
func TestGracefulShutdownNeedsNoLease(t *testing.T) {
	ns := pgCluster(t, pgtest.DSN(t), 3, "--lease", "30s", "--heartbeat", "2s")
	c := goClient(t, ns...)
	ctx := t.Context()
	for _, id := range []string{"g1", "g2", "g3"} {
		_, err := cart.Add.Call(ctx, c, id, cart.Item{SKU: "x", Qty: 2})
		require.NoError(t, err)
	}
	require.NoError(t, ns[0].Term(20*time.Second))
	start := time.Now()
	for _, id := range []string{"g1", "g2", "g3"} {
		sum, err := cart.Get.Call(ctx, c, id)
		require.NoError(t, err)
		assert.Equal(t, 2, sum.Items["x"])
	}
	took := time.Since(start)
	t.Logf("SIGTERM handover: three instances served elsewhere in %v", took)
	assert.Less(t, took, 10*time.Second, "no wait for the 30 s lease")
}

// TestFrozenOwnerIsFenced: SIGSTOP the owner of several busy instances past
// its lease while writers keep going; other nodes take over. After SIGCONT
// the stale node must not acknowledge anything from its stale state: every
// acknowledged write is in its cart exactly once, and a read through the
// stale node sees every write acknowledged before the read began.
func TestFrozenOwnerIsFenced(t *testing.T) {
	ns := pgCluster(t, pgtest.DSN(t), 3, "--lease", "2s", "--heartbeat", "500ms", "--log-level", "debug")
	ctx := t.Context()
	const writers = 8
	id := func(w int) string { return fmt.Sprint("frozen-", w) }

	var (
		mu    sync.Mutex
		acked = map[string]bool{} // "instance/sku"
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range writers {
		// Every writer lists the frozen node first, so it owns all their
		// instances and has writes in flight when it freezes.
		c := goClient(t, ns...)
		_, err := cart.Add.Call(ctx, c, id(w), cart.Item{SKU: "seed", Qty: 1})
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sku := fmt.Sprintf("s%d", i)
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := cart.Add.Call(cctx, c, id(w), cart.Item{SKU: sku, Qty: 1})
				cancel()
				if err == nil {
					mu.Lock()
					acked[id(w)+"/"+sku] = true
					mu.Unlock()
				}
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	require.Eventually(t, func() bool { return count() > 200 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, ns[0].Stop())
	start := time.Now()
	before := count()
	require.Eventually(t, func() bool { return count() > before+100 }, 30*time.Second, 10*time.Millisecond,
		"writes resume on other nodes once the frozen node's lease expires")
	t.Logf("frozen owner: writes resumed on other nodes after %v", time.Since(start))
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, ns[0].Cont())

	// Reads through the stale node only: redirected or refused, never
	// answered from its stale memory.
	stale := goClient(t, ns[0])
	for w := range writers {
		mu.Lock()
		var want []string
		for k := range acked {
			if inst, sku, _ := strings.Cut(k, "/"); inst == id(w) {
				want = append(want, sku)
			}
		}
		mu.Unlock()
		sum, err := cart.Get.Call(ctx, stale, id(w))
		require.NoError(t, err)
		for _, sku := range want {
			require.Equal(t, 1, sum.Items[sku], "read of %s through the stale node misses acknowledged write %s", id(w), sku)
		}
	}

	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	seed := goClient(t, ns[1])
	total := 0
	for w := range writers {
		final, err := cart.Get.Call(ctx, seed, id(w))
		require.NoError(t, err)
		for sku, q := range final.Items {
			assert.Equal(t, 1, q, "%s: sku %s applied %d times", id(w), sku, q)
		}
		for k := range acked {
			if inst, sku, _ := strings.Cut(k, "/"); inst == id(w) {
				assert.Equal(t, 1, final.Items[sku], "acknowledged write %s lost", k)
			}
		}
		total += len(final.Items)
	}
	logs := ns[0].Logs()
	t.Logf("frozen owner: %d writes acknowledged, %d applied; stale node: %d writes fenced, %d with unknown outcome, lease lost %d time(s)",
		len(acked), total-writers, strings.Count(logs, `why="ownership lost"`), strings.Count(logs, `why="write outcome unknown"`),
		strings.Count(logs, "lease lost; discarding"))
	assert.Equal(t, 1, strings.Count(logs, "lease lost; discarding"), "the stale node noticed it lost its lease")
}

// TestStaleWriteIsRefused makes the fencing deterministic: the owner's link
// to PostgreSQL is partitioned (bytes held, not refused) while it commits a
// call; once its lease has expired another node takes the instance over and
// writes. When the link heals, the stale commit reaches the database with
// the old epoch and is refused; the stale node does not acknowledge the
// call, and the client's retry applies it once on the new owner.
func TestStaleWriteIsRefused(t *testing.T) {
	dsn := pgtest.DSN(t)
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	proxy, err := cluster.NewProxy(u.Host)
	require.NoError(t, err)
	t.Cleanup(proxy.Close)
	viaProxy := *u
	viaProxy.Host = proxy.Addr()
	args := []string{"--lease", "2s", "--heartbeat", "500ms", "--log-level", "debug"}
	a := startNode(t, append([]string{"--store", viaProxy.String()}, args...)...)
	b := startNode(t, append([]string{"--store", dsn}, args...)...)
	ctx := t.Context()
	db, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close(context.Background()) })

	ca := goClient(t, a, b)
	_, err = cart.Add.Call(ctx, ca, "stale", cart.Item{SKU: "before", Qty: 1})
	require.NoError(t, err)

	proxy.Pause()
	type outcome struct {
		line cart.Line
		err  error
	}
	inflight := make(chan outcome, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		line, err := cart.Add.Call(cctx, ca, "stale", cart.Item{SKU: "inflight", Qty: 1})
		inflight <- outcome{line, err}
	}()
	// Wait until the store considers a's lease expired.
	require.Eventually(t, func() bool {
		var expired bool
		err := db.QueryRow(ctx, `SELECT lease_until < now() FROM cl_nodes WHERE addr = $1`, a.Addr()).Scan(&expired)
		return err == nil && expired
	}, 20*time.Second, 50*time.Millisecond)
	cb := goClient(t, b)
	_, err = cart.Add.Call(ctx, cb, "stale", cart.Item{SKU: "taken over", Qty: 1})
	require.NoError(t, err, "b takes over once a's lease expired")
	select {
	case o := <-inflight:
		t.Fatalf("the partitioned node answered before its commit could complete: %+v", o)
	default:
	}
	proxy.Resume()

	o := <-inflight
	require.NoError(t, o.err, "the client's retry lands on the new owner")
	assert.Equal(t, cart.Line{SKU: "inflight", Qty: 1}, o.line)
	final, err := cart.Get.Call(ctx, cb, "stale")
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"before": 1, "taken over": 1, "inflight": 1}, final.Items, "applied exactly once")
	require.Eventually(t, func() bool {
		return strings.Contains(a.Logs(), `instance=cart/stale why="ownership lost"`)
	}, 10*time.Second, 20*time.Millisecond, "the stale node's write was refused by the store:\n%s", a.Logs())
}

// TestDatabaseOutage cuts the nodes' connections to PostgreSQL: calls fail
// with unavailable within their deadline; when it comes back the nodes
// recover by themselves and no acknowledged write is lost.
func TestDatabaseOutage(t *testing.T) {
	dsn := pgtest.DSN(t)
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	proxy, err := cluster.NewProxy(u.Host)
	require.NoError(t, err)
	t.Cleanup(proxy.Close)
	u.Host = proxy.Addr()
	ns := pgCluster(t, u.String(), 2, "--lease", "2s", "--heartbeat", "500ms")
	c := goClient(t, ns...)
	ctx := t.Context()
	for i := range 3 {
		_, err := cart.Add.Call(ctx, c, "db", cart.Item{SKU: fmt.Sprint("before", i), Qty: 1})
		require.NoError(t, err)
	}

	proxy.Cut()
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = cart.Add.Call(cctx, c, "db", cart.Item{SKU: "during", Qty: 1})
	cancel()
	assert.Equal(t, registry.CodeUnavailable, registry.CodeOf(err), "%v", err)
	assert.Less(t, time.Since(start), 4*time.Second, "fails within its deadline")
	r := cli(t, "call", "--timeout=2s", nodesFlag(ns...), "cart", "db", "Get")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "unavailable:")
	time.Sleep(3 * time.Second) // past the lease: the nodes must re-register

	require.NoError(t, proxy.Restore())
	start = time.Now()
	require.Eventually(t, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = cart.Add.Call(cctx, c, "db", cart.Item{SKU: "after", Qty: 1})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "nodes recover when the database returns")
	t.Logf("recovered %v after the database came back", time.Since(start))
	sum, err := cart.Get.Call(ctx, c, "db")
	require.NoError(t, err)
	for i := range 3 {
		assert.Equal(t, 1, sum.Items[fmt.Sprint("before", i)], "acknowledged before the outage")
	}
	assert.Equal(t, 1, sum.Items["after"])
	assert.LessOrEqual(t, sum.Items["during"], 1, "an unacknowledged write applies at most once")
}
