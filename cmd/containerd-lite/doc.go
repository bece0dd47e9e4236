// Command containerd-lite runs and drives containerd-lite nodes.
//
//	containerd-lite serve   --listen 127.0.0.1:7401 [--store URL|PATH] [--migrate]
//	containerd-lite call    [--nodes ADDR,ADDR] COMPONENT ID METHOD [JSON-ARGS]
//	containerd-lite nodes   [--nodes ADDR,ADDR]
//	containerd-lite migrate --store postgres://...
//	containerd-lite torture [--store URL|PATH] [--duration 60s]
//	containerd-lite bench   --store postgres://... [--duration 5s]
//
// serve runs a node. --store takes a postgres:// (or postgresql://) URL, or
// a filesystem path for the embedded store (SQLite; several nodes on one
// host may share it); without it the node uses ./containerd-lite-data.
// SIGTERM or SIGINT drains the calls in flight, hands every instance over
// and exits 0. The stock daemon serves the cart component of examples/cart;
// a daemon with components of your own is a few lines of Go (see the
// examples/cart package example).
//
// call prints the reply as JSON on stdout; on failure it prints
// "CODE: message" on stderr. nodes prints the live nodes, one per line.
// migrate applies the PostgreSQL schema (idempotent, safe to run from
// several nodes at once). torture attacks a cluster of real processes with
// faults and checks the history for linearizability; bench measures the
// runtime against its raw ceilings. Their last lines are machine-readable
// summaries.
//
// Exit codes: 0 success, 1 failure (the call's error, a violation found by
// torture), 2 a bad command line. $CONTAINERD_LITE_TOKEN,
// $CONTAINERD_LITE_TLS_CA, $CONTAINERD_LITE_TLS_CERT and
// $CONTAINERD_LITE_TLS_KEY are the defaults of --token, --tls-ca,
// --tls-cert and --tls-key. Run "containerd-lite COMMAND -h" for a
// command's flags.
package main
