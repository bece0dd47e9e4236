// Package migrations holds the versioned database schemas of containerd-lite,
// embedded in the binary and applied with pressly/goose: postgres/ for the
// PostgreSQL store (applied by `containerd-lite migrate` or `serve
// --migrate`) and sqlite/ for the embedded store (applied when it opens).
//
// Every migration is idempotent to re-run, and applying is safe when several
// nodes start at once.
package migrations
