package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// activateSQL claims an instance in one statement. The claim CTE inserts a
// new row (epoch 1) or takes over the existing one when it is claimable: no
// owner, owned by the claiming node already, or its owner has no live row
// in cl_nodes (missing, dead or lease expired, by the database clock). When
// the claim is refused, the second branch reports the owner and, if that
// owner is live, its address, as of the statement's snapshot.
//
// Under READ COMMITTED, ON CONFLICT judges the newest committed row while
// the second branch reads the snapshot, so a claim racing another one can
// be refused while the snapshot shows no live owner (or no row at all).
// Activate retries that ambiguous case.
const activateSQL = `
WITH claim AS (
	INSERT INTO cl_instances AS i (component, id, owner, epoch)
	VALUES ($1, $2, $3, 1)
	ON CONFLICT (component, id) DO UPDATE
	SET owner = excluded.owner, epoch = i.epoch + 1
	WHERE i.owner IS NULL
		OR i.owner = excluded.owner
		OR NOT EXISTS (
			SELECT 1 FROM cl_nodes n
			WHERE n.incarnation = i.owner AND NOT n.dead AND n.lease_until > now())
	RETURNING i.epoch, i.state, i.state_version, i.version, i.completions
)
SELECT true, c.epoch, c.state, c.state_version, c.version, c.completions, NULL::text, NULL::text
FROM claim c
UNION ALL
SELECT false, i.epoch, NULL::bytea, 0, 0, NULL::bytea, i.owner, n.addr
FROM cl_instances i
LEFT JOIN cl_nodes n ON n.incarnation = i.owner AND NOT n.dead AND n.lease_until > now()
WHERE i.component = $1 AND i.id = $2 AND NOT EXISTS (SELECT 1 FROM claim)`

// activateTries bounds the statements one Activate runs when claims race.
const activateTries = 5

// errContended is returned when racing claims kept the outcome ambiguous.
var errContended = errors.New("claim kept racing concurrent claims")

// Activate implements passivate.Instances in one round trip, or a few when
// it races other claims on the same instance.
func (s *Store) Activate(ctx context.Context, key passivate.Key, node string) (*passivate.Activation, error) {
	if s.closed.Load() {
		return nil, passivate.ErrClosed
	}
	op := "activate " + key.String()
	for range activateTries {
		a, owned, err := s.activateOnce(ctx, key, node)
		switch {
		case err == nil && a != nil:
			return a, nil
		case err == nil && owned != nil:
			return nil, owned
		case err == nil || retryable(err):
			// Ambiguous or rolled back by the database: nothing changed.
			if ctx.Err() != nil {
				return nil, s.fail(op, ctx.Err())
			}
			continue
		default:
			return nil, s.fail(op, err)
		}
	}
	return nil, s.fail(op, errContended)
}

// activateOnce runs activateSQL once. It returns the activation, or the
// live owner that refused the claim, or neither when the outcome was
// ambiguous.
func (s *Store) activateOnce(ctx context.Context, key passivate.Key, node string) (*passivate.Activation, *passivate.OwnedError, error) {
	rows, err := s.pool.Query(ctx, activateSQL, key.Component, key.ID, node)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		claimed     bool
		epoch       int64
		state       []byte
		stateVer    int
		version     int64
		completions []byte
		owner, addr *string
	)
	if !rows.Next() {
		// Refused, and the row is not in the snapshot: it was created by
		// a concurrent claim.
		return nil, nil, rows.Err()
	}
	if err := rows.Scan(&claimed, &epoch, &state, &stateVer, &version, &completions, &owner, &addr); err != nil {
		return nil, nil, err
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if claimed {
		return &passivate.Activation{
			Owner: passivate.Owner{Node: node, Epoch: epoch},
			Record: passivate.Record{
				State:        state,
				StateVersion: stateVer,
				Version:      version,
				Completions:  completions,
			},
		}, nil, nil
	}
	if owner == nil || addr == nil || *owner == node {
		// Refused, yet claimable in the snapshot: a concurrent claim won.
		return nil, nil, nil
	}
	return nil, &passivate.OwnedError{Key: key, Owner: *owner, Addr: *addr}, nil
}

// retryable reports whether err is one the database rolls back after and
// asks to retry: a serialization failure (CockroachDB, YugabyteDB) or a
// deadlock.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// Save implements passivate.Instances. Concurrent Saves are committed
// together by the group committer, in one batch per group.
func (s *Store) Save(ctx context.Context, w *passivate.Write) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if err := s.group.Save(ctx, w); err != nil {
		if errors.Is(err, passivate.ErrFenced) || errors.Is(err, passivate.ErrClosed) {
			return fmt.Errorf("pgstore: save %s: %w", w.Key, err)
		}
		return s.fail("save "+w.Key.String(), err)
	}
	return nil
}

const (
	saveSQL = `UPDATE cl_instances
SET state = $5, state_version = $6, completions = $7, version = version + 1, updated_at = now()
WHERE component = $1 AND id = $2 AND owner = $3 AND epoch = $4 AND version = $8`

	// removeSQL leaves a tombstone: no state, no owner, and the version
	// and completions a retried removing call needs.
	removeSQL = `UPDATE cl_instances
SET state = NULL, owner = NULL, state_version = $5, completions = $6, version = version + 1, updated_at = now()
WHERE component = $1 AND id = $2 AND owner = $3 AND epoch = $4 AND version = $7`
)

// flush is the group committer's FlushFunc: one pgx.Batch of conditional
// UPDATEs, sent in one round trip and committed as one implicit
// transaction. An UPDATE that matches no row is that write's ErrFenced; an
// error in the batch rolls the whole transaction back (or leaves its commit
// unknown) and so fails every write of the group.
//
// The statements are sent in key order, so that batches in flight at once
// lock any rows they share in the same order and cannot deadlock.
func (s *Store) flush(ctx context.Context, group []*passivate.Write) []error {
	order := make([]int, len(group))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, kb := group[a].Key, group[b].Key
		return cmp.Or(cmp.Compare(ka.Component, kb.Component), cmp.Compare(ka.ID, kb.ID))
	})
	batch := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(group))}
	for _, i := range order {
		w := group[i]
		k := w.Key
		if w.Remove {
			batch.Queue(removeSQL, k.Component, k.ID, w.Owner.Node, w.Owner.Epoch, w.StateVersion, w.Completions, w.Version)
		} else {
			batch.Queue(saveSQL, k.Component, k.ID, w.Owner.Node, w.Owner.Epoch, w.State, w.StateVersion, w.Completions, w.Version)
		}
	}
	errs := make([]error, len(group))
	results := s.pool.SendBatch(ctx, batch)
	var batchErr error
	for _, i := range order {
		tag, err := results.Exec()
		if err != nil {
			batchErr = err
			break
		}
		if tag.RowsAffected() == 0 {
			errs[i] = passivate.ErrFenced
		}
	}
	// Close reads up to the commit; a failure there fails the group too.
	if err := results.Close(); err != nil && batchErr == nil {
		batchErr = err
	}
	if batchErr != nil {
		err := fmt.Errorf("group commit of %d writes: %w", len(group), batchErr)
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

const releaseSQL = `UPDATE cl_instances SET owner = NULL
WHERE component = $1 AND id = $2 AND owner = $3 AND epoch = $4`

// Release implements passivate.Instances.
func (s *Store) Release(ctx context.Context, key passivate.Key, owner passivate.Owner) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.pool.Exec(ctx, releaseSQL, key.Component, key.ID, owner.Node, owner.Epoch); err != nil {
		return s.fail("release "+key.String(), err)
	}
	return nil
}
