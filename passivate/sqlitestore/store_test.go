package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
	"github.com/containerd-lite/containerd-lite/passivate/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m, open) }

func open(dsn string) (passivate.Store, error) { return sqlitestore.Open(dsn, nil) }

// newStore opens a store in a fresh file; its DSN is the file's path.
func newStore(t testing.TB) (passivate.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := sqlitestore.Open(path, nil)
	require.NoError(t, err)
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{New: newStore, Open: open})
}

// rawDB opens the file behind the store's back, to inspect or lock it.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestConcurrentOpenFresh opens one fresh file from many handles at once:
// the migration lock makes them take turns, so the schema is applied once.
func TestConcurrentOpenFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "race.db")
	const handles = 8
	stores := make([]*sqlitestore.Store, handles)
	errs := make([]error, handles)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = sqlitestore.Open(path, nil)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "handle %d", i)
		t.Cleanup(func() { _ = stores[i].Close() })
	}

	ctx := context.Background()
	for i, s := range stores {
		require.NoError(t, s.Register(ctx, passivate.Node{Incarnation: string(rune('a' + i)), Addr: "x"}, time.Minute))
	}
	nodes, err := stores[0].LiveNodes(ctx)
	require.NoError(t, err)
	assert.Len(t, nodes, handles, "every handle writes to the same file")

	var applied int
	require.NoError(t, rawDB(t, path).QueryRow(`SELECT count(*) FROM cl_schema_version WHERE version_id = 1`).Scan(&applied))
	assert.Equal(t, 1, applied, "the first migration is recorded once")
	var mode string
	require.NoError(t, rawDB(t, path).QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", mode)
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "reopen.db")
	s, err := sqlitestore.Open(path, nil)
	require.NoError(t, err)
	node := passivate.Node{Incarnation: "n1", Addr: "127.0.0.1:7401"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	key := passivate.Key{Component: "cart", ID: "alice"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: key, Owner: a.Owner, Version: 0, State: []byte("apples"), StateVersion: 3, Completions: []byte("c1")}))
	require.NoError(t, s.Close())

	s, err = sqlitestore.Open(path, nil)
	require.NoError(t, err)
	defer s.Close()
	nodes, err := s.LiveNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []passivate.Node{node}, nodes)
	b, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("apples"), b.State)
	assert.Equal(t, 3, b.StateVersion)
	assert.Equal(t, int64(1), b.Version)
	assert.Equal(t, []byte("c1"), b.Completions)
	assert.Equal(t, a.Owner.Epoch+1, b.Owner.Epoch)
}

func TestDirectoryPath(t *testing.T) {
	dir := t.TempDir()
	s, err := sqlitestore.Open(dir, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.FileExists(t, filepath.Join(dir, sqlitestore.DefaultFile))
	assert.FileExists(t, filepath.Join(dir, sqlitestore.DefaultFile+".lock"))

	// Missing parents are created; characters special in URIs are fine.
	nested := filepath.Join(dir, "a b", "c?d#e%f", "x.db")
	s, err = sqlitestore.Open(nested, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.FileExists(t, nested)
}

func TestOptions(t *testing.T) {
	_, err := sqlitestore.Open(filepath.Join(t.TempDir(), "x.db"), &sqlitestore.Options{MaxGroup: -1})
	assert.Error(t, err)
	_, err = sqlitestore.Open("", nil)
	assert.Error(t, err)
}

// TestCloseStopsEverything checks that Close leaves no goroutine behind
// and that every later call reports ErrClosed.
func TestCloseStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	s, _ := newStore(t)
	node := passivate.Node{Incarnation: "n", Addr: "a"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	key := passivate.Key{Component: "c", ID: "1"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)
	w := &passivate.Write{Key: key, Owner: a.Owner, State: []byte("s")}
	require.NoError(t, s.Save(ctx, w))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	_, err = s.Activate(ctx, key, node.Incarnation)
	assert.ErrorIs(t, err, passivate.ErrClosed)
	assert.ErrorIs(t, s.Save(ctx, w), passivate.ErrClosed)
	assert.ErrorIs(t, s.Release(ctx, key, a.Owner), passivate.ErrClosed)
	assert.ErrorIs(t, s.Register(ctx, node, time.Minute), passivate.ErrClosed)
	assert.ErrorIs(t, s.Renew(ctx, node.Incarnation, time.Minute), passivate.ErrClosed)
	assert.ErrorIs(t, s.Deregister(ctx, node.Incarnation), passivate.ErrClosed)
	assert.ErrorIs(t, s.MarkDead(ctx, node.Incarnation), passivate.ErrClosed)
	_, err = s.LiveNodes(ctx)
	assert.ErrorIs(t, err, passivate.ErrClosed)
	_, err = s.Sweep(ctx, 0)
	assert.ErrorIs(t, err, passivate.ErrClosed)
}

// TestBusyIsNotFenced holds the write lock from another connection past
// the busy timeout: writes fail with the driver's busy error, never with
// ErrFenced or *OwnedError, and succeed once the lock is free.
func TestBusyIsNotFenced(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "busy.db")
	s, err := sqlitestore.Open(path, &sqlitestore.Options{BusyTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	defer s.Close()
	node := passivate.Node{Incarnation: "n", Addr: "a"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	key := passivate.Key{Component: "c", ID: "1"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)

	conn, err := rawDB(t, path).Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	require.NoError(t, err)

	w := &passivate.Write{Key: key, Owner: a.Owner, Version: 0, State: []byte("s"), StateVersion: 1}
	err = s.Save(ctx, w)
	require.Error(t, err)
	assert.NotErrorIs(t, err, passivate.ErrFenced)
	assert.True(t, isBusy(err), "busy error in the chain: %v", err)
	_, err = s.Activate(ctx, passivate.Key{Component: "c", ID: "2"}, node.Incarnation)
	var owned *passivate.OwnedError
	assert.False(t, errors.As(err, &owned))
	assert.True(t, isBusy(err), "busy error in the chain: %v", err)
	assert.True(t, isBusy(s.Renew(ctx, node.Incarnation, time.Minute)))

	_, err = conn.ExecContext(ctx, "ROLLBACK")
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, w), "the refused write left no trace")
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// TestEmptyState keeps a zero-length state apart from no state.
func TestEmptyState(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	defer s.Close()
	node := passivate.Node{Incarnation: "n", Addr: "a"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	key := passivate.Key{Component: "c", ID: "1"}
	a, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: key, Owner: a.Owner, State: []byte{}, StateVersion: 1}))
	require.NoError(t, s.Release(ctx, key, a.Owner))
	_, err = s.Sweep(ctx, 0)
	require.NoError(t, err)
	b, err := s.Activate(ctx, key, node.Incarnation)
	require.NoError(t, err)
	assert.NotNil(t, b.State, "an empty state is still a state")
	assert.Equal(t, int64(1), b.Version, "and is not swept")
}

// TestMigrationRerun forgets that the schema was applied: applying it again
// over the existing tables must succeed and keep the data.
func TestMigrationRerun(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	node := passivate.Node{Incarnation: "n", Addr: "a"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	require.NoError(t, s.Close())

	_, err := rawDB(t, path).Exec(`DELETE FROM cl_schema_version WHERE version_id > 0`)
	require.NoError(t, err)
	s2, err := sqlitestore.Open(path, nil)
	require.NoError(t, err)
	defer s2.Close()
	nodes, err := s2.LiveNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []passivate.Node{node}, nodes)
}
