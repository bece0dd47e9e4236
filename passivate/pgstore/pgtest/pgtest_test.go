package pgtest_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
)

// TestDSNIsolatesAndCleansUp gives two tests schemas of their own, each
// migrated, and drops them when the tests end.
func TestDSNIsolatesAndCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var schemas []string
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			conn, err := pgx.Connect(ctx, pgtest.DSN(t))
			require.NoError(t, err)
			defer conn.Close(ctx)
			var schema string
			require.NoError(t, conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema))
			schemas = append(schemas, schema)
			var n int
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM cl_instances`).Scan(&n), "migrated")
			assert.Zero(t, n)
			_, err = conn.Exec(ctx, `INSERT INTO cl_instances (component, id) VALUES ('c', 'i')`)
			require.NoError(t, err, "each schema is empty, so the same key fits in both")
		})
	}
	require.Len(t, schemas, 2)
	assert.NotEqual(t, schemas[0], schemas[1])

	conn, err := pgx.Connect(ctx, pgtest.BaseDSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var left int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)`, schemas).Scan(&left))
	assert.Zero(t, left, "the schemas are dropped")
}

// fatalTB records the first Fatalf and ends its goroutine, as testing does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestUnreachableFails checks that a missing server fails the test, never
// skips it, and says how to provide one.
func TestUnreachableFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	t.Setenv(pgtest.EnvDSN, "postgres://postgres@"+addr+"/test?sslmode=disable")

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgtest.DSN(f)
	}()
	<-done
	assert.Contains(t, f.msg, "PostgreSQL is unreachable")
	assert.Contains(t, f.msg, pgtest.EnvDSN)
	assert.Contains(t, f.msg, "pg_ctlcluster --skip-systemctl-redirect")
	t.Log(f.msg)
}
