package main

import (
	"context"
	"fmt"

	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
)

func (m *Main) migrate(ctx context.Context, args []string) error {
	fs := m.flags("migrate", "--store URL|PATH")
	store := fs.String("store", "", "PostgreSQL URL (postgres://...) or embedded store path")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *store == "" || fs.NArg() > 0 {
		fs.Usage()
		return usagef("migrate needs --store and no arguments")
	}
	if !isPostgres(*store) {
		s, err := sqlitestore.Open(*store, nil) // the embedded store migrates as it opens
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "embedded store %s is up to date\n", *store)
		return s.Close()
	}
	applied, err := pgstore.Migrate(ctx, *store)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(m.Stdout, "schema is up to date (%s)\n", redact(*store))
		return nil
	}
	fmt.Fprintf(m.Stdout, "applied migrations %v (%s)\n", applied, redact(*store))
	return nil
}
