package pgstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// Lease times are computed by the database clock (now()), never by the
// clocks of the nodes.
const (
	registerSQL = `INSERT INTO cl_nodes (incarnation, addr, lease_until)
VALUES ($1, $2, now() + $3::interval)
ON CONFLICT (incarnation) DO UPDATE
SET addr = excluded.addr, lease_until = excluded.lease_until, dead = false`

	renewSQL = `UPDATE cl_nodes SET lease_until = now() + $2::interval
WHERE incarnation = $1 AND NOT dead AND lease_until > now()`

	deregisterSQL = `DELETE FROM cl_nodes WHERE incarnation = $1`

	markDeadSQL = `UPDATE cl_nodes SET dead = true WHERE incarnation = $1`

	// The order is applied in Go, by bytes, so that it does not depend on
	// the database's collation.
	liveNodesSQL = `SELECT incarnation, addr FROM cl_nodes WHERE NOT dead AND lease_until > now()`

	// sweepInstancesSQL deletes tombstones and never-written records that
	// no live node owns. A claim racing the sweep is safe: the DELETE
	// re-checks its condition against the row version the claim wrote.
	sweepInstancesSQL = `DELETE FROM cl_instances AS i
WHERE i.state IS NULL AND i.updated_at < now() - $1::interval
	AND (i.owner IS NULL OR NOT EXISTS (
		SELECT 1 FROM cl_nodes n
		WHERE n.incarnation = i.owner AND NOT n.dead AND n.lease_until > now()))`

	sweepNodesSQL = `DELETE FROM cl_nodes WHERE lease_until < now() - $1::interval`
)

// Register implements passivate.Membership. Registering an incarnation
// again replaces its address and lease and clears a dead mark.
func (s *Store) Register(ctx context.Context, node passivate.Node, lease time.Duration) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.pool.Exec(ctx, registerSQL, node.Incarnation, node.Addr, lease); err != nil {
		return s.fail("register node "+node.Incarnation, err)
	}
	return nil
}

// Renew implements passivate.Membership.
func (s *Store) Renew(ctx context.Context, incarnation string, lease time.Duration) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, renewSQL, incarnation, lease)
	if err != nil {
		return s.fail("renew node "+incarnation, err)
	}
	if tag.RowsAffected() == 0 {
		return passivate.ErrLeaseLost
	}
	return nil
}

// Deregister implements passivate.Membership.
func (s *Store) Deregister(ctx context.Context, incarnation string) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.pool.Exec(ctx, deregisterSQL, incarnation); err != nil {
		return s.fail("deregister node "+incarnation, err)
	}
	return nil
}

// MarkDead implements passivate.Membership.
func (s *Store) MarkDead(ctx context.Context, incarnation string) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.pool.Exec(ctx, markDeadSQL, incarnation); err != nil {
		return s.fail("mark node "+incarnation+" dead", err)
	}
	return nil
}

// LiveNodes implements passivate.Membership: nodes ordered by address, then
// incarnation, compared as bytes.
func (s *Store) LiveNodes(ctx context.Context) ([]passivate.Node, error) {
	if s.closed.Load() {
		return nil, passivate.ErrClosed
	}
	rows, err := s.pool.Query(ctx, liveNodesSQL)
	if err != nil {
		return nil, s.fail("list live nodes", err)
	}
	nodes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (passivate.Node, error) {
		var n passivate.Node
		err := row.Scan(&n.Incarnation, &n.Addr)
		return n, err
	})
	if err != nil {
		return nil, s.fail("list live nodes", err)
	}
	slices.SortFunc(nodes, func(a, b passivate.Node) int {
		return cmp.Or(cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.Incarnation, b.Incarnation))
	})
	return nodes, nil
}

// Sweep implements passivate.Store.
func (s *Store) Sweep(ctx context.Context, age time.Duration) (int, error) {
	if s.closed.Load() {
		return 0, passivate.ErrClosed
	}
	tag, err := s.pool.Exec(ctx, sweepInstancesSQL, age)
	if err != nil {
		return 0, s.fail("sweep instances", err)
	}
	if _, err := s.pool.Exec(ctx, sweepNodesSQL, age); err != nil {
		return int(tag.RowsAffected()), s.fail("sweep nodes", err)
	}
	return int(tag.RowsAffected()), nil
}
