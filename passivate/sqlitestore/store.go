package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/containerd-lite/containerd-lite/migrations"
	"github.com/containerd-lite/containerd-lite/passivate"
)

// DefaultFile is the database file that Open uses when given a directory.
const DefaultFile = "containerd-lite.db"

// openTimeout bounds Open: waiting for the migration lock, and migrating.
const openTimeout = time.Minute

// Options tunes a Store. A nil *Options, like zero fields, means defaults.
type Options struct {
	// BusyTimeout is how long a statement waits for the write lock while
	// another connection, usually another process, holds it. Default 10s.
	BusyTimeout time.Duration
	// MaxGroup bounds the Saves committed in one transaction. Default 64;
	// 1 turns group commit off.
	MaxGroup int
}

func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.BusyTimeout < 0 || c.MaxGroup < 0 {
		return c, errors.New("sqlitestore: negative BusyTimeout or MaxGroup")
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 10 * time.Second
	}
	if c.MaxGroup == 0 {
		c.MaxGroup = 64
	}
	return c, nil
}

// Store is a passivate.Store in a SQLite file. It is safe for concurrent
// use, and other Stores, in this process or others, may open the same file.
type Store struct {
	db     *sql.DB // one connection, see the package doc
	group  *passivate.GroupCommitter
	closed atomic.Bool
}

var _ passivate.Store = (*Store)(nil)

// Open opens the store in the database file at path, creating the file,
// its parent directories and its schema as needed. If path is an existing
// directory, the file is DefaultFile in it.
func Open(path string, opts *Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	file, err := resolve(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn(file, o))
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open %s: %w", file, err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(db, file); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db}
	s.group = passivate.NewGroupCommitter(passivate.GroupConfig{
		MaxGroup: o.MaxGroup,
		Flushers: 1, // one connection: a second flusher would only wait for it
		Timeout:  2 * o.BusyTimeout,
	}, s.flush)
	return s, nil
}

// resolve returns the absolute path of the database file for path, with
// its parent directories created.
func resolve(path string) (string, error) {
	if path == "" {
		return "", errors.New("sqlitestore: empty path")
	}
	file, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("sqlitestore: %w", err)
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		file = filepath.Join(file, DefaultFile)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", fmt.Errorf("sqlitestore: %w", err)
	}
	return file, nil
}

// dsn is the driver's name for file: a file: URI, so that any character in
// the path is escaped, with the connection's pragmas and its BEGIN mode.
func dsn(file string, o Options) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(o.BusyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(file), RawQuery: q.Encode()}
	return u.String()
}

// migrate connects and applies the schema while holding the migration lock,
// so that processes opening a fresh file at once take turns: the first
// switches it to WAL and creates the tables, the others find them.
func migrate(db *sql.DB, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, file+".lock")
	if err != nil {
		return fmt.Errorf("sqlitestore: migration lock: %w", err)
	}
	defer unlock()
	if err := migrations.ApplySQLite(ctx, db); err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", file, err)
	}
	return nil
}

// Close stops the group committer, letting a group in flight commit and
// failing the Saves still queued, then closes the database. Every later
// call returns passivate.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.group.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sqlitestore: close: %w", err)
	}
	return nil
}

// fail wraps err, a failure of operation op. Busy, locked and I/O errors
// stay in the chain as *sqlite.Error; callers treat them as unavailable.
// An operation that raced Close reports ErrClosed.
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() {
		return passivate.ErrClosed
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, err)
}

// inTx runs fn in a transaction, which the DSN begins IMMEDIATE, and
// commits it, or rolls it back if fn fails. fn must use tx only: the
// store's single connection is busy until inTx returns.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// now is the store's clock: the host's wall clock, in unix nanoseconds.
func now() int64 { return time.Now().UnixNano() }

// GroupStats reports how Saves were grouped into commits.
func (s *Store) GroupStats() passivate.GroupStats { return s.group.Stats() }
