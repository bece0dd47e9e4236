// Package pgtest gives tests a PostgreSQL database of their own: each call
// of DSN creates a fresh schema, migrates it, and drops it when the test
// ends, so that tests running at once never see each other's rows.
//
// The server is the one named by the environment variable
// CONTAINERD_LITE_TEST_DSN, else the local one at 127.0.0.1:5432. Tests
// fail, never skip, when it is unreachable: PostgreSQL is part of the test
// suite.
package pgtest
