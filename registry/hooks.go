package registry

import "context"

// Lifecycle hooks. A state type implements any of them, with a pointer
// receiver, to take part in its instance's life cycle (EJB PostActivate,
// PrePassivate and Remove; Orleans OnActivate and OnDeactivate).
//
// Concurrency: a node calls hooks and methods of one instance one at a time,
// never concurrently, each inside the instance's turn. Different instances
// run in parallel. A hook must not keep ctx after it returns.

// Activator is called after the instance's state has been loaded (or created
// empty) on a node, before its first call there. Rebuild transient fields
// (tagged `cbor:"-"`) here. An error fails the call that triggered the
// activation; the next call tries again.
type Activator interface {
	OnActivate(ctx context.Context) error
}

// Passivator is called before the instance leaves memory on this node: idle
// timeout, eviction, ownership loss or shutdown. Release transient resources
// here. Changes it makes to the state are not saved, and its error is only
// reported.
type Passivator interface {
	OnPassivate(ctx context.Context) error
}

// Remover is called after a removing method (see [Removes]) has ended the
// instance and its removal is durable. Its error is only reported.
type Remover interface {
	OnRemove(ctx context.Context) error
}
