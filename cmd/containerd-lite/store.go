package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
)

// DefaultDataDir holds the embedded store when serve gets no --store.
const DefaultDataDir = "containerd-lite-data"

func isPostgres(spec string) bool {
	return strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://")
}

// openStore opens the store named by spec: a PostgreSQL URL, a path for the
// embedded store, or "" for the embedded store in DefaultDataDir. It
// returns a description for logs that hides passwords.
func openStore(ctx context.Context, spec string, migrate bool) (passivate.Store, string, error) {
	switch {
	case isPostgres(spec):
		if migrate {
			if _, err := pgstore.Migrate(ctx, spec); err != nil {
				return nil, "", err
			}
		}
		s, err := pgstore.Open(ctx, spec, nil)
		if err != nil {
			return nil, "", err
		}
		return s, "postgres " + redact(spec), nil
	case strings.Contains(spec, "://"):
		return nil, "", usagef("--store %q: expected a postgres:// URL or a filesystem path", spec)
	}
	path := spec
	if path == "" {
		if err := os.MkdirAll(DefaultDataDir, 0o755); err != nil {
			return nil, "", fmt.Errorf("create data folder: %w", err)
		}
		path = DefaultDataDir
	}
	s, err := sqlitestore.Open(path, nil)
	if err != nil {
		return nil, "", err
	}
	return s, "embedded " + path, nil
}

// redact hides the password of a URL.
func redact(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	cred := u[scheme+3 : at]
	if i := strings.Index(cred, ":"); i >= 0 {
		return u[:scheme+3] + cred[:i] + ":***" + u[at:]
	}
	return u
}
