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
// it races other claims on the same instance. Activates waiting at the
// same time share one statement.
func (s *Store) Activate(ctx context.Context, key passivate.Key, node string) (*passivate.Activation, error) {
	if s.closed.Load() {
		return nil, passivate.ErrClosed
	}
	op := "activate " + key.String()
	r, err := s.act.Do(ctx, activateReq{key: key, node: node})
	if err != nil {
		r.err = err
	}
	for try := 1; ; try++ {
		switch {
		case r.err == nil && r.a != nil:
			return r.a, nil
		case r.err == nil && r.owned != nil:
			return nil, r.owned
		case r.err == nil || retryable(r.err):
			// Ambiguous or rolled back by the database: nothing changed.
			if ctx.Err() != nil {
				return nil, s.fail(op, ctx.Err())
			}
		default:
			return nil, s.fail(op, r.err)
		}
		if try == activateTries {
			return nil, s.fail(op, errContended)
		}
		r.a, r.owned, r.err = s.activateOnce(ctx, key, node)
	}
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

// saveSQL commits a whole group in one statement: the writes arrive as
// arrays, and each row is updated only if its stored owner, epoch and
// version are the writer's. RETURNING names the writes that took; the
// others are fenced. A removing write leaves a tombstone: no state, no
// owner, and the version and completions a retried removing call needs.
//
// One statement rather than a batch of one UPDATE per write: one Bind to
// encode, one plan and one executor run in the database, whatever the
// group's size (measured: the batch's per-statement work was a fifth of the
// node's CPU at 64 concurrent callers).
const saveSQL = `UPDATE cl_instances AS i
SET state = CASE WHEN w.remove THEN NULL ELSE w.state END,
    owner = CASE WHEN w.remove THEN NULL ELSE i.owner END,
    state_version = w.state_version, completions = w.completions,
    version = i.version + 1, updated_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::bytea[], $7::int4[], $8::bytea[], $9::bool[])
    WITH ORDINALITY AS w(component, id, owner, epoch, version, state, state_version, completions, remove, ord)
WHERE i.component = w.component AND i.id = w.id
  AND i.owner = w.owner AND i.epoch = w.epoch AND i.version = w.version
RETURNING w.ord`

// saveOneSQL is saveSQL for a group of one, the common case when calls are
// few: a plain statement is cheaper than unpacking arrays.
const saveOneSQL = `UPDATE cl_instances
SET state = CASE WHEN $9 THEN NULL ELSE $6::bytea END,
    owner = CASE WHEN $9 THEN NULL ELSE owner END,
    state_version = $7, completions = $8, version = version + 1, updated_at = now()
WHERE component = $1 AND id = $2 AND owner = $3 AND epoch = $4 AND version = $5`

// flush is the group committer's FlushFunc: one statement for the group,
// committed as one transaction. A write whose row does not match is that
// write's ErrFenced; an error fails every write of the group (the outcome
// of a commit cut short is unknown).
//
// The writes go in key order, so that groups in flight at once would lock
// any rows they shared in the same order and could not deadlock.
func (s *Store) flush(ctx context.Context, group []*passivate.Write) []error {
	order := make([]int, len(group))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, kb := group[a].Key, group[b].Key
		return cmp.Or(cmp.Compare(ka.Component, kb.Component), cmp.Compare(ka.ID, kb.ID))
	})
	n := len(group)
	var (
		comps, ids, owners = make([]string, n), make([]string, n), make([]string, n)
		epochs, versions   = make([]int64, n), make([]int64, n)
		states, dones      = make([][]byte, n), make([][]byte, n)
		stateVersions      = make([]int32, n)
		removes            = make([]bool, n)
	)
	for j, i := range order {
		w := group[i]
		comps[j], ids[j], owners[j] = w.Key.Component, w.Key.ID, w.Owner.Node
		epochs[j], versions[j] = w.Owner.Epoch, w.Version
		states[j], dones[j], stateVersions[j], removes[j] = w.State, w.Completions, int32(w.StateVersion), w.Remove
		if w.Remove {
			states[j] = nil
		}
	}
	errs := make([]error, n)
	for i := range errs {
		errs[i] = passivate.ErrFenced
	}
	if n == 1 {
		w := group[0]
		tag, err := s.pool.Exec(ctx, saveOneSQL, w.Key.Component, w.Key.ID, w.Owner.Node, w.Owner.Epoch, w.Version, states[0], int32(w.StateVersion), w.Completions, w.Remove)
		if err != nil {
			errs[0] = fmt.Errorf("commit of 1 write: %w", err)
		} else if tag.RowsAffected() == 1 {
			errs[0] = nil
		}
		return errs
	}
	rows, err := s.pool.Query(ctx, saveSQL, comps, ids, owners, epochs, versions, states, stateVersions, dones, removes)
	if err == nil {
		var ord int64
		_, err = pgx.ForEachRow(rows, []any{&ord}, func() error {
			if ord < 1 || int(ord) > n {
				return fmt.Errorf("ordinal %d out of range", ord)
			}
			errs[order[ord-1]] = nil
			return nil
		})
	}
	if err != nil {
		err = fmt.Errorf("group commit of %d writes: %w", n, err)
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
