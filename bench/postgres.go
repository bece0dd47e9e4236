package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// scratch is the schema a run works in.
type scratch struct {
	base string // the URL given
	name string // bench_<random>
	url  string // base with search_path set to the schema
}

const setupTimeout = 30 * time.Second

// createScratch creates a fresh schema in the database of base.
func createScratch(ctx context.Context, base string) (*scratch, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &scratch{base: base, name: "bench_" + hex.EncodeToString(b[:])}
	u, err := withSearchPath(base, s.name)
	if err != nil {
		return nil, err
	}
	s.url = u
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	conn, err := connect(ctx, base)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{s.name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("bench: create scratch schema %s (the user needs the CREATE privilege on the database): %w", s.name, err)
	}
	return s, nil
}

// drop drops the schema and everything in it. It runs after an interrupt
// too, so it does not take the run's context.
func (s *scratch) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := connect(ctx, s.base)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s.name}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("bench: drop scratch schema %s: %w", s.name, err)
	}
	return nil
}

func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err) // pgconn redacts the password
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: connect to %s: %w", redact(dsn), err)
	}
	return conn, nil
}

// withSearchPath returns the URL u with its search_path set to schema,
// replacing any it had.
func withSearchPath(u, schema string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		// A multi-host URL need not parse as a net/url: append by hand.
		if strings.Contains(u, "search_path=") {
			return "", fmt.Errorf("bench: cannot replace the search_path of %s", redact(u))
		}
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		return u + sep + "search_path=" + url.QueryEscape(schema), nil
	}
	q := pu.Query()
	q.Set("search_path", schema)
	pu.RawQuery = q.Encode()
	return pu.String(), nil
}

// redact hides the password of a URL.
func redact(u string) string {
	if pu, err := url.Parse(u); err == nil {
		return pu.Redacted()
	}
	if at := strings.LastIndex(u, "@"); at >= 0 {
		if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
			cred := u[scheme+3 : at]
			if i := strings.Index(cred, ":"); i >= 0 {
				return u[:scheme+3] + cred[:i] + ":xxxxx" + u[at:]
			}
		}
	}
	return u
}

// rawUpsert is the raw-upsert workload: one row per caller, one
// conditional upsert per call, no grouping.
type rawUpsert struct {
	pool    *pgxpool.Pool
	state   []byte
	ids     []string
	version []int64 // per caller: the version its row has
}

const (
	rawTable = `CREATE TABLE IF NOT EXISTS bench_raw (
	id      TEXT PRIMARY KEY,
	state   BYTEA NOT NULL,
	version BIGINT NOT NULL
)`
	// rawUpsertSQL writes a row conditionally on its version, creating it
	// if it does not exist yet; a stale version matches nothing.
	rawUpsertSQL = `INSERT INTO bench_raw AS r (id, state, version) VALUES ($1, $2, 1)
ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = r.version + 1
WHERE r.version = $3`
)

// newRawUpsert connects a pool of c connections to the scratch schema and
// creates one row per caller, named after tag.
func newRawUpsert(ctx context.Context, scratchURL string, c int, state []byte, tag string) (*rawUpsert, error) {
	cfg, err := pgxpool.ParseConfig(scratchURL)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cfg.MaxConns = int32(c)
	cfg.MinConns = int32(c)
	cfg.ConnConfig.RuntimeParams["application_name"] = "containerd-lite-bench"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	r := &rawUpsert{pool: pool, state: state, ids: make([]string, c), version: make([]int64, c)}
	if _, err := pool.Exec(ctx, rawTable); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: create the raw table: %w", err)
	}
	for w := range c {
		r.ids[w] = fmt.Sprintf("%s-w%d", tag, w)
		if err := r.call(ctx, w); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return r, nil
}

func (r *rawUpsert) call(ctx context.Context, w int) error {
	tag, err := r.pool.Exec(ctx, rawUpsertSQL, r.ids[w], r.state, r.version[w])
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("raw upsert of %s at version %d matched %d rows", r.ids[w], r.version[w], tag.RowsAffected())
	}
	r.version[w]++
	return nil
}

func (r *rawUpsert) close() { r.pool.Close() }
