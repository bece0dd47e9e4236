// Package container is the runtime that hosts stateful component instances
// on a node.
//
// An instance, addressed by (component, id), is activated on first call: the
// node claims it in the store (bumping its owner epoch) and loads its state,
// or creates it empty. Calls to one instance then run one at a time (its
// turn); calls to different instances run in parallel. After a call that
// changed the state, the new state is written with a conditional write on
// the owner epoch and version, together with the call's completion record,
// and only then is the reply released. A call that fails or panics leaves
// the state as it was. A call that leaves the state unchanged writes
// nothing.
//
// A retried call (same client id and sequence number) whose completion
// record exists returns the recorded reply without running again, on
// whichever node it lands. A write refused by the store means another node
// took the instance over: this node drops its activation and answers
// unavailable, so the client retries elsewhere.
//
// The node holds a lease in the store, renewed by heartbeats, and serves an
// instance from memory only while the lease is valid by its own monotonic
// clock, checked on every call. When the lease is lost every activation is
// discarded. Instances idle past their component's timeout, or beyond the
// cap on active instances (least recently used first), are passivated and
// their ownership released. Shutdown stops taking calls, finishes those in
// flight and deregisters the node, so that other nodes take its instances
// over at once.
package container
