package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTortureCommand runs a short torture of the real binary, as a user
// would, and checks the shape of its verdict, the last line of stdout. The
// longer runs are in package torture.
func TestTortureCommand(t *testing.T) {
	dir := t.TempDir()
	r := cli(t, "torture", "--nodes=2", "--clients=8", "--instances=4", "--duration=4s",
		"--kill-every=1s", "--quiet", "--out-dir="+dir, "--history="+dir+"/h.json")
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	lines := strings.Split(r.stdout, "\n")
	last := lines[len(lines)-1]
	assert.Regexp(t, regexp.MustCompile(`^torture: ops=[1-9][0-9]* acked=[1-9][0-9]* lost=0 duplicated=0 linearizable=true$`), last)
	assert.Contains(t, r.stdout, "SIGKILL")
	assert.Empty(t, r.stderr, "--quiet logs nothing")
	assert.FileExists(t, dir+"/h.json")
}

func TestTortureCommandUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"torture", "--nodes=0"}, "Nodes (--nodes) must be at least 1"},
		{[]string{"torture", "--read-fraction=2"}, "--read-fraction"},
		{[]string{"torture", "--pg-restart-cmd=true"}, "needs a PostgreSQL store"},
		{[]string{"torture", "--store=mysql://x"}, "expected a postgres:// URL"},
		{[]string{"torture", "extra"}, "torture takes no arguments"},
		{[]string{"torture", "--bogus"}, "flag provided but not defined"},
	} {
		r := cli(t, tc.args...)
		assert.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.msg, tc.args)
		assert.Empty(t, r.stdout, tc.args)
	}
}
