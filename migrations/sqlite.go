package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed sqlite/*.sql
var sqliteFiles embed.FS

// sqliteVersionTable is where goose records the applied versions of the
// SQLite schema.
const sqliteVersionTable = "cl_schema_version"

// ApplySQLite brings the schema of the embedded store in db up to date.
//
// It does not serialise appliers on other connections: SQLite has no
// session lock for goose to take, so the caller holds one across the call
// (sqlitestore.Open takes a file lock beside the database file).
func ApplySQLite(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(sqliteFiles, "sqlite")
	if err != nil {
		return fmt.Errorf("migrations: sqlite: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys,
		goose.WithTableName(sqliteVersionTable),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrations: sqlite: %w", err)
	}
	// p.Close would close db, which belongs to the caller.
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: sqlite: %w", err)
	}
	return nil
}
