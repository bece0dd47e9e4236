// Package passivate defines the Store contract: where instance state lives
// between calls and across node failures, and how nodes fence each other.
//
// The contract is small and strict so that every guarantee of the runtime
// rests on a single conditional write:
//
//   - Activate claims an instance for a node, bumping its owner epoch, when
//     it is unowned, released, owned by a node whose lease has expired or
//     that was marked dead, or already owned by the same node. Otherwise it
//     fails with *OwnedError naming the live owner.
//   - Save writes new state only if the stored owner, epoch and version are
//     the ones the writer activated with, atomically with the completion
//     records of exactly-once calls. A refused write is ErrFenced: the writer
//     is a zombie and must drop its activation.
//   - Nodes register with a lease they renew; a node whose lease lapsed or
//     that was marked dead gets ErrLeaseLost and must drop every activation.
//
// Implementations live in subpackages: memstore (in memory, for tests),
// sqlitestore (the embedded default, several processes on one host) and
// pgstore (PostgreSQL). Each passes the conformance suite in storetest.
package passivate
