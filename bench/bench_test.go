package bench_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/bench"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
)

// TestMain fails the package when a run leaves a goroutine behind: the
// bench must close every pool, node, client and echo server it starts.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var summaryRE = regexp.MustCompile(`^bench: c=(\d+) calls_per_s=\d+ raw_upsert_per_s=\d+ ratio=\d+\.\d\d p99_ms=\d+\.\d\d raw_p99_ms=\d+\.\d\d$`)

// TestRun runs every workload briefly against the test PostgreSQL and
// checks the table, the summary line and the clean-up.
func TestRun(t *testing.T) {
	dsn := pgtest.EmptyDSN(t) // a reachable server (the bench makes its own schema)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := bench.Run(ctx, &bench.Config{
		StoreURL:      dsn,
		Duration:      200 * time.Millisecond,
		Warmup:        100 * time.Millisecond,
		Concurrency:   []int{1, 8},
		Reactivations: 200,
		Progress:      &progress,
		CPUProfileDir: t.TempDir(),
	})
	require.NoError(t, err, progress.String())
	require.Len(t, rep.Cells, 2*len(bench.Workloads()))
	for _, c := range rep.Cells {
		assert.Positive(t, c.Calls, "%s c=%d", c.Workload, c.C)
		assert.Positive(t, c.CallsPerSec, "%s c=%d", c.Workload, c.C)
		assert.Positive(t, c.P50, "%s c=%d", c.Workload, c.C)
		assert.GreaterOrEqual(t, c.P99, c.P50, "%s c=%d", c.Workload, c.C)
		assert.Positive(t, c.AllocsPerCall, "%s c=%d", c.Workload, c.C)
		if b := c.Workload.Baseline(); b != "" {
			assert.Equal(t, b, c.Baseline)
			assert.Positive(t, c.Ratio, "%s c=%d", c.Workload, c.C)
		}
	}
	assert.Equal(t, 1024, rep.StateBytes)

	var out bytes.Buffer
	require.NoError(t, rep.WriteTable(&out))
	text := out.String()
	t.Log("\n" + text)
	for _, w := range bench.Workloads() {
		for _, c := range []string{"1", "8"} {
			assert.Regexp(t, `(?m)^\s*`+regexp.QuoteMeta(string(w))+`\s+`+c+`\s+\d+\s+\d+\s`, text)
		}
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	last := lines[len(lines)-1]
	m := summaryRE.FindStringSubmatch(last)
	require.NotNil(t, m, "last line %q", last)
	assert.Equal(t, "8", m[1], "no c=64 in this run: the summary is at the largest c")
	assert.Equal(t, rep.Summary(), last)

	// The scratch schema is gone.
	conn, err := pgx.Connect(ctx, pgtest.BaseDSN())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", rep.Schema).Scan(&n))
	assert.Zero(t, n, "schema %s was not dropped", rep.Schema)
}

// TestRunWithoutPostgres runs the transport workloads, which need no
// database, and stops at the first error of a bad configuration.
func TestRunWithoutPostgres(t *testing.T) {
	ctx := context.Background()
	rep, err := bench.Run(ctx, &bench.Config{
		Workloads: []bench.Workload{bench.RawTCP, bench.RawYamux, bench.CartMem},
		Duration:  100 * time.Millisecond, Warmup: -1, Concurrency: []int{4}, Rounds: 3,
	})
	require.NoError(t, err)
	require.Len(t, rep.Cells, 3)
	for _, c := range rep.Cells {
		assert.Equal(t, 3, c.Rounds)
		assert.GreaterOrEqual(t, c.Spread, 0.0)
	}
	assert.Equal(t, bench.RawYamux, rep.Cells[0].Workload, "report order")
	assert.Equal(t, bench.RawTCP, rep.Cells[1].Workload, "report order")
	assert.Equal(t, bench.RawYamux.Baseline(), rep.Cells[0].Baseline)
	assert.Empty(t, rep.Schema)
	assert.Empty(t, rep.Summary(), "no cart-pg/raw-upsert pair")

	_, err = bench.Run(ctx, &bench.Config{Workloads: []bench.Workload{bench.CartPG}})
	assert.ErrorContains(t, err, "needs a PostgreSQL URL")
}

func TestSummaryFormat(t *testing.T) {
	rep := &bench.Report{
		Config: bench.Config{Concurrency: []int{1, 64, 8}},
		Cells: []bench.Cell{
			{Workload: bench.RawUpsert, C: 64, CallsPerSec: 15000.4, P99: 21400 * time.Microsecond},
			{Workload: bench.CartPG, C: 64, CallsPerSec: 19500.6, P99: 9706 * time.Microsecond},
			{Workload: bench.RawUpsert, C: 8, CallsPerSec: 1, P99: 1},
			{Workload: bench.CartPG, C: 8, CallsPerSec: 1, P99: 1},
		},
	}
	assert.Equal(t, "bench: c=64 calls_per_s=19501 raw_upsert_per_s=15000 ratio=1.30 p99_ms=9.71 raw_p99_ms=21.40", rep.Summary())
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  bench.Config
		want string
	}{
		{bench.Config{StoreURL: "/tmp/x.db"}, "postgres:// or postgresql:// URL"},
		{bench.Config{StoreURL: "postgres://h/db", Concurrency: []int{0}}, "concurrency 0"},
		{bench.Config{StoreURL: "postgres://h/db", StateSize: 3}, "state size 3"},
		{bench.Config{StoreURL: "postgres://h/db", Duration: -time.Second}, "negative duration"},
		{bench.Config{StoreURL: "postgres://h/db", Workloads: []bench.Workload{"nope"}}, "unknown workload"},
	} {
		assert.ErrorContains(t, tc.cfg.Validate(), tc.want)
	}
	assert.NoError(t, (&bench.Config{StoreURL: "postgresql://u:p@h/db"}).Validate())
	assert.NoError(t, (&bench.Config{Workloads: []bench.Workload{bench.RawTCP}}).Validate())

	ws, err := bench.ParseWorkloads("cart-pg, raw-upsert,cart-pg")
	require.NoError(t, err)
	assert.Equal(t, []bench.Workload{bench.CartPG, bench.RawUpsert}, ws)
	ws, err = bench.ParseWorkloads("all")
	require.NoError(t, err)
	assert.Equal(t, bench.Workloads(), ws)
	_, err = bench.ParseWorkloads("cart")
	assert.ErrorContains(t, err, "unknown workload")

	cs, err := bench.ParseConcurrency("1, 8,64")
	require.NoError(t, err)
	assert.Equal(t, []int{1, 8, 64}, cs)
	for _, bad := range []string{"", "0", "x", "-1"} {
		_, err := bench.ParseConcurrency(bad)
		assert.Error(t, err, bad)
	}
}
