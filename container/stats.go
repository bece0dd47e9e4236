package container

import (
	"sync/atomic"

	"github.com/containerd-lite/containerd-lite/registry"
)

type counters struct {
	calls        atomic.Int64
	failed       atomic.Int64
	writes       atomic.Int64
	unchanged    atomic.Int64
	replayed     atomic.Int64
	stale        atomic.Int64
	fenced       atomic.Int64
	panics       atomic.Int64
	activations  atomic.Int64
	passivations atomic.Int64
	removals     atomic.Int64
	stateBytes   atomic.Int64 // sum over observed calls
	stateObs     atomic.Int64
	stateMax     atomic.Int64
}

func (s *counters) count(err error) {
	s.calls.Add(1)
	if err != nil {
		s.failed.Add(1)
	}
}

func (s *counters) observeState(n int) {
	s.stateBytes.Add(int64(n))
	s.stateObs.Add(1)
	for {
		cur := s.stateMax.Load()
		if int64(n) <= cur || s.stateMax.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// Stats are cumulative counters of a container since it started.
type Stats struct {
	Calls        int64 // calls invoked
	Failed       int64 // calls that returned an error
	Writes       int64 // state writes committed
	Unchanged    int64 // successful calls that left the state unchanged (no write)
	Replayed     int64 // retried calls answered from a completion record
	Stale        int64 // stale copies of acknowledged calls, refused
	Fenced       int64 // writes refused because another node took over
	Panics       int64 // methods that panicked
	Activations  int64
	Passivations int64
	Removals     int64
	Active       int   // instances in memory now
	AvgState     int64 // mean encoded state size after successful calls, bytes
	MaxState     int64 // largest encoded state seen, bytes
}

// Stats returns the container's counters.
func (c *Container) Stats() Stats {
	s := &c.stats
	st := Stats{
		Calls: s.calls.Load(), Failed: s.failed.Load(), Writes: s.writes.Load(),
		Unchanged: s.unchanged.Load(), Replayed: s.replayed.Load(), Stale: s.stale.Load(), Fenced: s.fenced.Load(),
		Panics: s.panics.Load(), Activations: s.activations.Load(), Passivations: s.passivations.Load(),
		Removals: s.removals.Load(), Active: c.table.len(), MaxState: s.stateMax.Load(),
	}
	if n := s.stateObs.Load(); n > 0 {
		st.AvgState = s.stateBytes.Load() / n
	}
	return st
}

var _ registry.Caller = (*Container)(nil)
