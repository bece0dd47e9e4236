package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/bench"
)

// runBench runs `containerd-lite bench args...` in process.
func runBench(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := NewMain()
	m.Stdout, m.Stderr = &out, &errb
	code = m.exitCode(m.Run(context.Background(), append([]string{"bench"}, args...)))
	return out.String(), errb.String(), code
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--store postgres://... is required"},
		{[]string{"--store", "/tmp/x.db"}, "postgres:// or postgresql:// URL"},
		{[]string{"--store", "postgres://h/db", "--concurrency", "1,x"}, "--concurrency"},
		{[]string{"--store", "postgres://h/db", "--workloads", "nope"}, "unknown workload"},
		{[]string{"--store", "postgres://h/db", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"--store", "postgres://h/db", "--state-size", "3"}, "state size 3"},
		{[]string{"--store", "postgres://h/db", "extra"}, "takes no arguments"},
	} {
		_, stderr, code := runBench(t, tc.args...)
		assert.Equal(t, 2, code, "%q", tc.args)
		assert.Contains(t, stderr, tc.want, "%q", tc.args)
	}
}

// TestBenchWithoutPostgres runs a transport workload, which needs no
// --store, through the command line.
func TestBenchWithoutPostgres(t *testing.T) {
	js := filepath.Join(t.TempDir(), "bench.json")
	stdout, stderr, code := runBench(t, "--workloads", "raw-tcp", "--concurrency", "2", "--duration", "100ms", "--warmup", "0", "--json", js)
	assert.Equal(t, 0, code, stderr)
	b, err := os.ReadFile(js)
	require.NoError(t, err)
	var rep bench.Report
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Cells, 1)
	assert.Equal(t, bench.RawTCP, rep.Cells[0].Workload)
	assert.Positive(t, rep.Cells[0].CallsPerSec)
	assert.Regexp(t, `(?m)^\s*raw-tcp\s+2\s+\d+\s+\d+\s`, stdout)
	assert.Contains(t, stderr, "bench: raw-tcp")
	assert.False(t, strings.Contains(stdout, "bench: c="), "no summary line without cart-pg and raw-upsert")
}
