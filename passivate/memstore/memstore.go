package memstore

import (
	"bytes"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
)

type row struct {
	rec     passivate.Record
	owner   string
	epoch   int64
	updated time.Time
}

type node struct {
	addr  string
	until time.Time
	dead  bool
}

// Store is an in-memory passivate.Store. Its zero value is not usable; call
// New. It is safe for concurrent use.
type Store struct {
	mu     sync.Mutex
	rows   map[passivate.Key]*row
	nodes  map[string]*node
	closed bool
	now    func() time.Time
}

var _ passivate.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{rows: map[passivate.Key]*row{}, nodes: map[string]*node{}, now: time.Now}
}

func (s *Store) live(incarnation string, now time.Time) (*node, bool) {
	n, ok := s.nodes[incarnation]
	if !ok || n.dead || !now.Before(n.until) {
		return n, false
	}
	return n, true
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}

// Activate implements passivate.Instances.
func (s *Store) Activate(ctx context.Context, key passivate.Key, node string) (*passivate.Activation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, passivate.ErrClosed
	}
	now := s.now()
	r, ok := s.rows[key]
	if !ok {
		r = &row{updated: now}
		s.rows[key] = r
	}
	if r.owner != "" && r.owner != node {
		if n, live := s.live(r.owner, now); live {
			return nil, &passivate.OwnedError{Key: key, Owner: r.owner, Addr: n.addr}
		}
	}
	r.owner = node
	r.epoch++
	rec := r.rec
	rec.State, rec.Completions = clone(rec.State), clone(rec.Completions)
	return &passivate.Activation{Owner: passivate.Owner{Node: node, Epoch: r.epoch}, Record: rec}, nil
}

// Save implements passivate.Instances.
func (s *Store) Save(ctx context.Context, w *passivate.Write) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	r, ok := s.rows[w.Key]
	if !ok || r.owner == "" || r.owner != w.Owner.Node || r.epoch != w.Owner.Epoch || r.rec.Version != w.Version {
		return passivate.ErrFenced
	}
	r.rec = passivate.Record{
		State:        clone(w.State),
		StateVersion: w.StateVersion,
		Version:      w.Version + 1,
		Completions:  clone(w.Completions),
	}
	if w.Remove {
		r.rec.State = nil
		r.owner = ""
	}
	r.updated = s.now()
	return nil
}

// Release implements passivate.Instances.
func (s *Store) Release(ctx context.Context, key passivate.Key, owner passivate.Owner) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	if r, ok := s.rows[key]; ok && r.owner == owner.Node && r.epoch == owner.Epoch {
		r.owner = ""
	}
	return nil
}

// Register implements passivate.Membership.
func (s *Store) Register(ctx context.Context, n passivate.Node, lease time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	s.nodes[n.Incarnation] = &node{addr: n.Addr, until: s.now().Add(lease)}
	return nil
}

// Renew implements passivate.Membership.
func (s *Store) Renew(ctx context.Context, incarnation string, lease time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	now := s.now()
	n, live := s.live(incarnation, now)
	if !live {
		return passivate.ErrLeaseLost
	}
	n.until = now.Add(lease)
	return nil
}

// Deregister implements passivate.Membership.
func (s *Store) Deregister(ctx context.Context, incarnation string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	delete(s.nodes, incarnation)
	return nil
}

// MarkDead implements passivate.Membership.
func (s *Store) MarkDead(ctx context.Context, incarnation string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return passivate.ErrClosed
	}
	if n, ok := s.nodes[incarnation]; ok {
		n.dead = true
	}
	return nil
}

// LiveNodes implements passivate.Membership.
func (s *Store) LiveNodes(ctx context.Context) ([]passivate.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, passivate.ErrClosed
	}
	now := s.now()
	var out []passivate.Node
	for inc := range s.nodes {
		if n, live := s.live(inc, now); live {
			out = append(out, passivate.Node{Incarnation: inc, Addr: n.addr})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Addr != out[j].Addr {
			return out[i].Addr < out[j].Addr
		}
		return out[i].Incarnation < out[j].Incarnation
	})
	return out, nil
}

// Sweep implements passivate.Store.
func (s *Store) Sweep(ctx context.Context, age time.Duration) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, passivate.ErrClosed
	}
	now := s.now()
	cutoff := now.Add(-age)
	deleted := 0
	for k, r := range s.rows {
		if r.rec.State != nil || !r.updated.Before(cutoff) {
			continue
		}
		if _, live := s.live(r.owner, now); r.owner != "" && live {
			continue
		}
		delete(s.rows, k)
		deleted++
	}
	for inc, n := range s.nodes {
		if n.until.Before(cutoff) {
			delete(s.nodes, inc)
		}
	}
	return deleted, nil
}

// Close implements passivate.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
