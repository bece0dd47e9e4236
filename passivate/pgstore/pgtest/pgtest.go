package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/containerd-lite/containerd-lite/migrations"
)

const (
	// EnvDSN names the environment variable holding the test server's URL.
	EnvDSN = "CONTAINERD_LITE_TEST_DSN"
	// DefaultDSN is the test server used when EnvDSN is not set.
	DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

	connectTimeout = 5 * time.Second
	setupTimeout   = 60 * time.Second
	startServer    = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)

// BaseDSN returns the URL (or keyword/value string) of the test server:
// $CONTAINERD_LITE_TEST_DSN, else DefaultDSN.
func BaseDSN() string {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// DSN creates a fresh schema on the test server, applies the migrations to
// it, and returns the server's DSN with search_path set to that schema. The
// schema is dropped when the test and its subtests end; close every
// connection to it before then (stores opened after calling DSN and closed
// with t.Cleanup are).
func DSN(t testing.TB) string {
	t.Helper()
	dsn := EmptyDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cfg := parse(t, dsn)
	db := stdlib.OpenDB(*cfg.ConnConfig)
	defer db.Close()
	if _, err := migrations.ApplyPostgres(ctx, db); err != nil {
		t.Fatalf("pgtest: migrating the test schema: %v", err)
	}
	return dsn
}

// EmptyDSN is DSN without the migrations: the schema it points to is empty.
func EmptyDSN(t testing.TB) string {
	t.Helper()
	base := BaseDSN()
	schema := "cltest_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn := connect(ctx, t, base)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("pgtest: creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, parse(t, base).ConnConfig)
		if err == nil {
			defer conn.Close(context.Background())
			_, err = conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		}
		if err != nil {
			t.Errorf("pgtest: dropping schema %s (is a connection to it still open?): %v", schema, err)
		}
	})
	return withSearchPath(base, schema)
}

// connect opens a connection to dsn or fails the test with directions.
func connect(ctx context.Context, t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	cfg := parse(t, dsn)
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL is unreachable at %s: %v\n"+
			"The tests need a PostgreSQL server. Either set %s to the URL of one "+
			"(e.g. %s=postgres://user:password@host:5432/dbname), "+
			"or start the local server with:\n\t%s",
			redact(dsn), err, EnvDSN, EnvDSN, startServer)
	}
	return conn
}

// parse parses dsn as pgxpool does, which strips the pool_* parameters.
func parse(t testing.TB, dsn string) *pgxpool.Config {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("pgtest: bad test DSN in %s: %v", EnvDSN, err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	return cfg
}

// withSearchPath returns dsn with its search_path set to schema.
func withSearchPath(dsn, schema string) string {
	if !isURL(dsn) {
		// Keyword/value: a later keyword overrides an earlier one.
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// Multi-host URLs may not parse as a net/url; append by hand.
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "search_path=" + url.QueryEscape(schema)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func isURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// redact hides the password of a URL; a keyword/value string is not shown.
func redact(dsn string) string {
	if !isURL(dsn) {
		return "the DSN in " + EnvDSN
	}
	if u, err := url.Parse(dsn); err == nil {
		return u.Redacted()
	}
	return "the DSN in " + EnvDSN
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
