package passivate

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// FlushFunc commits a group of writes together (one round trip, one
// transaction, one fsync) and returns one result per write, in order: nil
// when it is durable, ErrFenced when its condition failed, or another error
// when the group as a whole failed (its outcome is then unknown).
type FlushFunc func(ctx context.Context, group []*Write) []error

// GroupConfig tunes a GroupCommitter.
type GroupConfig struct {
	// MaxGroup bounds the writes committed together. Default 64.
	MaxGroup int
	// Flushers is the number of groups in flight at once. Default 2. A few
	// are enough: while one group commits the next one fills up, and many
	// concurrent groups only queue up in the database.
	Flushers int
	// Timeout bounds one flush. Default 10s.
	Timeout time.Duration
}

// GroupCommitter turns concurrent Saves into grouped commits. Writes that
// are ready at the same time share one flush, while each caller still waits
// for, and gets, the outcome of its own write. There is no timer: a flusher
// takes whatever has queued up while the previous group was committing.
type GroupCommitter struct {
	flush   FlushFunc
	cfg     GroupConfig
	queue   chan *pendingWrite
	stop    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
	mu      sync.RWMutex // guards closed against Saves racing Close
	closed  bool
	baseCtx context.Context
	cancel  context.CancelFunc

	groups, writes atomic.Int64 // flushed so far
}

// GroupStats are a GroupCommitter's counters.
type GroupStats struct {
	Groups int64 // flushes
	Writes int64 // writes flushed; Writes/Groups is the mean group size
}

// Stats returns the committer's counters.
func (g *GroupCommitter) Stats() GroupStats {
	return GroupStats{Groups: g.groups.Load(), Writes: g.writes.Load()}
}

type pendingWrite struct {
	w    *Write
	done chan error
}

// NewGroupCommitter starts the flushers. Close stops them.
func NewGroupCommitter(cfg GroupConfig, flush FlushFunc) *GroupCommitter {
	if cfg.MaxGroup <= 0 {
		cfg.MaxGroup = 64
	}
	if cfg.Flushers <= 0 {
		cfg.Flushers = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &GroupCommitter{
		flush: flush, cfg: cfg,
		queue: make(chan *pendingWrite, 4*cfg.MaxGroup),
		stop:  make(chan struct{}), baseCtx: ctx, cancel: cancel,
	}
	for range cfg.Flushers {
		g.wg.Add(1)
		go g.run()
	}
	return g
}

var donePool = sync.Pool{New: func() any { return make(chan error, 1) }}

// Save queues w for the next group and waits for its outcome. If ctx ends
// first, Save returns ctx.Err() and the write may or may not be committed.
func (g *GroupCommitter) Save(ctx context.Context, w *Write) error {
	p := &pendingWrite{w: w, done: donePool.Get().(chan error)}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		donePool.Put(p.done)
		return ErrClosed
	}
	select {
	case g.queue <- p:
		g.mu.RUnlock()
	case <-ctx.Done():
		g.mu.RUnlock()
		donePool.Put(p.done)
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		donePool.Put(p.done)
		return err
	case <-ctx.Done():
		// The flusher will still send on done (buffered); drop the channel.
		return ctx.Err()
	}
}

func (g *GroupCommitter) run() {
	defer g.wg.Done()
	group := make([]*pendingWrite, 0, g.cfg.MaxGroup)
	writes := make([]*Write, 0, g.cfg.MaxGroup)
	for {
		group, writes = group[:0], writes[:0]
		select {
		case p := <-g.queue:
			group = append(group, p)
		case <-g.stop:
			g.drain()
			return
		}
		select {
		case <-g.stop:
			// Closed while this write was taken: no new group after Close.
			group[0].done <- ErrClosed
			g.drain()
			return
		default:
		}
	fill:
		for len(group) < g.cfg.MaxGroup {
			select {
			case p := <-g.queue:
				group = append(group, p)
			default:
				break fill
			}
		}
		for _, p := range group {
			writes = append(writes, p.w)
		}
		g.groups.Add(1)
		g.writes.Add(int64(len(writes)))
		ctx, cancel := context.WithTimeout(g.baseCtx, g.cfg.Timeout)
		results := g.flush(ctx, writes)
		cancel()
		for i, p := range group {
			var err error
			if i < len(results) {
				err = results[i]
			} else {
				err = ErrClosed
			}
			p.done <- err
		}
	}
}

// drain fails the writes still queued when the committer stops.
func (g *GroupCommitter) drain() {
	for {
		select {
		case p := <-g.queue:
			p.done <- ErrClosed
		default:
			return
		}
	}
}

// Close lets the groups in flight finish, fails the writes still queued
// with ErrClosed, and stops the flushers.
func (g *GroupCommitter) Close() {
	g.closing.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.stop)
		g.wg.Wait()
		g.cancel()
		g.drain()
	})
}
