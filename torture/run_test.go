package torture

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/internal/cluster"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
)

// bin is the containerd-lite binary the nodes run.
var bin string

// TestMain builds the binary, and fails the package when a test leaves a
// goroutine behind: a node process not reaped, a client not closed.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "containerd-lite-torture-test")
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
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testConfig is a run of d against nodes on store, with a SIGKILL every
// 2 s; files go to a temporary directory.
func testConfig(t *testing.T, store string, nodes, clients int, d time.Duration) *Config {
	cfg := DefaultConfig()
	cfg.Binary, cfg.Store, cfg.Nodes, cfg.Clients, cfg.Duration = bin, store, nodes, clients, d
	cfg.OutDir = t.TempDir()
	cfg.Logger = testLogger(t)
	cfg.ProgressEvery = 5 * time.Second
	return cfg
}

// run runs cfg and checks that it found nothing wrong, logging the
// summary and, on failure, the evidence files' names.
func run(t *testing.T, cfg *Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cfg.Duration+4*time.Minute)
	defer cancel()
	r, err := Run(ctx, cfg)
	require.NoError(t, err)
	var sum strings.Builder
	require.NoError(t, r.WriteSummary(&sum))
	t.Logf("summary:\n%s", sum.String())
	assert.NoError(t, r.Err())
	assert.Zero(t, r.Verdict.Lost, "acknowledged updates lost")
	assert.Zero(t, r.Verdict.Duplicated, "updates applied twice")
	assert.True(t, r.Linearizable(), "linearizable")
	assert.Empty(t, r.Verdict.Unread)
	assert.Zero(t, r.Verdict.Unexpected, "unexpected errors: %v", r.Verdict.Errors)
	assert.Empty(t, r.FaultErrors)
	assert.Empty(t, r.Files, "evidence is written only on a violation")

	lines := strings.Split(strings.TrimSpace(sum.String()), "\n")
	assert.Equal(t, r.Line(), lines[len(lines)-1], "the verdict is the last line")
	assert.Equal(t, fmt.Sprintf("torture: ops=%d acked=%d lost=0 duplicated=0 linearizable=true", r.Verdict.Ops, r.Verdict.Acked), r.Line())
	return r
}

// assertAttacked checks that the run did attack: faults were injected on
// schedule, instances failed over, and calls kept succeeding throughout.
func assertAttacked(t *testing.T, r *Report, minKills, minAcked int) {
	t.Helper()
	assert.GreaterOrEqual(t, r.Kills, minKills, "SIGKILLs injected")
	assert.Equal(t, r.Kills, r.Recovery.N, "every kill was followed by calls on every instance")
	assert.Positive(t, r.Takeovers, "nodes took over the instances of killed nodes")
	assert.GreaterOrEqual(t, r.Verdict.Acked, minAcked, "acknowledged updates")
	assert.Positive(t, r.Verdict.Reads, "reads")
	assert.Equal(t, r.Config.Instances, r.Verdict.Instances)
	// Calls were made all along, not only between faults: some completed
	// in each second of the run. Seconds near a SIGSTOP are exempt: every
	// client calls one instance at a time, so each one ends up waiting on
	// an instance of the frozen node until its lease runs out.
	busy := map[int]bool{}
	for _, op := range r.History.Ops {
		if op.OK && !op.Final {
			busy[int(op.Return/time.Second)] = true
		}
	}
	frozen := map[int]bool{}
	for _, f := range r.History.Faults {
		if f.Kind == FaultStop {
			for s := int(f.At / time.Second); s <= int((f.Until+r.Config.Lease)/time.Second)+1; s++ {
				frozen[s] = true
			}
		}
	}
	for s := range int(r.Config.Duration / time.Second) {
		assert.True(t, busy[s] || frozen[s], "no call succeeded in second %d of the run", s)
	}
}

// TestTorturePostgres is the product's promise under attack: three nodes
// on PostgreSQL, a SIGKILL every 2 s and a SIGSTOP past the lease every
// 6 s, for 20 s.
func TestTorturePostgres(t *testing.T) {
	cfg := testConfig(t, pgtest.DSN(t), 3, 64, 20*time.Second)
	cfg.StopEvery = 6 * time.Second
	r := run(t, cfg)
	assertAttacked(t, r, 7, 5000)
	assert.GreaterOrEqual(t, r.Stops, 2, "SIGSTOPs injected")
}

// TestTortureEmbedded is the same on the embedded store shared by two
// nodes, shorter, and under mutual TLS: the nodes prove their killed peers
// dead through TLS handshakes. A kill is skipped while the other node is
// still coming back (one must keep serving), and a restart on the embedded
// store under load can take two seconds: expect fewer kills than ticks.
func TestTortureEmbedded(t *testing.T) {
	cfg := testConfig(t, "", 2, 32, 10*time.Second)
	cfg.TLS = true
	r := run(t, cfg)
	assertAttacked(t, r, 2, 2000)
	assert.Contains(t, r.Store, "embedded store")
	var sum strings.Builder
	require.NoError(t, r.WriteSummary(&sum))
	assert.Contains(t, sum.String(), "under mutual TLS")
}

// TestRunCanceled: a run whose context ends stops at once, with its nodes
// killed (TestMain would see their goroutines otherwise).
func TestRunCanceled(t *testing.T) {
	cfg := testConfig(t, "", 2, 4, time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	r, err := Run(ctx, cfg)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Nil(t, r)
	assert.Less(t, time.Since(start), 30*time.Second)
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Binary = "/bin/containerd-lite"
	require.NoError(t, ok.Validate())

	for name, tc := range map[string]struct {
		edit func(*Config)
		msg  string
	}{
		"no binary":            {func(c *Config) { c.Binary = "" }, "Binary (--bin)"},
		"no nodes":             {func(c *Config) { c.Nodes = 0 }, "Nodes (--nodes)"},
		"no clients":           {func(c *Config) { c.Clients = 0 }, "Clients (--clients)"},
		"no instances":         {func(c *Config) { c.Instances = 0 }, "Instances (--instances)"},
		"no duration":          {func(c *Config) { c.Duration = 0 }, "Duration (--duration)"},
		"read fraction":        {func(c *Config) { c.ReadFraction = 1.5 }, "ReadFraction"},
		"call timeout":         {func(c *Config) { c.CallTimeout = 0 }, "CallTimeout"},
		"negative period":      {func(c *Config) { c.KillEvery = -time.Second }, "must not be negative"},
		"heartbeat over lease": {func(c *Config) { c.Heartbeat = c.Lease }, "heartbeat at most half the lease"},
		"pg restart, embedded": {func(c *Config) { c.PGRestartCmd = "true" }, "needs a PostgreSQL store"},
		"pg restart too late": {func(c *Config) {
			c.Store, c.PGRestartCmd, c.PGRestartAt = "postgres://x/y", "true", c.Duration
		}, "past the end of the run"},
		"other URL":     {func(c *Config) { c.Store = "mysql://x/y" }, "expected a postgres:// URL"},
		"check timeout": {func(c *Config) { c.CheckTimeout = 0 }, "CheckTimeout"},
	} {
		t.Run(name, func(t *testing.T) {
			c := *ok
			tc.edit(&c)
			assert.ErrorContains(t, c.Validate(), tc.msg)
		})
	}
}

// testLogger logs the run's progress into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
