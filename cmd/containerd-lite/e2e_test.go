package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/internal/cluster"
)

// bin is the containerd-lite binary built for the end-to-end tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "containerd-lite-e2e")
	if err != nil {
		panic(err)
	}
	bin, err = cluster.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startNode(t *testing.T, args ...string) *cluster.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := cluster.Start(ctx, bin, "", args...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = n.Kill()
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.Addr(), n.Logs())
		}
	})
	return n
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the real binary, as a user would.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()), code}
}

func nodesFlag(ns ...*cluster.Node) string {
	addrs := make([]string, len(ns))
	for i, n := range ns {
		addrs[i] = n.Addr()
	}
	return "--nodes=" + strings.Join(addrs, ",")
}

// TestFailoverSharedEmbeddedStore is the product's promise on one host: two
// nodes share one embedded store; SIGKILL the one serving a cart and the
// next call, listing both nodes, is served by the other with the cart
// intact.
func TestFailoverSharedEmbeddedStore(t *testing.T) {
	store := filepath.Join(t.TempDir(), "shared.db")
	a := startNode(t, "--store", store)
	b := startNode(t, "--store", store)
	nodes := nodesFlag(a, b)

	r := cli(t, "call", nodes, "cart", "u1", "Add", `{"sku":"apple","qty":2}`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"qty":2,"sku":"apple"}`, r.stdout)
	r = cli(t, "call", nodes, "cart", "u1", "Add", `{"sku":"pear","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)

	require.NoError(t, a.Kill())
	start := time.Now()
	r = cli(t, "call", nodes, "cart", "u1", "Get")
	elapsed := time.Since(start)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{"apple":2,"pear":1}}`, r.stdout)
	t.Logf("failover call after SIGKILL (whole CLI process): %v", elapsed)
	assert.Contains(t, b.Logs(), "took over from a dead node")

	r = cli(t, "call", nodes, "cart", "u1", "Checkout")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"count":3,"items":{"apple":2,"pear":1}}`, r.stdout)
	r = cli(t, "call", nodes, "cart", "u1", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{}}`, r.stdout, "checkout deleted the cart")
}

// TestRestartOnSameAddress: a node killed and restarted on its address is
// a new incarnation; it takes its old instances back at once.
func TestRestartOnSameAddress(t *testing.T) {
	store := filepath.Join(t.TempDir(), "s.db")
	a := startNode(t, "--store", store)
	r := cli(t, "call", nodesFlag(a), "cart", "r1", "Add", `{"sku":"x","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, a.Kill())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, a.Restart(ctx))
	r = cli(t, "call", "--timeout=2s", nodesFlag(a), "cart", "r1", "Add", `{"sku":"x","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"qty":2,"sku":"x"}`, r.stdout)
}

// TestSIGTERMHandsOverAtOnce: a drained node deregisters, so its instances
// move on the very next call with no wait for its lease.
func TestSIGTERMHandsOverAtOnce(t *testing.T) {
	store := filepath.Join(t.TempDir(), "s.db")
	a := startNode(t, "--store", store, "--lease", "30s", "--heartbeat", "1s")
	b := startNode(t, "--store", store, "--lease", "30s", "--heartbeat", "1s")
	nodes := nodesFlag(a, b)
	r := cli(t, "call", nodes, "cart", "t1", "Add", `{"sku":"x","qty":3}`)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, a.Term(20*time.Second), "clean exit on SIGTERM")
	assert.Contains(t, a.Logs(), "msg=stopped")

	start := time.Now()
	r = cli(t, "call", nodes, "cart", "t1", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{"x":3}}`, r.stdout)
	assert.Less(t, time.Since(start), 20*time.Second, "must not wait for the 30s lease")
	t.Logf("call after SIGTERM: %v", time.Since(start))
}

func TestCLIErrors(t *testing.T) {
	a := startNode(t, "--store", filepath.Join(t.TempDir(), "s.db"))
	nodes := nodesFlag(a)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"call", nodes, "nope", "x", "Get"}, 1, "not_found: unknown component"},
		{[]string{"call", nodes, "cart", "x", "Fly"}, 1, "not_found:"},
		{[]string{"call", nodes, "cart", "x", "Add", `{"sku":"a","qty":"lots"}`}, 1, "bad_request:"},
		{[]string{"call", nodes, "cart", "x", "Add", `{"sku":"a","qty":1.5}`}, 1, "bad_request:"},
		{[]string{"call", nodes, "cart", "x", "Add", `{"sku":"a","qtty":1}`}, 1, "bad_request:"},
		{[]string{"call", nodes, "cart", "x", "Add", `{not json`}, 1, "bad_request: JSON-ARGS"},
		{[]string{"call", nodes, "cart", "x", "Add", `{"sku":"a","qty":0}`}, 1, "bad_request: qty must be"},
		{[]string{"call", nodes, "cart", "x", "Checkout"}, 1, "application: cart is empty"},
		{[]string{"call", nodes, "cart"}, 2, "call needs COMPONENT ID METHOD"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"call", "--bogus", "cart", "x", "Get"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"serve", "--lease", "soon"}, 2, "invalid value"},
		{[]string{"serve", "--lease", "-1s"}, 2, "--lease must be positive"},
		{[]string{"serve", "--heartbeat", "5s"}, 2, "--heartbeat 5s must be at most half of --lease 3s"},
		{[]string{"serve", "--max-frame", "10"}, 2, "--max-frame must be at least 4096"},
		{[]string{"serve", "--max-conns", "-1"}, 2, "--max-conns must be positive"},
		{[]string{"call", "--timeout=1s", "--nodes=127.0.0.1:1", "cart", "x", "Get"}, 1, "unavailable:"},
	} {
		r := cli(t, tc.args...)
		assert.Equal(t, tc.code, r.code, "%v: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.msg, tc.args)
		assert.Empty(t, r.stdout, tc.args)
	}
	r := cli(t, "call", nodes, "cart", "x", "Add", `{"sku":"a","qty":1}`)
	require.Equal(t, 0, r.code, "the node is fine after all that: %s", r.stderr)
	r = cli(t, "nodes", nodes)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, a.Addr(), r.stdout)
}

// TestServeDefaultStore runs serve with no --store, as the README's first
// command does, in a fresh directory.
func TestServeDefaultStore(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.NoError(t, os.Chdir(dir))
	n, err := cluster.Start(ctx, bin, "")
	require.NoError(t, os.Chdir(wd))
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Kill() })
	r := cli(t, "call", nodesFlag(n), "cart", "d", "Add", `{"sku":"a","qty":1}`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.FileExists(t, filepath.Join(dir, DefaultDataDir, "containerd-lite.db"))
}
