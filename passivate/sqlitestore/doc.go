// Package sqlitestore is the embedded default passivate.Store: one SQLite
// file, through the pure-Go driver modernc.org/sqlite, that needs no server
// and that several processes on one host may share (that is how several
// `serve` nodes share one embedded store).
//
// Sharing rests on SQLite's own locking. The file is in WAL mode, so readers
// never block the writer; every write transaction begins IMMEDIATE, taking
// the write lock up front instead of failing to upgrade a read lock later,
// and waits up to a busy timeout for another process to finish. Commits use
// synchronous=FULL: a write is durable when the call returns.
//
// Each Store keeps a single connection. SQLite has one writer at a time
// anyway, and every operation but LiveNodes writes, so a read pool would
// buy nothing. Saves go through a passivate.GroupCommitter with one flusher:
// the Saves that queue up while a group commits share the next transaction,
// one conditional UPDATE each and one COMMIT, so one fsync for the group.
//
// Times (leases, record ages) are unix nanoseconds from the host clock,
// which all processes sharing the file read. Open applies the schema in
// migrations/sqlite under an exclusive lock on the file <db>.lock, so
// processes opening a fresh file at once do not race.
package sqlitestore
