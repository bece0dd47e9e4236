package main

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetrics scrapes a node the way Prometheus would.
func TestMetrics(t *testing.T) {
	n := startNode(t, "--store", filepath.Join(t.TempDir(), "s.db"), "--metrics-listen", "127.0.0.1:0")
	m := regexp.MustCompile(`msg=metrics addr=(\S+)`).FindStringSubmatch(n.Logs())
	require.NotNil(t, m, "the node logs its metrics address:\n%s", n.Logs())
	base := "http://" + m[1]

	for range 3 {
		r := cli(t, "call", nodesFlag(n), "cart", "m", "Add", `{"sku":"a","qty":1}`)
		require.Equal(t, 0, r.code, r.stderr)
	}
	r := cli(t, "call", nodesFlag(n), "cart", "m", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	r = cli(t, "call", nodesFlag(n), "no-such-"+t.Name(), "m", "Get")
	require.Equal(t, 1, r.code)

	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`containerd_lite_calls_total{code="",component="cart",method="Add"} 3`,
		`containerd_lite_calls_total{code="",component="cart",method="Get"} 1`,
		`containerd_lite_calls_total{code="not_found",component="",method=""} 1`,
		`containerd_lite_call_outcomes_total{component="cart",outcome="written"} 3`,
		`containerd_lite_call_outcomes_total{component="cart",outcome="unchanged"} 1`,
		`containerd_lite_state_bytes_count{component="cart"} 4`,
		`containerd_lite_call_duration_seconds_count{component="cart",method="Add"} 3`,
		`containerd_lite_activations_total 1`,
		`containerd_lite_active_instances 1`,
		`containerd_lite_lease_valid 1`,
		`containerd_lite_store_writes_total 3`,
		`go_goroutines`,
	} {
		assert.Contains(t, body, want)
	}
	assert.NotContains(t, body, "no-such-", "names sent by clients never become labels")
	code, body = get("/readyz")
	assert.Equal(t, http.StatusOK, code, body)
}
