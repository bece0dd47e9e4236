package sqlitestore_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
)

// BenchmarkSave saves 1 KiB states from 64 concurrent callers, each on its
// own instance, with group commit (group=64) and without it (group=1).
func BenchmarkSave(b *testing.B) {
	for _, group := range []int{64, 1} {
		b.Run("group="+strconv.Itoa(group), func(b *testing.B) { benchSave(b, group) })
	}
}

func benchSave(b *testing.B, maxGroup int) {
	const callers = 64
	ctx := context.Background()
	s, err := sqlitestore.Open(filepath.Join(b.TempDir(), "bench.db"), &sqlitestore.Options{MaxGroup: maxGroup})
	require.NoError(b, err)
	defer s.Close()
	node := passivate.Node{Incarnation: "bench", Addr: "bench"}
	require.NoError(b, s.Register(ctx, node, time.Hour))

	// RunParallel starts parallelism×GOMAXPROCS goroutines: give each an
	// instance of its own, activated beforehand.
	par := max(1, callers/runtime.GOMAXPROCS(0))
	keys := make([]passivate.Key, par*runtime.GOMAXPROCS(0))
	acts := make([]*passivate.Activation, len(keys))
	for i := range keys {
		keys[i] = passivate.Key{Component: "bench", ID: strconv.Itoa(i)}
		acts[i], err = s.Activate(ctx, keys[i], node.Incarnation)
		require.NoError(b, err)
	}
	state := make([]byte, 1024)
	_, _ = rand.Read(state)
	var next atomic.Int64

	b.SetParallelism(par)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) - 1
		for v := int64(0); pb.Next(); v++ {
			w := &passivate.Write{Key: keys[i], Owner: acts[i].Owner, Version: v, State: state, StateVersion: 1}
			if err := s.Save(ctx, w); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
}
