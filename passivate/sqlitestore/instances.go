package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// claimSQL creates the record of a new instance, or takes over an existing
// one when it is unowned, already owned by the claiming node, or owned by a
// node that is not live (deregistered, marked dead or lease expired). Either
// way it bumps the epoch and returns the record; when a live node owns the
// instance the upsert does nothing and returns no row. The driver reads an
// empty BLOB as nil, so the row says whether there is a state.
// ?1 component, ?2 id, ?3 node, ?4 now.
const claimSQL = `
INSERT INTO cl_instances (component, id, owner, epoch, created_at, updated_at)
VALUES (?1, ?2, ?3, 1, ?4, ?4)
ON CONFLICT (component, id) DO UPDATE
SET owner = excluded.owner, epoch = cl_instances.epoch + 1
WHERE cl_instances.owner IS NULL
   OR cl_instances.owner = excluded.owner
   OR NOT EXISTS (SELECT 1 FROM cl_nodes n
                  WHERE n.incarnation = cl_instances.owner AND n.dead = 0 AND n.lease_until > ?4)
RETURNING epoch, state, state IS NOT NULL, state_version, version, completions`

// ownerSQL finds the live owner that refused a claim.
const ownerSQL = `
SELECT i.owner, n.addr FROM cl_instances i JOIN cl_nodes n ON n.incarnation = i.owner
WHERE i.component = ?1 AND i.id = ?2`

// saveSQL is the conditional write: it matches no row unless the stored
// owner, epoch and version are the writer's. Removing clears the owner too.
// ?1 state, ?2 state_version, ?3 completions, ?4 now, ?5 remove,
// ?6 component, ?7 id, ?8 owner, ?9 epoch, ?10 version.
const saveSQL = `
UPDATE cl_instances
SET state = ?1, state_version = ?2, completions = ?3, version = version + 1, updated_at = ?4,
    owner = CASE WHEN ?5 THEN NULL ELSE owner END
WHERE component = ?6 AND id = ?7 AND owner = ?8 AND epoch = ?9 AND version = ?10`

const releaseSQL = `
UPDATE cl_instances SET owner = NULL
WHERE component = ?1 AND id = ?2 AND owner = ?3 AND epoch = ?4`

// Activate implements passivate.Instances. The claim and, when it is
// refused, the lookup of the owner's address are one transaction.
func (s *Store) Activate(ctx context.Context, key passivate.Key, node string) (*passivate.Activation, error) {
	if s.closed.Load() {
		return nil, passivate.ErrClosed
	}
	a := &passivate.Activation{Owner: passivate.Owner{Node: node}}
	var owned *passivate.OwnedError
	var hasState bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, claimSQL, key.Component, key.ID, node, now()).
			Scan(&a.Owner.Epoch, &a.State, &hasState, &a.StateVersion, &a.Version, &a.Completions)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		owned = &passivate.OwnedError{Key: key}
		return tx.QueryRowContext(ctx, ownerSQL, key.Component, key.ID).Scan(&owned.Owner, &owned.Addr)
	})
	switch {
	case err != nil:
		return nil, s.fail("activate "+key.String(), err)
	case owned != nil:
		return nil, owned
	case hasState && a.State == nil:
		a.State = []byte{}
	}
	return a, nil
}

// Save implements passivate.Instances through the group committer.
func (s *Store) Save(ctx context.Context, w *passivate.Write) error {
	return s.group.Save(ctx, w)
}

// flush is the group committer's FlushFunc: one transaction with one
// conditional UPDATE per write and one COMMIT. A write whose condition
// fails is ErrFenced and does not disturb the others; any error fails the
// whole group, whose outcome is then unknown.
func (s *Store) flush(ctx context.Context, group []*passivate.Write) []error {
	errs := make([]error, len(group))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, saveSQL)
		if err != nil {
			return err
		}
		defer stmt.Close()
		t := now()
		for i, w := range group {
			state := w.State
			if w.Remove {
				state = nil
			}
			res, err := stmt.ExecContext(ctx, state, w.StateVersion, w.Completions, t, w.Remove,
				w.Key.Component, w.Key.ID, w.Owner.Node, w.Owner.Epoch, w.Version)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 0 {
				errs[i] = passivate.ErrFenced
			}
		}
		return nil
	})
	if err != nil {
		// Not s.fail: Close waits for this flush, and its outcome is
		// unknown, which ErrClosed would hide.
		err = fmt.Errorf("sqlitestore: save: %w", err)
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

// Release implements passivate.Instances.
func (s *Store) Release(ctx context.Context, key passivate.Key, owner passivate.Owner) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	if _, err := s.db.ExecContext(ctx, releaseSQL, key.Component, key.ID, owner.Node, owner.Epoch); err != nil {
		return s.fail("release "+key.String(), err)
	}
	return nil
}
