package container

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/registry"
)

// instance is one activation slot. Everything below turn is guarded by the
// turn: only the goroutine holding it reads or writes those fields.
type instance struct {
	key      passivate.Key
	comp     *registry.Component
	turn     chan struct{} // holding its single token is having the turn
	lastUsed atomic.Int64  // container clock, nanoseconds

	dropped   bool // removed from the table; waiters must look up again
	active    bool
	owner     passivate.Owner
	gen       uint64 // lease generation the activation was made under
	state     any    // *S
	committed []byte // encoding of state as last committed
	version   int64
	done      completions
}

func newInstance(key passivate.Key, comp *registry.Component) *instance {
	return &instance{key: key, comp: comp, turn: make(chan struct{}, 1)}
}

func (i *instance) acquire(ctx context.Context) error {
	select {
	case i.turn <- struct{}{}:
		return nil
	default:
	}
	select {
	case i.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (i *instance) tryAcquire() bool {
	select {
	case i.turn <- struct{}{}:
		return true
	default:
		return false
	}
}

func (i *instance) release() { <-i.turn }

// table maps keys to instances, sharded to keep lock hold times short under
// many concurrent calls.
type table struct {
	seed   maphash.Seed
	shards [64]shard
	count  atomic.Int64
}

type shard struct {
	mu sync.Mutex
	m  map[passivate.Key]*instance
}

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[passivate.Key]*instance{}
	}
	return t
}

func (t *table) shard(k passivate.Key) *shard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.Component)
	h.WriteByte(0)
	h.WriteString(k.ID)
	return &t.shards[h.Sum64()%uint64(len(t.shards))]
}

// get returns the instance for k, creating an empty slot if there is none.
func (t *table) get(k passivate.Key, comp *registry.Component) *instance {
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.m[k]; ok {
		return i
	}
	i := newInstance(k, comp)
	s.m[k] = i
	t.count.Add(1)
	return i
}

// remove deletes i from the table if it is still the slot for its key.
func (t *table) remove(i *instance) {
	s := t.shard(i.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[i.key] == i {
		delete(s.m, i.key)
		t.count.Add(-1)
	}
}

// all returns a snapshot of the instances.
func (t *table) all() []*instance {
	out := make([]*instance, 0, t.count.Load())
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, in := range s.m {
			out = append(out, in)
		}
		s.mu.Unlock()
	}
	return out
}

func (t *table) len() int { return int(t.count.Load()) }

// gate counts calls in flight and, once closed, turns new ones away.
type gate struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when closed and n reaches 0
}

func newGate() *gate { return &gate{idle: make(chan struct{})} }

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.idle)
	}
}

// close turns new calls away and returns a channel closed once the calls in
// flight have left.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		if g.n == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
