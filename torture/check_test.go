package torture

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

// hist builds synthetic histories; times are in milliseconds.
type hist struct{ h History }

func ms(t int) time.Duration { return time.Duration(t) * time.Millisecond }

func (b *hist) op(client int, inst string, kind OpKind, call, ret, value int) *hist {
	b.h.Ops = append(b.h.Ops, Op{Client: client, Instance: inst, Kind: kind, Call: ms(call), Return: ms(ret), OK: true, Value: value})
	return b
}

func (b *hist) add(client int, inst string, call, ret, value int) *hist {
	return b.op(client, inst, Add, call, ret, value)
}

func (b *hist) get(client int, inst string, call, ret, value int) *hist {
	return b.op(client, inst, Get, call, ret, value)
}

// failed records a failed call with the given code.
func (b *hist) failed(client int, inst string, kind OpKind, call, ret int, code registry.Code) *hist {
	b.h.Ops = append(b.h.Ops, Op{Client: client, Instance: inst, Kind: kind, Call: ms(call), Return: ms(ret), Code: code, Err: string(code) + ": gave up"})
	return b
}

func (b *hist) final(inst string, call, value int) *hist {
	b.h.Ops = append(b.h.Ops, Op{Client: 99, Instance: inst, Kind: Get, Final: true, Call: ms(call), Return: ms(call + 1), OK: true, Value: value})
	return b
}

func check(t *testing.T, b *hist) *Verdict {
	t.Helper()
	return Check(&b.h, 10*time.Second)
}

func TestCheckCleanHistory(t *testing.T) {
	b := &hist{}
	// Instance a: three clients, overlapping calls, reads in between.
	b.add(0, "a", 0, 10, 1).
		add(1, "a", 5, 20, 3). // concurrent with the next: linearized after it
		add(2, "a", 6, 15, 2).
		get(0, "a", 11, 12, 2). // sees client 2's update, not yet client 1's
		get(2, "a", 16, 30, 3).
		add(0, "a", 25, 26, 4).
		final("a", 100, 4)
	// Instance b: its own counter, in the same time span.
	b.add(3, "b", 0, 50, 1).get(4, "b", 1, 2, 0).get(5, "b", 3, 60, 1).final("b", 100, 1)
	v := check(t, b)
	assert.Equal(t, Linearizable, v.Result)
	assert.True(t, v.OK())
	assert.Equal(t, 2, v.Instances)
	assert.Equal(t, 9, v.Ops)
	assert.Equal(t, 5, v.Acked)
	assert.Equal(t, 4, v.Reads)
	assert.Zero(t, v.Lost)
	assert.Zero(t, v.Duplicated)
	assert.Empty(t, v.Bad)
	assert.Empty(t, v.Unread)
}

func TestCheckLostUpdate(t *testing.T) {
	t.Run("rolled back", func(t *testing.T) {
		// An acknowledged update vanished: the final value is below it.
		b := (&hist{}).add(0, "a", 0, 10, 1).add(1, "a", 20, 30, 2).final("a", 100, 1)
		v := check(t, b)
		assert.Equal(t, NotLinearizable, v.Result)
		assert.Equal(t, 1, v.Lost)
		assert.Zero(t, v.Duplicated)
		assert.Equal(t, []string{"a"}, v.Bad)
		assert.False(t, v.OK())
	})
	t.Run("overwritten", func(t *testing.T) {
		// Two concurrent updates both acknowledged with the same value:
		// one overwrote the other (two owners at once, say).
		b := (&hist{}).add(0, "a", 0, 10, 1).add(1, "a", 2, 12, 1).final("a", 100, 1)
		v := check(t, b)
		assert.Equal(t, NotLinearizable, v.Result)
		assert.Equal(t, 1, v.Lost)
		assert.Equal(t, []string{"a"}, v.Bad)
	})
}

func TestCheckDuplicatedUpdate(t *testing.T) {
	// Two updates, each applied once, but the counter reached 3: one took
	// effect twice (a retry applied again).
	b := (&hist{}).add(0, "a", 0, 10, 1).add(1, "a", 20, 30, 3).final("a", 100, 3)
	b.add(0, "b", 0, 10, 1).final("b", 100, 1) // a clean instance beside it
	v := check(t, b)
	assert.Equal(t, NotLinearizable, v.Result)
	assert.Zero(t, v.Lost)
	assert.Equal(t, 1, v.Duplicated)
	assert.Equal(t, []string{"a"}, v.Bad)
	assert.False(t, v.OK())
}

func TestCheckStaleRead(t *testing.T) {
	// A read that started after an update was acknowledged misses it (a
	// zombie answering from memory): the counts cannot see it, the
	// linearizability checker does.
	b := (&hist{}).add(0, "a", 0, 10, 1).get(1, "a", 20, 30, 0).add(0, "a", 40, 50, 2).final("a", 100, 2)
	v := check(t, b)
	assert.Equal(t, NotLinearizable, v.Result)
	assert.Zero(t, v.Lost)
	assert.Zero(t, v.Duplicated)
	assert.Equal(t, []string{"a"}, v.Bad)
	assert.False(t, v.OK())
}

