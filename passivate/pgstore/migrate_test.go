package pgstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/migrations"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
)

// allVersions lists the embedded migration versions, 1 up to the latest.
func allVersions(t testing.TB) []int64 {
	latest, err := migrations.PostgresVersion()
	require.NoError(t, err)
	require.Positive(t, latest)
	var vs []int64
	for v := int64(1); v <= latest; v++ {
		vs = append(vs, v)
	}
	return vs
}

// TestMigrateConcurrently starts several appliers at once on a fresh
// schema, as nodes starting together do: every migration is applied exactly
// once, every applier succeeds, and a re-run finds nothing to do.
func TestMigrateConcurrently(t *testing.T) {
	dsn := pgtest.EmptyDSN(t)
	ctx := ctxT(t, 2*time.Minute)
	const appliers = 4
	var wg sync.WaitGroup
	applied := make([][]int64, appliers)
	errs := make([]error, appliers)
	start := make(chan struct{})
	for i := range appliers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			applied[i], errs[i] = pgstore.Migrate(ctx, dsn)
		}()
	}
	close(start)
	wg.Wait()
	var all []int64
	for i := range appliers {
		require.NoError(t, errs[i], "applier %d", i)
		all = append(all, applied[i]...)
	}
	slices.Sort(all)
	assert.Equal(t, allVersions(t), all, "each migration applied exactly once")

	again, err := pgstore.Migrate(ctx, dsn)
	require.NoError(t, err)
	assert.Empty(t, again, "a re-run applies nothing")

	s, err := pgstore.Open(ctx, dsn, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

// TestMigrationSQLIsIdempotent makes goose forget the applied versions and
// apply them again over the existing tables: the SQL itself must tolerate
// a re-run (IF NOT EXISTS), keeping the rows.
func TestMigrationSQLIsIdempotent(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := ctxT(t, time.Minute)
	conn := connect(t, dsn)
	_, err := conn.Exec(ctx, `INSERT INTO cl_nodes (incarnation, addr, lease_until) VALUES ('n', 'a', now())`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `DELETE FROM `+migrations.PostgresVersionTable+` WHERE version_id > 0`)
	require.NoError(t, err)

	_, err = pgstore.Open(ctx, dsn, nil)
	require.ErrorIs(t, err, pgstore.ErrNotMigrated, "an out-of-date schema is refused")
	assert.ErrorContains(t, err, "is at version 0")

	applied, err := pgstore.Migrate(ctx, dsn)
	require.NoError(t, err)
	assert.Equal(t, allVersions(t), applied)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM cl_nodes`).Scan(&n))
	assert.Equal(t, 1, n, "re-running the migrations keeps the data")
}

// TestOpenUnmigrated checks the error that tells the user what to do.
func TestOpenUnmigrated(t *testing.T) {
	dsn := pgtest.EmptyDSN(t)
	ctx := ctxT(t, 30*time.Second)
	s, err := pgstore.Open(ctx, dsn, nil)
	require.ErrorIs(t, err, pgstore.ErrNotMigrated)
	assert.Nil(t, s)
	assert.ErrorContains(t, err, "containerd-lite migrate --store URL")
	assert.ErrorContains(t, err, "cl_schema_version not found")
	t.Log(err)

	// Migrating makes it usable.
	applied, err := pgstore.Migrate(ctx, dsn)
	require.NoError(t, err)
	assert.Equal(t, allVersions(t), applied)
	s, err = pgstore.Open(ctx, dsn, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
