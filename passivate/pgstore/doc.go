// Package pgstore is the PostgreSQL passivate.Store, the production store
// of containerd-lite, on jackc/pgx/v5 (pgxpool).
//
// # Schema
//
// The tables cl_nodes and cl_instances live in the first schema of the
// connection's search_path. Migrate (or `containerd-lite migrate --store
// URL`) creates and upgrades them; Open refuses a database whose schema is
// missing or older than the build with ErrNotMigrated.
//
// # Semantics
//
// Every operation but Sweep is one statement and one round trip (a few
// when claims on one instance race). Activate is a single INSERT ... ON
// CONFLICT DO UPDATE that claims the instance only if no live node owns
// it; Save is an UPDATE conditional on owner, epoch and version. Lease
// times are kept by the database clock.
//
// Concurrent Saves are grouped (passivate.GroupCommitter): each group is
// one UPDATE ... FROM unnest(...) statement, one round trip and one
// implicit transaction, and each write still succeeds or is fenced on its
// own condition. Concurrent Activates are grouped the same way, into one
// INSERT ... SELECT ... ON CONFLICT statement per group, with each claim
// still judged on its own (after a failover, the dead node's instances
// come back a group at a time). A few groups of each are in flight at once
// (Options.Flushers); a lone operation runs a plain statement.
//
// # Availability
//
// Give a multi-host URL with target_session_attrs=read-write to follow a
// PostgreSQL failover (pg_auto_failover, Patroni). The SQL avoids advisory
// locks and LISTEN/NOTIFY so that it runs on CockroachDB and YugabyteDB too.
//
// While the database is unreachable, operations fail within their
// context's deadline (a dial is bounded by connect_timeout, or
// Options.ConnectTimeout), and the pool reconnects by itself once the
// database is back. To find broken connections, pgxpool pings a connection
// idle for a second or more before handing it out: one more round trip
// after a quiet spell.
package pgstore
