// Package torture attacks a real containerd-lite cluster and judges the
// outcome: the engine behind `containerd-lite torture`.
//
// # The attack
//
// Run starts Config.Nodes `serve` processes on one store (PostgreSQL, or a
// fresh embedded store), then runs Config.Clients concurrent clients, each
// an rpc.Client of its own (its own client id and sequence numbers) that
// lists every node. Each client makes calls one after another, each to a
// random one of Config.Instances cart instances: an update (cart.Add of one
// unit of SKU "t") or, with probability Config.ReadFraction, a read
// (cart.Get). Every instance is thus a counter, and an update's reply is
// the counter's value just after it.
//
// Meanwhile faults are injected on a schedule: every Config.KillEvery a
// random node is killed with SIGKILL and restarted on its address after
// Config.RestartAfter; optionally, every Config.StopEvery a random node is
// frozen with SIGSTOP for Config.StopFor (past its lease) and resumed; and
// optionally PostgreSQL itself is restarted once, in the middle of the
// run, by Config.PGRestartCmd. At least one node keeps serving at all
// times (unless there is only one).
//
// When the time is up the faults stop, every node is brought back, and a
// final read of every instance is made.
//
// # The judgement
//
// Every call is recorded with its invocation and response times (History).
// Check then judges the history of each instance with a linearizability
// checker (github.com/anishathalye/porcupine) against the model of a
// counter. A failed update has an unknown outcome: the client retried it
// until its deadline, and it may or may not have taken effect; the model
// accepts it at any point after its invocation, or never. A failed read
// has no effect and is left out. Check also counts, from the final reads,
// acknowledged updates lost and updates applied twice (see Verdict).
//
// Report summarises the run; its last line, Report.Line, has the fixed
// shape
//
//	torture: ops=N acked=N lost=N duplicated=N linearizable=true|false
//
// and Report.Err is not nil when the run found a violation, or could not
// tell. On a violation the checker's visualisation (an HTML file), the
// history of the failing instances and the nodes' logs are written to
// Config.OutDir; Config.HistoryFile receives the whole history whatever the
// verdict.
package torture
