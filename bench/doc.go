// Package bench measures containerd-lite against its raw ceilings, in one
// process and one run, so that the ratios between them mean something on
// the machine at hand. It is what `containerd-lite bench` runs.
//
// # Workloads
//
// Each workload is measured at every concurrency c of the run (a cell):
//
//	raw-upsert     plain pgx: c goroutines, a pgxpool of c connections, each
//	               goroutine a row of its own, one conditional
//	               INSERT ... ON CONFLICT DO UPDATE ... WHERE version = $n of a
//	               state of the given size per call, each its own implicit
//	               transaction. The ceiling of a store that writes one row
//	               per call with no grouping.
//	raw-yamux      a bare yamux + CBOR echo over loopback TCP: one yamux
//	               session, one long-lived stream, calls multiplexed by id.
//	               Each side has one writer goroutine coalescing the frames
//	               ready at the same time into one write; the client has a
//	               reader goroutine handing each reply to its caller by id,
//	               the server a reader that decodes each call and answers it
//	               from a goroutine of its own (as rpc.Server does: a server
//	               that answered in line would let one slow call hold up
//	               the others). Request and reply are CBOR envelopes of the
//	               shape and size of a cart Add call and its reply; the echo
//	               does no application work (no argument decoding, no
//	               method, no result decoding).
//	raw-tcp        a bare TCP echo for reference: c connections, one per
//	               goroutine, length-prefixed frames of the same sizes, no
//	               encoding at all.
//	cart-pg        containerd-lite: one rpc.Client (one connection, calls
//	               multiplexed) → one node (rpc.Server, container.Container
//	               with the cart component, pgstore with its default group
//	               commit) over loopback TCP. Each goroutine owns one cart
//	               whose encoded state is the given size, and calls
//	               cart.Add {sku: one of its SKUs, qty: 1} through the typed
//	               client: a real state change of constant size, persisted
//	               before the reply.
//	cart-mem       the same with the in-memory store (passivate/memstore):
//	               the transport and runtime without a database.
//	cart-sqlite    the same on the embedded store (passivate/sqlitestore) in
//	               a temporary directory: one fsync per group commit.
//	reactivate-pg  the first call on a passivated instance: instances of the
//	               given state size are stored and released beforehand (no
//	               owner, as passivation leaves them), and each measured
//	               call is a cart.Add on one of them, so it claims the
//	               instance, loads its state, runs and persists. The cell
//	               ends when its instances are used up or its duration
//	               passes.
//
// Everything runs in this process (client, node, echo servers), over real
// loopback TCP, against the PostgreSQL server named by the URL; so the
// allocation and CPU figures cover both ends of each call.
//
// # Measurement
//
// A cell runs c goroutines in a closed loop: a warm-up, then the measured
// window. Calls completing inside the window are counted and their latency
// recorded in an HDR histogram (3 significant digits); calls/s is that count
// over the window. Allocations per call are the runtime's Mallocs over the
// window divided by the calls, CPU per call this process's user+system time
// over the window divided by the calls (PostgreSQL's own CPU is not in it).
// The garbage collector runs between cells.
//
// # Isolation
//
// The run creates a schema named bench_<random> in the database of the URL,
// works only there (its own raw table, and the containerd-lite tables
// migrated into it), and drops it at the end, also after an error or an
// interrupt. The database user needs the CREATE privilege on the database.
package bench
