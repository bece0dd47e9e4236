package passivate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors.
var (
	// ErrFenced: a conditional write found another owner, epoch or version
	// than the writer's. The writer lost its activation (it is a zombie).
	ErrFenced = errors.New("passivate: write refused: the instance is owned by a newer activation")
	// ErrLeaseLost: the node's lease expired, it was marked dead, or it was
	// never registered. Its activations may have been taken over.
	ErrLeaseLost = errors.New("passivate: node lease lost")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("passivate: store closed")
)

// Key addresses one instance.
type Key struct {
	Component string
	ID        string
}

func (k Key) String() string { return k.Component + "/" + k.ID }

// Node is a registered container node.
type Node struct {
	// Incarnation is unique per process start.
	Incarnation string
	// Addr is the node's advertised RPC address.
	Addr string
}

// Owner is one activation's claim on an instance.
type Owner struct {
	Node  string // the owning node's incarnation
	Epoch int64  // bumped by every successful Activate
}

// Record is the stored part of an instance.
type Record struct {
	// State is nil for an instance that has no state yet or was removed.
	State []byte
	// StateVersion is the component's state encoding version of State.
	StateVersion int
	// Version counts writes; 0 for an instance never written. A write must
	// name the version it read and stores Version+1.
	Version int64
	// Completions are the encoded completion records of exactly-once calls,
	// opaque to the store and written atomically with State.
	Completions []byte
}

// Activation is a successful claim: the owner epoch it holds and the record
// as of the claim.
type Activation struct {
	Owner Owner
	Record
}

// Write is a conditional write of an instance's record.
type Write struct {
	Key Key
	// Owner and Version are the condition: the stored owner, epoch and
	// version must equal them.
	Owner   Owner
	Version int64

	State        []byte
	StateVersion int
	Completions  []byte
	// Remove ends the instance: its state is deleted and its ownership
	// released, while Version and Completions are kept (a tombstone) so that
	// a retried removing call still finds its completion record. Sweep
	// deletes tombstones later.
	Remove bool
}

// OwnedError is returned by Activate when a live node owns the instance.
type OwnedError struct {
	Key Key
	// Owner is the owning node's incarnation, Addr its advertised address.
	Owner string
	Addr  string
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("passivate: %s is owned by node %s at %s", e.Key, e.Owner, e.Addr)
}

// Instances stores instance records and their ownership.
type Instances interface {
	// Activate claims key for node and returns its record. It succeeds when
	// the instance does not exist yet (creating an empty record), has no
	// owner, is owned by node, or its owner's lease expired, or the owner was
	// deregistered or marked dead; each success bumps the owner epoch.
	// Otherwise it returns *OwnedError. One round trip to the store.
	Activate(ctx context.Context, key Key, node string) (*Activation, error)
	// Save performs the conditional write w, returning ErrFenced when the
	// condition does not hold. It returns only once the write is durable.
	// Concurrent Saves may be committed together (group commit); each one
	// succeeds or fails on its own condition.
	Save(ctx context.Context, w *Write) error
	// Release gives up owner's claim on key, if it still holds it, so that
	// another node can activate it at once. Releasing a claim that is no
	// longer held is not an error.
	Release(ctx context.Context, key Key, owner Owner) error
}

// Membership stores the live nodes and their leases. Lease times are kept
// by the store's clock (the database server's, or the host's for embedded
// stores), never compared across client clocks.
type Membership interface {
	// Register adds or replaces node with a lease of the given length.
	// Registering an incarnation that lost its lease or was marked dead
	// would revive it: after ErrLeaseLost a node registers under a new
	// incarnation.
	Register(ctx context.Context, node Node, lease time.Duration) error
	// Renew extends the node's lease to now+lease. It fails with
	// ErrLeaseLost if the lease had already expired, the node was marked
	// dead, or it is not registered.
	Renew(ctx context.Context, incarnation string, lease time.Duration) error
	// Deregister removes the node: its instances become claimable at once.
	Deregister(ctx context.Context, incarnation string) error
	// MarkDead records that a node is proven dead (its port refuses
	// connections), so that its instances become claimable at once.
	MarkDead(ctx context.Context, incarnation string) error
	// LiveNodes returns the nodes whose lease is valid, ordered by address
	// (byte order), then incarnation.
	LiveNodes(ctx context.Context) ([]Node, error)
}

// Store is what a container needs from its storage.
type Store interface {
	Instances
	Membership
	// Sweep deletes what is older than age and no longer needed: tombstones
	// and never-written records with no live owner, and nodes whose lease
	// expired. It returns the number of instance records deleted. age must
	// exceed the clients' retry window: a removing call retried after its
	// tombstone was swept finds no completion record and runs again.
	Sweep(ctx context.Context, age time.Duration) (int, error)
	// Close releases the store's resources. Pending operations fail.
	Close() error
}
