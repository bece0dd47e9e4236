package passivate_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/passivate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestGroupCommitGroups: writes that queue up while a flush is running are
// committed together, and every caller gets its own write's result.
func TestGroupCommitGroups(t *testing.T) {
	var (
		mu     sync.Mutex
		groups []int
		gate   = make(chan struct{})
	)
	g := passivate.NewGroupCommitter(passivate.GroupConfig{MaxGroup: 64, Flushers: 1}, func(ctx context.Context, ws []*passivate.Write) []error {
		<-gate
		mu.Lock()
		groups = append(groups, len(ws))
		mu.Unlock()
		errs := make([]error, len(ws))
		for i, w := range ws {
			if w.Version%2 == 1 {
				errs[i] = passivate.ErrFenced
			}
		}
		return errs
	})
	defer g.Close()
	const writers = 40
	var wg sync.WaitGroup
	results := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			results[i] = g.Save(t.Context(), &passivate.Write{Version: int64(i)})
		})
	}
	// Let the first flush start with one write while the rest queue up.
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	for i, err := range results {
		if i%2 == 1 {
			assert.ErrorIs(t, err, passivate.ErrFenced, "write %d", i)
		} else {
			assert.NoError(t, err, "write %d", i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range groups {
		total += n
	}
	assert.Equal(t, writers, total)
	assert.Less(t, len(groups), writers/2, "writes were grouped: %v", groups)
}

func TestGroupCommitMaxGroup(t *testing.T) {
	var biggest atomic.Int32
	g := passivate.NewGroupCommitter(passivate.GroupConfig{MaxGroup: 4, Flushers: 1}, func(ctx context.Context, ws []*passivate.Write) []error {
		for {
			cur := biggest.Load()
			if int32(len(ws)) <= cur || biggest.CompareAndSwap(cur, int32(len(ws))) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		return make([]error, len(ws))
	})
	defer g.Close()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() { assert.NoError(t, g.Save(t.Context(), &passivate.Write{})) })
	}
	wg.Wait()
	assert.LessOrEqual(t, biggest.Load(), int32(4))
}

func TestGroupCommitFailureFailsGroup(t *testing.T) {
	boom := errors.New("connection lost during commit")
	g := passivate.NewGroupCommitter(passivate.GroupConfig{}, func(ctx context.Context, ws []*passivate.Write) []error {
		errs := make([]error, len(ws))
		for i := range errs {
			errs[i] = boom
		}
		return errs
	})
	defer g.Close()
	assert.ErrorIs(t, g.Save(t.Context(), &passivate.Write{}), boom)
}

func TestGroupCommitCallerGivesUp(t *testing.T) {
	release := make(chan struct{})
	g := passivate.NewGroupCommitter(passivate.GroupConfig{Flushers: 1}, func(ctx context.Context, ws []*passivate.Write) []error {
		<-release
		return make([]error, len(ws))
	})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := g.Save(ctx, &passivate.Write{})
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the caller's deadline bounds its wait; the outcome is unknown")
	close(release)
	g.Close()
}

func TestGroupCommitClose(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	g := passivate.NewGroupCommitter(passivate.GroupConfig{Flushers: 1, MaxGroup: 1}, func(ctx context.Context, ws []*passivate.Write) []error {
		once.Do(func() { close(started) })
		<-release
		return make([]error, len(ws))
	})
	inflight := make(chan error, 1)
	go func() { inflight <- g.Save(context.Background(), &passivate.Write{}) }()
	<-started
	queued := make(chan error, 1)
	go func() { queued <- g.Save(context.Background(), &passivate.Write{}) }()
	time.Sleep(20 * time.Millisecond)
	closed := make(chan struct{})
	go func() { g.Close(); close(closed) }()
	time.Sleep(20 * time.Millisecond)
	close(release)
	<-closed
	require.NoError(t, <-inflight, "the group in flight finishes")
	assert.ErrorIs(t, <-queued, passivate.ErrClosed, "queued writes fail")
	assert.ErrorIs(t, g.Save(context.Background(), &passivate.Write{}), passivate.ErrClosed)
	g.Close() // idempotent
}
