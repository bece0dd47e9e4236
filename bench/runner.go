package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// callFunc performs one call as caller w (0 ≤ w < c). Each caller runs in
// its own goroutine, so a callFunc may keep per-caller state indexed by w
// without locking.
type callFunc func(ctx context.Context, w int) error

// errExhausted tells the runner that a caller has no more work (a
// reactivation cell ran out of passivated instances). The caller stops; the
// window ends when every caller has stopped.
var errExhausted = errors.New("bench: workload exhausted")

// loop is one cell's closed loop.
type loop struct {
	c        int
	warmup   time.Duration
	duration time.Duration
	// warm, if set, is called instead of call during the warm-up, and its
	// calls are never measured. Default call.
	warm    callFunc
	call    callFunc
	profile string // CPU profile file for the window; "" for none
}

// Cell is the measurement of one workload at one concurrency.
type Cell struct {
	Workload Workload
	C        int
	// Calls completed inside the window, and the window's length.
	Calls   int64
	Elapsed time.Duration
	// CallsPerSec is Calls / Elapsed.
	CallsPerSec float64
	P50, P99    time.Duration
	Max         time.Duration
	// AllocsPerCall and BytesPerCall are heap allocations in this process
	// over the window per call: client and server side together.
	AllocsPerCall float64
	BytesPerCall  float64
	// CPUPerCall is this process's user+system CPU time over the window
	// per call (zero where the platform does not report it).
	CPUPerCall time.Duration
	// HostBusy is the fraction of the host's CPU time (all CPUs, all
	// processes: PostgreSQL, and anything else running) that was busy
	// during the window; negative when unknown. Near 1, the cell was
	// bound by CPU.
	HostBusy float64
	// Ratio is CallsPerSec over the baseline cell's (same concurrency);
	// zero when there is none.
	Ratio    float64
	Baseline Workload
	// Rounds is the number of times the cell was measured; the figures
	// are those of the round with the median calls/s. Spread is the range
	// of calls/s over the rounds, relative to the median.
	Rounds int
	Spread float64
}

const (
	phaseWarm int32 = iota
	phaseMeasure
	phaseDone
)

// histogram range: 1 µs to 1 min, 3 significant digits.
const (
	histMin = int64(time.Microsecond)
	histMax = int64(time.Minute)
)

// wake is why a wait ended.
type wake int

const (
	wakeTimer    wake = iota // the time was up
	wakeFailed               // a call failed
	wakeCanceled             // the run's context ended
	wakeStopped              // every caller stopped: out of work
)

// wait waits for d or for something that ends the loop early.
func wait(ctx context.Context, d time.Duration, failed, stopped <-chan struct{}) wake {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return wakeTimer
	case <-failed:
		return wakeFailed
	case <-ctx.Done():
		return wakeCanceled
	case <-stopped:
		select {
		case <-failed: // the last caller stopped on an error
			return wakeFailed
		default:
			return wakeStopped
		}
	}
}

// tally counts the successful calls of a whole loop, warm-up and calls
// finishing after the window included, for checks against the node's
// counters.
type tally struct {
	all  int64 // every successful call
	main int64 // those made with loop.call
}

