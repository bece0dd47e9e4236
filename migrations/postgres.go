package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed postgres/*.sql
var postgresFiles embed.FS

const (
	// PostgresVersionTable is where goose records the applied versions of
	// the PostgreSQL schema, in the connection's current schema.
	PostgresVersionTable = "cl_schema_version"
	// postgresLockTable holds the row lock that serialises appliers.
	postgresLockTable = "cl_schema_lock"
	// postgresLockRetry is how often a waiting applier retries the lock;
	// postgresLockTries bounds the wait to about five minutes.
	postgresLockRetry = 200 * time.Millisecond
	postgresLockTries = 1500
)

// ApplyPostgres brings the PostgreSQL schema in db's current schema (the
// first schema of its search_path) up to date and returns the versions it
// applied, in order; none when the schema was already current.
//
// It is safe to call from several processes at once: appliers serialise on
// a lock row in table cl_schema_lock (a table lock rather than an advisory
// lock, so that it works on CockroachDB and YugabyteDB too), and the others
// find nothing left to apply. A lock left by a killed applier expires after
// 30 seconds.
func ApplyPostgres(ctx context.Context, db *sql.DB) ([]int64, error) {
	p, err := newPostgresProvider(db)
	if err != nil {
		return nil, err
	}
	// p.Close would close db, which belongs to the caller.
	results, err := p.Up(ctx)
	var applied []int64
	for _, r := range results {
		if r.Error == nil {
			applied = append(applied, r.Source.Version)
		}
	}
	if err != nil {
		return applied, fmt.Errorf("migrations: postgres: %w", err)
	}
	return applied, nil
}

// PostgresVersion returns the schema version that ApplyPostgres leads to:
// the version of the newest embedded PostgreSQL migration. A store checks
// it against the database before use.
func PostgresVersion() (int64, error) { return postgresVersion() }

var postgresVersion = sync.OnceValues(func() (int64, error) {
	names, err := fs.Glob(postgresFiles, "postgres/*.sql")
	if err != nil {
		return 0, fmt.Errorf("migrations: postgres: %w", err)
	}
	var latest int64
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return 0, fmt.Errorf("migrations: postgres: %s: %w", name, err)
		}
		latest = max(latest, v)
	}
	return latest, nil
})

func newPostgresProvider(db *sql.DB) (*goose.Provider, error) {
	fsys, err := fs.Sub(postgresFiles, "postgres")
	if err != nil {
		return nil, fmt.Errorf("migrations: postgres: %w", err)
	}
	locker, err := lock.NewPostgresTableLocker(
		lock.WithTableName(postgresLockTable),
		lock.WithTableLockTimeout(postgresLockRetry, postgresLockTries),
		lock.WithTableLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		return nil, fmt.Errorf("migrations: postgres: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(PostgresVersionTable),
		goose.WithLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("migrations: postgres: %w", err)
	}
	return p, nil
}
