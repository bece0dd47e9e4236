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

// GroupConfig tunes a Batcher or GroupCommitter.
type GroupConfig struct {
	// MaxGroup bounds the requests handled together. Default 64.
	MaxGroup int
	// Flushers is the number of groups in flight at once. Default 2. A few
	// are enough: while one group runs the next one fills up, and many
	// concurrent groups only queue up in the database.
	Flushers int
	// Timeout bounds one group. Default 10s.
	Timeout time.Duration
}

// GroupStats are a batcher's counters.
type GroupStats struct {
	Groups int64 // groups run
	Writes int64 // requests in them; Writes/Groups is the mean group size
}

// Batcher turns concurrent requests into groups handled by one call of its
// function. Requests that are waiting at the same time share a group, while
// each caller still waits for, and gets, the result of its own request.
// There is no timer: a flusher takes whatever has queued up while the
// previous group was running.
type Batcher[Q, R any] struct {
	run     func(ctx context.Context, group []Q) []R
	cfg     GroupConfig
	queue   chan *pending[Q, R]
	stop    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
	mu      sync.RWMutex // guards closed against Dos racing Close
	closed  bool
	baseCtx context.Context
	cancel  context.CancelFunc
	dones   sync.Pool // of chan result[R]

	groups, requests atomic.Int64
}

type pending[Q, R any] struct {
	q    Q
	done chan result[R]
}

type result[R any] struct {
	r   R
	err error
}

// NewBatcher starts the flushers, which hand groups to run: it must return
// one result per request, in order. Close stops them.
func NewBatcher[Q, R any](cfg GroupConfig, run func(ctx context.Context, group []Q) []R) *Batcher[Q, R] {
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
	b := &Batcher[Q, R]{
		run: run, cfg: cfg,
		queue: make(chan *pending[Q, R], 4*cfg.MaxGroup),
		stop:  make(chan struct{}), baseCtx: ctx, cancel: cancel,
	}
	b.dones.New = func() any { return make(chan result[R], 1) }
	for range cfg.Flushers {
		b.wg.Add(1)
		go b.flusher()
	}
	return b
}

// Stats returns the batcher's counters.
func (b *Batcher[Q, R]) Stats() GroupStats {
	return GroupStats{Groups: b.groups.Load(), Writes: b.requests.Load()}
}

// Do queues q for the next group and waits for its result. It fails with
// ErrClosed after Close, and with ctx.Err() if ctx ends first (q may still
// be handled then).
func (b *Batcher[Q, R]) Do(ctx context.Context, q Q) (R, error) {
	var zero R
	p := &pending[Q, R]{q: q, done: b.dones.Get().(chan result[R])}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.dones.Put(p.done)
		return zero, ErrClosed
	}
	select {
	case b.queue <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		b.dones.Put(p.done)
		return zero, ctx.Err()
	}
	select {
	case res := <-p.done:
		b.dones.Put(p.done)
		return res.r, res.err
	case <-ctx.Done():
		// The flusher will still send on done (buffered); drop the channel.
		return zero, ctx.Err()
	}
}

func (b *Batcher[Q, R]) flusher() {
	defer b.wg.Done()
	group := make([]*pending[Q, R], 0, b.cfg.MaxGroup)
	reqs := make([]Q, 0, b.cfg.MaxGroup)
	for {
		group, reqs = group[:0], reqs[:0]
		select {
		case p := <-b.queue:
			group = append(group, p)
		case <-b.stop:
			b.drain()
			return
		}
		select {
		case <-b.stop:
			// Closed while this request was taken: no new group after Close.
			group[0].done <- result[R]{err: ErrClosed}
			b.drain()
			return
		default:
		}
	fill:
		for len(group) < b.cfg.MaxGroup {
			select {
			case p := <-b.queue:
				group = append(group, p)
			default:
				break fill
			}
		}
		for _, p := range group {
			reqs = append(reqs, p.q)
		}
		b.groups.Add(1)
		b.requests.Add(int64(len(reqs)))
		ctx, cancel := context.WithTimeout(b.baseCtx, b.cfg.Timeout)
		results := b.run(ctx, reqs)
		cancel()
		for i, p := range group {
			if i < len(results) {
				p.done <- result[R]{r: results[i]}
			} else {
				p.done <- result[R]{err: ErrClosed}
			}
		}
	}
}

// drain fails the requests still queued when the batcher stops.
func (b *Batcher[Q, R]) drain() {
	for {
		select {
		case p := <-b.queue:
			p.done <- result[R]{err: ErrClosed}
		default:
			return
		}
	}
}

// Close lets the groups in flight finish, fails the requests still queued
// with ErrClosed, and stops the flushers.
func (b *Batcher[Q, R]) Close() {
	b.closing.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.stop)
		b.wg.Wait()
		b.cancel()
		b.drain()
	})
}

// GroupCommitter turns concurrent Saves into grouped commits (group
// commit): writes that are ready at the same time share one flush, while
// each caller still waits for, and gets, the outcome of its own write.
type GroupCommitter struct {
	b *Batcher[*Write, error]
}

// NewGroupCommitter starts the flushers. Close stops them.
func NewGroupCommitter(cfg GroupConfig, flush FlushFunc) *GroupCommitter {
	return &GroupCommitter{b: NewBatcher(cfg, flush)}
}

// Save queues w for the next group and waits for its outcome. If ctx ends
// first, Save returns ctx.Err() and the write may or may not be committed.
func (g *GroupCommitter) Save(ctx context.Context, w *Write) error {
	outcome, err := g.b.Do(ctx, w)
	if err != nil {
		return err
	}
	return outcome
}

// Stats returns the committer's counters.
func (g *GroupCommitter) Stats() GroupStats { return g.b.Stats() }

// Close lets the groups in flight finish, fails the writes still queued
// with ErrClosed, and stops the flushers.
func (g *GroupCommitter) Close() { g.b.Close() }
