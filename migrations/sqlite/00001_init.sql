-- The embedded store's schema: registered nodes with their leases, and one
-- row per instance with its state, owner and completion records. Times are
-- unix nanoseconds from the host clock, which every process sharing the
-- file reads.

-- +goose Up
CREATE TABLE IF NOT EXISTS cl_nodes (
    incarnation TEXT PRIMARY KEY,
    addr        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    dead        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS cl_instances (
    component     TEXT NOT NULL,
    id            TEXT NOT NULL,
    state         BLOB,
    state_version INTEGER NOT NULL DEFAULT 0,
    version       INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    epoch         INTEGER NOT NULL DEFAULT 0,
    completions   BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (component, id)
) WITHOUT ROWID;

-- Sweep looks only at rows without state, by age.
CREATE INDEX IF NOT EXISTS cl_instances_stateless
    ON cl_instances (updated_at) WHERE state IS NULL;

-- +goose Down
DROP INDEX IF EXISTS cl_instances_stateless;
DROP TABLE IF EXISTS cl_instances;
DROP TABLE IF EXISTS cl_nodes;
