package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"

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

// activateReq is one Activate in a group.
type activateReq struct {
	key  passivate.Key
	node string
}

// activateRes is the outcome of one attempt: an activation, the live owner
// that refused the claim, an error, or none of them when the outcome was
// ambiguous (retry).
type activateRes struct {
	a     *passivate.Activation
	owned *passivate.OwnedError
	err   error
}

// activateGroup is the batcher's function for Activates waiting at the
// same time (after a failover, the dead node's instances come back in a
// few round trips rather than one each). A lone Activate runs activateSQL.
// Requests that cannot share the statement — another node's (a node that
// registered again under a new incarnation) or a key already in it — are
// answered as ambiguous, and their callers retry on their own.
func (s *Store) activateGroup(ctx context.Context, group []activateReq) []activateRes {
	res := make([]activateRes, len(group))
	node := group[0].node
	seen := make(map[passivate.Key]bool, len(group))
	var batch []int // indexes into group, in key order
	for i, r := range group {
		if r.node == node && !seen[r.key] {
			seen[r.key] = true
			batch = append(batch, i)
		}
	}
	if len(batch) == 1 {
		r := &res[batch[0]]
		r.a, r.owned, r.err = s.activateOnce(ctx, group[batch[0]].key, node)
		return res
	}
	slices.SortFunc(batch, func(x, y int) int {
		kx, ky := group[x].key, group[y].key
		return cmp.Or(cmp.Compare(kx.Component, ky.Component), cmp.Compare(kx.ID, ky.ID))
	})
	comps, ids := make([]string, len(batch)), make([]string, len(batch))
	for j, i := range batch {
		comps[j], ids[j] = group[i].key.Component, group[i].key.ID
	}
	rows, err := s.pool.Query(ctx, activateGroupSQL, comps, ids, node)
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
			i := batch[ord-1]
			switch {
			case claimed:
				res[i].a = &passivate.Activation{
					Owner: passivate.Owner{Node: node, Epoch: epoch},
					Record: passivate.Record{
						State: state, StateVersion: stateVer, Version: version, Completions: completions,
					},
				}
			case owner != nil && addr != nil && *owner != node:
				res[i].owned = &passivate.OwnedError{Key: group[i].key, Owner: *owner, Addr: *addr}
			}
			state, completions = nil, nil // fresh buffers for the next row
			return nil
		})
	}
	if err != nil {
		err = fmt.Errorf("group activation of %d instances: %w", len(batch), err)
		for _, i := range batch {
			res[i].err = err
		}
	}
	return res
}
