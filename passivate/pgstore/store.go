package pgstore

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/containerd-lite/containerd-lite/migrations"
	"github.com/containerd-lite/containerd-lite/passivate"
)

// ErrNotMigrated is returned by Open when the database has no
// containerd-lite schema, or an older one than this build needs.
var ErrNotMigrated = errors.New("pgstore: database schema is missing or out of date")

// Store is a passivate.Store on PostgreSQL (or a PostgreSQL-wire database
// such as CockroachDB or YugabyteDB). It is safe for concurrent use; Saves
// from many goroutines are committed together in batches (group commit).
type Store struct {
	pool      *pgxpool.Pool
	group     *passivate.GroupCommitter
	act       *passivate.Batcher[activateReq, activateRes]
	closed    atomic.Bool
	closeOnce sync.Once
}

var _ passivate.Store = (*Store)(nil)

// Open connects to the database at url and checks that its schema is
// current (see Migrate). url is a postgres:// or postgresql:// URL, or a
// keyword/value string, as pgx accepts: several hosts
// (postgres://a:5432,b:5432/db?target_session_attrs=read-write), the pgx
// pool parameters (pool_max_conns, ...), and run-time parameters such as
// search_path, which selects the schema holding the tables.
//
// ctx bounds the connection check only; the Store lives until Close.
func Open(ctx context.Context, url string, opts *Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(url, o)
	if err != nil {
		return nil, err
	}
	if cfg.MaxConns <= int32(o.Flushers) {
		return nil, fmt.Errorf("pgstore: the pool has %d connections (pool_max_conns), which must exceed Options.Flushers (%d)", cfg.MaxConns, o.Flushers)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if err := checkSchema(ctx, pool, cfg.ConnConfig.RuntimeParams["search_path"]); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{pool: pool}
	s.group = passivate.NewGroupCommitter(passivate.GroupConfig{
		MaxGroup: o.MaxGroup,
		Flushers: o.Flushers,
		Timeout:  o.FlushTimeout,
	}, s.flush)
	s.act = passivate.NewBatcher(passivate.GroupConfig{
		MaxGroup: o.MaxGroup,
		Flushers: o.Flushers,
		Timeout:  o.FlushTimeout,
	}, s.activateGroup)
	return s, nil
}

// Migrate applies the embedded schema migrations to the database at url
// (in the first schema of its search_path) and returns the versions it
// applied; none when the schema was already current. Several processes may
// migrate at once: they serialise on a lock row, and all but the first find
// nothing to do.
func Migrate(ctx context.Context, url string) ([]int64, error) {
	o, err := (*Options)(nil).withDefaults()
	if err != nil {
		return nil, err
	}
	// pgxpool.ParseConfig strips the pool_* parameters, which the server
	// would reject as unknown run-time parameters.
	cfg, err := parseConfig(url, o)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	defer db.Close()
	return migrations.ApplyPostgres(ctx, db)
}

func parseConfig(url string, o Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgconn's ParseConfigError redacts the password.
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	// A pooled connection idle for a second is pinged before use; a ping
	// on a connection cut without a reset must not hang longer than a
	// connect would.
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = cfg.ConnConfig.ConnectTimeout
	}
	switch {
	case o.MaxConns > 0:
		cfg.MaxConns = o.MaxConns
	case !hasParam(url, "pool_max_conns"):
		// Leave room beside the flushers for Activate and the rest.
		cfg.MaxConns = max(cfg.MaxConns, int32(o.Flushers)+8)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "containerd-lite"
	}
	return cfg, nil
}

// hasParam reports whether the connection string sets the parameter name.
func hasParam(connString, name string) bool {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		// Not url.Parse: multi-host URLs need not parse as one.
		_, query, _ := strings.Cut(connString, "?")
		q, err := neturl.ParseQuery(query)
		return err == nil && q.Has(name)
	}
	for _, f := range strings.Fields(connString) {
		if strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

// checkSchema fails with ErrNotMigrated unless the schema is at least the
// version this build was made with. A newer schema is fine: during a rolling
// upgrade the new nodes migrate while the old ones still run.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, searchPath string) error {
	want, err := migrations.PostgresVersion()
	if err != nil {
		return err
	}
	where := "the current schema"
	if searchPath != "" {
		where = fmt.Sprintf("search_path %q", searchPath)
	}
	const fix = `run "containerd-lite migrate --store URL" with this store's URL first`
	var have *int64
	err = pool.QueryRow(ctx, `SELECT max(version_id) FROM `+migrations.PostgresVersionTable+` WHERE is_applied`).Scan(&have)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		return fmt.Errorf("%w: table %s not found in %s: %s", ErrNotMigrated, migrations.PostgresVersionTable, where, fix)
	case err != nil:
		return fmt.Errorf("pgstore: checking the schema version: %w", err)
	case have == nil || *have < want:
		var v int64
		if have != nil {
			v = *have
		}
		return fmt.Errorf("%w: %s is at version %d, this build needs %d: %s", ErrNotMigrated, where, v, want, fix)
	}
	return nil
}

// Close fails the Saves still queued, waits for the batches in flight, and
// closes the connections. Operations after Close return passivate.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.group.Close()
		s.act.Close()
		s.pool.Close()
	})
	return nil
}

// fail wraps err, the failure of operation op, for the caller. Operations
// cut short by Close report passivate.ErrClosed.
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("pgstore: %s: %w", op, passivate.ErrClosed)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// GroupStats reports how Saves were grouped into commits.
func (s *Store) GroupStats() passivate.GroupStats { return s.group.Stats() }

// ActivationStats reports how Activates were grouped: Groups groups for
// Writes Activates (the retries of racing claims, which run on their own,
// are not counted).
func (s *Store) ActivationStats() passivate.GroupStats { return s.act.Stats() }
