package torture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

// report builds the report of a synthetic history, as Run does.
func report(t *testing.T, b *hist) *Report {
	t.Helper()
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	r := &Report{Config: *cfg, RunID: "test", Store: "nowhere", History: &b.h}
	r.Verdict = Check(&b.h, 10*time.Second)
	r.summarize()
	return r
}

func summary(t *testing.T, r *Report) []string {
	t.Helper()
	var sb strings.Builder
	require.NoError(t, r.WriteSummary(&sb))
	return strings.Split(strings.TrimSuffix(sb.String(), "\n"), "\n")
}

func TestReportClean(t *testing.T) {
	b := (&hist{}).add(0, "a", 0, 10, 1).get(1, "a", 1000, 1010, 1).add(1, "a", 3000, 3004, 2).
		failed(2, "a", Get, 1500, 1600, registry.CodeUnavailable).final("a", 4000, 2)
	b.h.Faults = []Fault{{Kind: FaultKill, Node: 0, At: ms(900), Until: ms(1300)}}
	r := report(t, b)
	require.NoError(t, r.Err())
	assert.Equal(t, "torture: ops=4 acked=2 lost=0 duplicated=0 linearizable=true", r.Line())
	lines := summary(t, r)
	assert.Equal(t, r.Line(), lines[len(lines)-1])
	assert.Contains(t, strings.Join(lines, "\n"), "unavailable 1")
	assert.Equal(t, 1, r.Kills)
	assert.Equal(t, 110*time.Millisecond, r.Recovery.Max, "from the kill to the next answer")
	assert.Equal(t, 400*time.Millisecond, r.Downtime.Max)
	assert.Equal(t, 3004*time.Millisecond, r.Elapsed, "to the last client call's return")
}

func TestReportViolation(t *testing.T) {
	// A stale read and a lost update on a, nothing wrong on b.
	b := (&hist{}).add(0, "a", 0, 10, 1).get(1, "a", 20, 30, 0).add(0, "a", 40, 50, 2).final("a", 100, 1)
	b.add(0, "b", 0, 10, 1).final("b", 100, 1)
	r := report(t, b)
	err := r.Err()
	require.Error(t, err)
	assert.ErrorContains(t, err, "1 acknowledged updates lost")
	assert.ErrorContains(t, err, "not linearizable (instances a)")
	assert.Equal(t, "torture: ops=4 acked=3 lost=1 duplicated=0 linearizable=false", r.Line())

	r.Files, r.FileErrors = r.writeEvidence(nil)
	assert.Empty(t, r.FileErrors)
	require.Len(t, r.Files, 2)
	for _, f := range r.Files {
		assert.FileExists(t, f)
		assert.Equal(t, r.Config.OutDir, filepath.Dir(f))
	}
	hist, err := os.ReadFile(filepath.Join(r.Config.OutDir, "torture-test-history.json"))
	require.NoError(t, err)
	assert.Contains(t, string(hist), `"instance": "a"`)
	assert.NotContains(t, string(hist), `"instance": "b"`)

	lines := summary(t, r)
	assert.Equal(t, r.Line(), lines[len(lines)-1])
	out := strings.Join(lines, "\n")
	assert.Contains(t, out, "VIOLATION: on a")
	assert.Contains(t, out, "wrote:     "+r.Files[0])
}

func TestReportInconclusiveIsNotLinearizable(t *testing.T) {
	b := &hist{}
	for i := range 60 {
		b.failed(i, "a", Add, i, 1000, registry.CodeUnavailable)
	}
	b.final("a", 2000, 61)
	r := &Report{Config: *DefaultConfig(), History: &b.h, Verdict: Check(&b.h, 100*time.Millisecond)}
	r.summarize()
	require.Equal(t, Inconclusive, r.Verdict.Result)
	assert.False(t, r.Linearizable())
	assert.ErrorIs(t, r.Err(), errInconclusive)
	assert.True(t, strings.HasSuffix(r.Line(), "linearizable=false"))
	assert.Contains(t, strings.Join(summary(t, r), "\n"), "VIOLATION: the check was inconclusive")
}
