package sqlitestore

import (
	"context"
	"database/sql"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// A node is live while it is not marked dead and its lease_until is after
// now; the same test appears in claimSQL and sweepInstancesSQL.

// registerSQL adds a node or replaces its address and lease, reviving it if
// it was marked dead. ?1 incarnation, ?2 addr, ?3 now, ?4 lease until.
const registerSQL = `
INSERT INTO cl_nodes (incarnation, addr, started_at, lease_until, dead)
VALUES (?1, ?2, ?3, ?4, 0)
ON CONFLICT (incarnation) DO UPDATE
SET addr = excluded.addr, lease_until = excluded.lease_until, dead = 0`

// renewSQL extends a live node's lease. ?1 incarnation, ?2 now, ?3 until.
const renewSQL = `
UPDATE cl_nodes SET lease_until = ?3
WHERE incarnation = ?1 AND dead = 0 AND lease_until > ?2`

const liveNodesSQL = `
SELECT incarnation, addr FROM cl_nodes
WHERE dead = 0 AND lease_until > ?1
ORDER BY addr, incarnation`

// sweepInstancesSQL deletes stateless records (tombstones and records
// never written) not written since ?1 and not owned by a node live at ?2.
const sweepInstancesSQL = `
DELETE FROM cl_instances
WHERE state IS NULL AND updated_at < ?1
  AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM cl_nodes n
       WHERE n.incarnation = cl_instances.owner AND n.dead = 0 AND n.lease_until > ?2))`

// Register implements passivate.Membership.
func (s *Store) Register(ctx context.Context, node passivate.Node, lease time.Duration) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	// The lease starts once the write lock is held: a start taken before
	// waiting for it would leave the lease shorter than promised.
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		t := now()
		_, err := tx.ExecContext(ctx, registerSQL, node.Incarnation, node.Addr, t, t+lease.Nanoseconds())
		return err
	})
	if err != nil {
		return s.fail("register "+node.Incarnation, err)
	}
	return nil
}

// Renew implements passivate.Membership.
func (s *Store) Renew(ctx context.Context, incarnation string, lease time.Duration) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	// The expiry check must use the time at which the write lock is held:
	// with a time taken before waiting for it, a renewal delayed past the
	// lease's end would still find the lease valid and revive it, after
	// another node may have taken its instances over.
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		t := now()
		res, err := tx.ExecContext(ctx, renewSQL, incarnation, t, t+lease.Nanoseconds())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return s.fail("renew "+incarnation, err)
	}
	if n == 0 {
		return passivate.ErrLeaseLost
	}
	return nil
}

// Deregister implements passivate.Membership.
func (s *Store) Deregister(ctx context.Context, incarnation string) error {
	return s.exec(ctx, "deregister "+incarnation, `DELETE FROM cl_nodes WHERE incarnation = ?1`, incarnation)
}

// MarkDead implements passivate.Membership.
func (s *Store) MarkDead(ctx context.Context, incarnation string) error {
	return s.exec(ctx, "mark dead "+incarnation, `UPDATE cl_nodes SET dead = 1 WHERE incarnation = ?1`, incarnation)
}

// LiveNodes implements passivate.Membership.
func (s *Store) LiveNodes(ctx context.Context) ([]passivate.Node, error) {
	if s.closed.Load() {
		return nil, passivate.ErrClosed
	}
	rows, err := s.db.QueryContext(ctx, liveNodesSQL, now())
	if err != nil {
		return nil, s.fail("live nodes", err)
	}
	defer rows.Close()
	var nodes []passivate.Node
	for rows.Next() {
		var n passivate.Node
		if err := rows.Scan(&n.Incarnation, &n.Addr); err != nil {
			return nil, s.fail("live nodes", err)
		}
		nodes = append(nodes, n)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("live nodes", err)
	}
	return nodes, nil
}

// Sweep implements passivate.Store, in one transaction.
func (s *Store) Sweep(ctx context.Context, age time.Duration) (int, error) {
	if s.closed.Load() {
		return 0, passivate.ErrClosed
	}
	t := now()
	cutoff := t - age.Nanoseconds()
	var deleted int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sweepInstancesSQL, cutoff, t)
		if err != nil {
			return err
		}
		if deleted, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM cl_nodes WHERE lease_until < ?1`, cutoff)
		return err
	})
	if err != nil {
		return 0, s.fail("sweep", err)
	}
	return int(deleted), nil
}

// exec runs a statement whose only outcome is its error.
func (s *Store) exec(ctx context.Context, op, query string, args ...any) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.db.ExecContext(ctx, query, args...); err != nil {
		return s.fail(op, err)
	}
	return nil
}