// run runs the loop and returns its measurement (Workload unset).
func (l loop) run(ctx context.Context) (Cell, tally, error) {
	separateWarm := l.warm != nil
	if !separateWarm {
		l.warm = l.call
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		phase   atomic.Int32
		wg      sync.WaitGroup
		errOnce sync.Once
		callErr error
		failed  = make(chan struct{})
		stopped = make(chan struct{})
		hists   = make([]*hdrhistogram.Histogram, l.c)
		counts  = make([]int64, l.c)
		tallies = make([]tally, l.c)
	)
	for w := range l.c {
		hists[w] = hdrhistogram.New(histMin, histMax, 3)
	}
	runtime.GC()

	for w := range l.c {
		wg.Go(func() {
			h := hists[w]
			var (
				n int64
				t tally
			)
			defer func() { counts[w], tallies[w] = n, t }()
			for {
				p := phase.Load()
				if p == phaseDone {
					return
				}
				f := l.call
				if p == phaseWarm {
					f = l.warm
				}
				start := time.Now()
				err := f(ctx, w)
				d := time.Since(start)
				if err != nil {
					if !errors.Is(err, errExhausted) && ctx.Err() == nil {
						errOnce.Do(func() {
							callErr = fmt.Errorf("caller %d: %w", w, err)
							close(failed)
						})
					}
					return
				}
				t.all++
				if !(p == phaseWarm && separateWarm) {
					t.main++
				}
				// Count the calls that complete inside the window, except
				// those of a separate warm-up function.
				if phase.Load() == phaseMeasure && !(p == phaseWarm && separateWarm) {
					_ = h.RecordValue(min(max(int64(d), histMin), histMax))
					n++
				}
			}
		})
	}
	go func() { wg.Wait(); close(stopped) }()
	// finish stops the callers and waits for them. Calls in flight are
	// left to complete (and be tallied), unless something went wrong.
	finish := func(abort bool) {
		phase.Store(phaseDone)
		if abort {
			cancel()
		}
		<-stopped
	}
	explain := func(why wake, when string) error {
		switch why {
		case wakeFailed:
			return fmt.Errorf("a call failed %s: %w", when, callErr)
		case wakeCanceled:
			return ctx.Err()
		default:
			return fmt.Errorf("every caller ran out of work %s", when)
		}
	}

	if why := wait(ctx, l.warmup, failed, stopped); why != wakeTimer {
		finish(true)
		return Cell{}, tally{}, explain(why, "during the warm-up")
	}
	var prof *os.File
	if l.profile != "" {
		var err error
		if prof, err = os.Create(l.profile); err == nil {
			if err = pprof.StartCPUProfile(prof); err != nil {
				prof.Close()
			}
		}
		if err != nil {
			finish(true)
			return Cell{}, tally{}, err
		}
	}

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime()
	hb0, ht0, hostOK := hostCPU()
	t0 := time.Now()
	phase.Store(phaseMeasure)
	why := wait(ctx, l.duration, failed, stopped)
	phase.Store(phaseDone)
	elapsed := time.Since(t0)
	cpu1 := cpuTime()
	hb1, ht1, hostOK1 := hostCPU()
	runtime.ReadMemStats(&m1)
	var profErr error
	if prof != nil {
		pprof.StopCPUProfile()
		profErr = prof.Close()
	}
	abort := why == wakeFailed || why == wakeCanceled
	finish(abort)
	switch {
	case abort:
		return Cell{}, tally{}, explain(why, "in the window")
	case callErr != nil: // a call in flight at the end of the window
		return Cell{}, tally{}, explain(wakeFailed, "at the end of the window")
	case profErr != nil:
		return Cell{}, tally{}, profErr
	}

	all := hdrhistogram.New(histMin, histMax, 3)
	var (
		calls int64
		total tally
	)
	for w := range l.c {
		all.Merge(hists[w])
		calls += counts[w]
		total.all += tallies[w].all
		total.main += tallies[w].main
	}
	if calls == 0 {
		return Cell{}, total, fmt.Errorf("no call completed in the %v window", elapsed.Round(time.Millisecond))
	}
	cell := Cell{
		C: l.c, Calls: calls, Elapsed: elapsed,
		CallsPerSec:   float64(calls) / elapsed.Seconds(),
		P50:           time.Duration(all.ValueAtQuantile(50)),
		P99:           time.Duration(all.ValueAtQuantile(99)),
		Max:           time.Duration(all.Max()),
		AllocsPerCall: float64(m1.Mallocs-m0.Mallocs) / float64(calls),
		BytesPerCall:  float64(m1.TotalAlloc-m0.TotalAlloc) / float64(calls),
	}
	if cpu0 >= 0 && cpu1 >= 0 {
		cell.CPUPerCall = (cpu1 - cpu0) / time.Duration(calls)
	}
	cell.HostBusy = -1
	if hostOK && hostOK1 && ht1 > ht0 {
		cell.HostBusy = float64(hb1-hb0) / float64(ht1-ht0)
	}
	return cell, total, nil
}
