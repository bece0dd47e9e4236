// Package memstore is an in-memory passivate.Store for unit tests and
// single-process experiments. It keeps the full contract (ownership, epochs,
// leases, fencing) but nothing survives the process.
package memstore
