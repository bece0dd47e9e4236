package pgstore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
)

const (
	benchStateSize = 1 << 10
	benchCallers   = 64
)

// rawRate is the raw ceiling measured by BenchmarkSave/raw in this run,
// which the grouped benchmarks report their ratio against.
var rawRate atomic.Uint64

// benchSetup opens a store on a fresh schema and activates one instance
// per caller.
func benchSetup(b *testing.B, opts *pgstore.Options) (*pgstore.Store, string, []*passivate.Activation, []passivate.Key) {
	b.Helper()
	s, dsn := newStore(b, opts)
	ctx := ctxT(b, time.Minute)
	node := passivate.Node{Incarnation: "inc-bench", Addr: "127.0.0.1:5"}
	require.NoError(b, s.Register(ctx, node, time.Hour))
	acts := make([]*passivate.Activation, benchCallers)
	keys := make([]passivate.Key, benchCallers)
	for i := range acts {
		keys[i] = passivate.Key{Component: "bench", ID: fmt.Sprintf("k%03d", i)}
		a, err := s.Activate(ctx, keys[i], node.Incarnation)
		require.NoError(b, err)
		acts[i] = a
	}
	return s, dsn, acts, keys
}

// runCallers runs op from benchCallers goroutines, each on its own
// instance, b.N times in all.
func runCallers(b *testing.B, op func(ctx context.Context, caller int, version int64) error) {
	ctx := context.Background()
	var next atomic.Int32
	b.SetParallelism((benchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		caller := int(next.Add(1)) - 1
		if caller >= benchCallers {
			b.Errorf("more goroutines than instances")
			return
		}
		for v := int64(0); pb.Next(); v++ {
			if err := op(ctx, caller, v); err != nil {
				b.Errorf("caller %d version %d: %v", caller, v, err)
				return
			}
		}
	})
	b.StopTimer()
}

func state() []byte {
	s := make([]byte, benchStateSize)
	_, _ = rand.Read(s)
	return s
}

// BenchmarkSave measures 1 KiB-state saves from 64 concurrent callers:
// "raw" is one conditional UPDATE per save, from 64 goroutines through a
// pool of 64 connections, with no grouping (the raw ceiling); "group" is
// Store.Save with group commit, with 2, 3 and 4 flushers.
func BenchmarkSave(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		_, dsn, acts, keys := benchSetup(b, nil)
		cfg, err := pgxpool.ParseConfig(dsn)
		require.NoError(b, err)
		cfg.MaxConns = benchCallers
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		require.NoError(b, err)
		defer pool.Close()
		st := state()
		const rawSQL = `UPDATE cl_instances
SET state = $5, state_version = $6, completions = $7, version = version + 1, updated_at = now()
WHERE component = $1 AND id = $2 AND owner = $3 AND epoch = $4 AND version = $8`
		runCallers(b, func(ctx context.Context, i int, v int64) error {
			a := acts[i]
			tag, err := pool.Exec(ctx, rawSQL, keys[i].Component, keys[i].ID, a.Owner.Node, a.Owner.Epoch, st, 1, []byte(nil), v)
			if err == nil && tag.RowsAffected() != 1 {
				err = passivate.ErrFenced
			}
			return err
		})
		rate := float64(b.N) / b.Elapsed().Seconds()
		rawRate.Store(uint64(rate))
		b.ReportMetric(rate, "saves/s")
	})
	for _, flushers := range []int{2, 3, 4} {
		b.Run(fmt.Sprintf("group/flushers=%d", flushers), func(b *testing.B) {
			s, _, acts, keys := benchSetup(b, &pgstore.Options{Flushers: flushers, MaxConns: int32(flushers + 4)})
			st := state()
			runCallers(b, func(ctx context.Context, i int, v int64) error {
				return s.Save(ctx, &passivate.Write{Key: keys[i], Owner: acts[i].Owner, Version: v, State: st, StateVersion: 1})
			})
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "saves/s")
			if raw := rawRate.Load(); raw > 0 {
				b.ReportMetric(rate/float64(raw), "x-raw")
			}
		})
	}
}

// BenchmarkActivate measures claiming an existing, passivated instance
// with 1 KiB of state: one caller, and its latency percentiles.
func BenchmarkActivate(b *testing.B) {
	s, _ := newStore(b, nil)
	ctx := ctxT(b, 10*time.Minute)
	node := passivate.Node{Incarnation: "inc-bench", Addr: "127.0.0.1:5"}
	require.NoError(b, s.Register(ctx, node, time.Hour))
	k := passivate.Key{Component: "bench", ID: "passivated"}
	a, err := s.Activate(ctx, k, node.Incarnation)
	require.NoError(b, err)
	require.NoError(b, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: state(), StateVersion: 1}))
	require.NoError(b, s.Release(ctx, k, a.Owner))

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		a, err := s.Activate(ctx, k, node.Incarnation)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if len(a.State) != benchStateSize {
			b.Fatalf("state of %d bytes", len(a.State))
		}
		if err := s.Release(ctx, k, a.Owner); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