func TestCheckUnknownOutcome(t *testing.T) {
	unknown := func() *hist {
		return (&hist{}).add(0, "a", 0, 10, 1).failed(1, "a", Add, 20, 40, registry.CodeUnavailable)
	}
	t.Run("not applied", func(t *testing.T) {
		v := check(t, unknown().get(0, "a", 50, 60, 1).final("a", 100, 1))
		assert.Equal(t, Linearizable, v.Result)
		assert.True(t, v.OK())
		assert.Equal(t, 1, v.Unknown)
	})
	t.Run("applied", func(t *testing.T) {
		v := check(t, unknown().get(0, "a", 50, 60, 2).final("a", 100, 2))
		assert.Equal(t, Linearizable, v.Result)
		assert.True(t, v.OK())
	})
	t.Run("applied after its call failed", func(t *testing.T) {
		// Still in flight on some node when the client gave up: it shows
		// up later, which is allowed.
		v := check(t, unknown().get(0, "a", 50, 60, 1).get(0, "a", 70, 80, 2).final("a", 100, 2))
		assert.Equal(t, Linearizable, v.Result)
		assert.True(t, v.OK())
	})
	t.Run("applied after the final read", func(t *testing.T) {
		v := check(t, unknown().final("a", 100, 1))
		assert.Equal(t, Linearizable, v.Result)
		assert.True(t, v.OK())
	})
	t.Run("not before its invocation", func(t *testing.T) {
		b := (&hist{}).get(0, "a", 0, 10, 1).failed(1, "a", Add, 20, 40, registry.CodeUnavailable).final("a", 100, 1)
		v := check(t, b)
		assert.Equal(t, NotLinearizable, v.Result)
	})
	t.Run("not twice", func(t *testing.T) {
		v := check(t, unknown().final("a", 100, 3))
		assert.Equal(t, NotLinearizable, v.Result)
		assert.Equal(t, 1, v.Duplicated)
	})
	t.Run("failed reads have no effect", func(t *testing.T) {
		b := (&hist{}).add(0, "a", 0, 10, 1).failed(1, "a", Get, 20, 40, registry.CodeDeadlineExceeded).final("a", 100, 1)
		v := check(t, b)
		assert.Equal(t, Linearizable, v.Result)
		assert.Equal(t, 1, v.FailedReads)
		assert.Equal(t, map[registry.Code]int{registry.CodeDeadlineExceeded: 1}, v.Errors)
		assert.True(t, v.OK())
	})
}

func TestCheckManyUnknownOutcomes(t *testing.T) {
	// Hundreds of updates of unknown outcome, all pending to the end of
	// the history, between acknowledged updates and reads that show which
	// took effect: every third one did, just before the next read. A model
	// that decides "applied or not" where it linearizes one would try
	// every subset of those pending; this one is done at once.
	b := &hist{}
	value := 0
	for i := range 300 {
		at := 100 * i
		b.failed(i%7, "a", Add, at, at+50, registry.CodeUnavailable)
		if i%3 == 0 {
			value++
		}
		b.get(7, "a", at+60, at+70, value)
		value++
		b.add(8, "a", at+80, at+90, value)
	}
	b.final("a", 100_000, value)
	start := time.Now()
	v := Check(&b.h, 10*time.Second)
	assert.Equal(t, Linearizable, v.Result)
	assert.True(t, v.OK())
	assert.Equal(t, 300, v.Unknown)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestCheckUnexpectedErrorsAndUnreadInstances(t *testing.T) {
	b := (&hist{}).add(0, "a", 0, 10, 1).failed(1, "a", Add, 20, 30, registry.CodeInternal).final("a", 100, 1)
	b.add(0, "b", 0, 10, 1)
	b.h.Ops = append(b.h.Ops, Op{Client: 99, Instance: "b", Kind: Get, Final: true, Call: ms(100), Return: ms(200), Code: registry.CodeUnavailable})
	v := check(t, b)
	assert.Equal(t, Linearizable, v.Result, "the internal error is taken as an unknown outcome")
	assert.Equal(t, 1, v.Unexpected)
	assert.Equal(t, []string{"b"}, v.Unread)
	assert.False(t, v.OK())
}

func TestCheckInconclusive(t *testing.T) {
	// Sixty updates of unknown outcome, all concurrent, and a final value
	// they cannot reach: the checker tries every subset of them before it
	// can say no, and runs out of time. An inconclusive check never passes.
	b := &hist{}
	for i := range 60 {
		b.failed(i, "a", Add, i, 1000, registry.CodeUnavailable)
	}
	b.final("a", 2000, 61)
	v := Check(&b.h, 200*time.Millisecond)
	assert.Equal(t, Inconclusive, v.Result)
	assert.False(t, v.OK())
}

func TestVisualize(t *testing.T) {
	b := (&hist{}).add(0, "a", 0, 10, 1).get(1, "a", 20, 30, 0).final("a", 100, 1)
	b.add(0, "b", 0, 10, 1).final("b", 100, 1)
	b.h.Faults = []Fault{{Kind: FaultKill, Node: 1, Addr: "127.0.0.1:1", At: ms(15), Until: ms(18)}}
	v := check(t, b)
	require.Equal(t, []string{"a"}, v.Bad)
	path := filepath.Join(t.TempDir(), "v.html")
	require.NoError(t, v.Visualize(path))
	page, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Contains(t, string(page), "get → 0")
	assert.Contains(t, string(page), "kill node 1")
	assert.Contains(t, string(page), "a client 1")
	assert.NotContains(t, string(page), "b client 0", "only the bad instance is shown")

	bad := v.BadHistory()
	assert.Len(t, bad.Ops, 3)
	for _, op := range bad.Ops {
		assert.Equal(t, "a", op.Instance)
	}
}
