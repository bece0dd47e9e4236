package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// activateGroupSQL is activateSQL for several instances of one node in one
// statement: the claims go in key order, so that groups racing each other
// lock shared rows in the same order. Each result row carries the ordinal
// of its request; a request with no row was refused while claimable in the
// snapshot (a racing claim won), and is retried on its own.
const activateGroupSQL = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(component, id, ord)
), claim AS (
	INSERT INTO cl_instances AS i (component, id, owner, epoch)
	SELECT component, id, $3::text, 1 FROM req ORDER BY component, id
	ON CONFLICT (component, id) DO UPDATE
	SET owner = excluded.owner, epoch = i.epoch + 1
	WHERE i.owner IS NULL
		OR i.owner = excluded.owner
		OR NOT EXISTS (
			SELECT 1 FROM cl_nodes n
			WHERE n.incarnation = i.owner AND NOT n.dead AND n.lease_until > now())
	RETURNING i.component, i.id, i.epoch, i.state, i.state_version, i.version, i.completions
)
SELECT r.ord, true, c.epoch, c.state, c.state_version, c.version, c.completions, NULL::text, NULL::text
FROM claim c JOIN req r ON r.component = c.component AND r.id = c.id
UNION ALL
SELECT r.ord, false, i.epoch, NULL::bytea, 0, 0, NULL::bytea, i.owner, n.addr
FROM req r
JOIN cl_instances i ON i.component = r.component AND i.id = r.id
LEFT JOIN cl_nodes n ON n.incarnation = i.owner AND NOT n.dead AND n.lease_until > now()
WHERE NOT EXISTS (SELECT 1 FROM claim c WHERE c.component = r.component AND c.id = r.id)`

// activator groups the Activates that are waiting at the same time into
// one statement, the way the group committer groups Saves: after a
// failover, the instances of the dead node come back in a few round trips
// rather than one each. A lone Activate runs activateSQL directly.
type activator struct {
	s        *Store
	maxGroup int
	timeout  time.Duration
	queue    chan *activateReq
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.RWMutex // guards closed against enqueues racing close
	closed   bool

	groups, claims atomic.Int64 // statements run, activations in them
}

type activateReq struct {
	key  passivate.Key
	node string
	done chan activateRes
}

// activateRes is the outcome of one attempt: an activation, the live owner
// that refused the claim, an error, or none of them when the outcome was
// ambiguous (retry).
type activateRes struct {
	a     *passivate.Activation
	owned *passivate.OwnedError
	err   error
}

func newActivator(s *Store, flushers, maxGroup int, timeout time.Duration) *activator {
	a := &activator{
		s: s, maxGroup: maxGroup, timeout: timeout,
		queue: make(chan *activateReq, 4*maxGroup), stop: make(chan struct{}),
	}
	for range flushers {
		a.wg.Add(1)
		go a.run()
	}
	return a
}

// do makes one attempt at claiming key, grouped with others waiting.
func (a *activator) do(ctx context.Context, key passivate.Key, node string) activateRes {
	req := &activateReq{key: key, node: node, done: make(chan activateRes, 1)}
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return activateRes{err: passivate.ErrClosed}
	}
	select {
	case a.queue <- req:
		a.mu.RUnlock()
	case <-ctx.Done():
		a.mu.RUnlock()
		return activateRes{err: ctx.Err()}
	}
	select {
	case res := <-req.done:
		return res
	case <-ctx.Done():
		// The claim may still be made; the node owns the instance then,
		// and claims it again on the next call.
		return activateRes{err: ctx.Err()}
	}
}

func (a *activator) run() {
	defer a.wg.Done()
	group := make([]*activateReq, 0, a.maxGroup)
	for {
		group = group[:0]
		select {
		case r := <-a.queue:
			group = append(group, r)
		case <-a.stop:
			return
		}
	fill:
		for len(group) < a.maxGroup {
			select {
			case r := <-a.queue:
				group = append(group, r)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		a.activate(ctx, group)
		cancel()
	}
}

// activate claims the group's instances. Requests that cannot share the
// statement — another node's (a node registered again under a new
// incarnation) or a key already in it — are answered as ambiguous, and
// their callers retry on their own.
func (a *activator) activate(ctx context.Context, group []*activateReq) {
	node := group[0].node
	seen := make(map[passivate.Key]bool, len(group))
	batch := group[:0:0]
	for _, r := range group {
		if r.node != node || seen[r.key] {
			r.done <- activateRes{}
			continue
		}
		seen[r.key] = true
		batch = append(batch, r)
	}
	a.groups.Add(1)
	a.claims.Add(int64(len(batch)))
	if len(batch) == 1 {
		act, owned, err := a.s.activateOnce(ctx, batch[0].key, node)
		batch[0].done <- activateRes{act, owned, err}
		return
	}
	slices.SortFunc(batch, func(x, y *activateReq) int {
		return cmp.Or(cmp.Compare(x.key.Component, y.key.Component), cmp.Compare(x.key.ID, y.key.ID))
	})
	comps, ids := make([]string, len(batch)), make([]string, len(batch))
	for i, r := range batch {
		comps[i], ids[i] = r.key.Component, r.key.ID
	}
	res := make([]activateRes, len(batch))
	rows, err := a.s.pool.Query(ctx, activateGroupSQL, comps, ids, node)
	if err == nil {
		var (
			ord         int64
			claimed     bool
			epoch       int64
			state       []byte
			stateVer    int
			version     int64
			completions []byte
			owner, addr *string
		)
		_, err = pgx.ForEachRow(rows, []any{&ord, &claimed, &epoch, &state, &stateVer, &version, &completions, &owner, &addr}, func() error {
			if ord < 1 || int(ord) > len(batch) {
				return fmt.Errorf("ordinal %d out of range", ord)
			}
			r := &res[ord-1]
			switch {
			case claimed:
				r.a = &passivate.Activation{
					Owner: passivate.Owner{Node: node, Epoch: epoch},
					Record: passivate.Record{
						State: state, StateVersion: stateVer, Version: version, Completions: completions,
					},
				}
			case owner != nil && addr != nil && *owner != node:
				r.owned = &passivate.OwnedError{Key: batch[ord-1].key, Owner: *owner, Addr: *addr}
			}
			state, completions = nil, nil // fresh buffers for the next row
			return nil
		})
	}
	for i, r := range batch {
		if err != nil {
			res[i] = activateRes{err: fmt.Errorf("group activation of %d instances: %w", len(batch), err)}
		}
		r.done <- res[i]
	}
}

// close stops the flushers after the groups in flight, and fails the
// requests still queued.
func (a *activator) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	a.wg.Wait()
	for {
		select {
		case r := <-a.queue:
			r.done <- activateRes{err: passivate.ErrClosed}
		default:
			return
		}
	}
}
