package torture

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of a run.
type Report struct {
	// Config is the configuration the run was made with (without its
	// Logger).
	Config Config
	// RunID names the run's instances (torture-RUNID-K) and files.
	RunID string
	// Seed seeded the clients' choices.
	Seed uint64
	// Store describes the store, password hidden.
	Store string
	// Elapsed is how long the clients called, from the start of the
	// calls to the return of the last one.
	Elapsed time.Duration

	// History is what was recorded; Verdict is the checker's judgement.
	History *History
	Verdict *Verdict

	// Kills, Stops and PGRestarts count the faults injected; Crashes the
	// nodes that exited on their own (each is in FaultErrors too).
	Kills, Stops, PGRestarts, Crashes int
	// FaultsSkipped counts the SIGKILLs and SIGSTOPs not injected because
	// the other nodes were down already (one keeps serving).
	FaultsSkipped int
	// RestartRetries counts restarts of killed nodes that failed and were
	// tried again (expected while PostgreSQL restarts). FaultErrors lists
	// what went wrong injecting faults or healing the cluster; any fails
	// the run, which did not test what it was asked to.
	RestartRetries int
	FaultErrors    []string
	// Takeovers counts the times a node proved the owner of an instance
	// dead and took the instance over, as the nodes' logs say (once per
	// dead owner and taker, not per instance): the failovers after
	// SIGKILL. LeaseLosses counts the times a node found its lease lost
	// and registered again.
	Takeovers, LeaseLosses int

	// Latency is the distribution of the successful calls' latencies.
	Latency Percentiles
	// Recovery is the distribution, over the kills, of the time from a
	// kill until every instance had answered a call again (the call ended
	// successfully): the killed node's instances had to fail over within
	// it.
	Recovery Percentiles
	// Downtime is the distribution of the time from a kill until the node
	// served again, the pause before its restart (RestartAfter) included.
	Downtime Percentiles

	// Files are the files written on a violation; FileErrors the errors
	// met writing them.
	Files, FileErrors []string
}

// Percentiles summarises a distribution of durations.
type Percentiles struct {
	N             int
	P50, P99, Max time.Duration
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Percentiles{N: len(ds), P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1]}
}

func (p Percentiles) String() string {
	if p.N == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v  p99 %v  max %v", round(p.P50), round(p.P99), round(p.Max))
}

// round shortens a duration for people.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// summarize computes Elapsed, the fault counts and the distributions from
// the history.
func (r *Report) summarize() {
	var lat []time.Duration
	answers := map[string][]time.Duration{} // instance → return times of successful calls
	for _, op := range r.History.Ops {
		if !op.Final {
			r.Elapsed = max(r.Elapsed, op.Return)
		}
		if !op.OK {
			continue
		}
		answers[op.Instance] = append(answers[op.Instance], op.Return)
		if !op.Final {
			lat = append(lat, op.Return-op.Call)
		}
	}
	r.Latency = percentiles(lat)
	for _, ts := range answers {
		slices.Sort(ts)
	}
	var rec, down []time.Duration
	for _, f := range r.History.Faults {
		switch f.Kind {
		case FaultKill:
			r.Kills++
			if f.Err == "" {
				down = append(down, f.Until-f.At)
			}
		case FaultStop:
			r.Stops++
			continue
		case FaultPGRestart:
			r.PGRestarts++
			continue
		case FaultCrash:
			r.Crashes++
			continue
		}
		// The first answer on each instance after the kill; an instance
		// that never answered again (the run ended) does not count.
		var worst time.Duration
		for _, ts := range answers {
			if i, _ := slices.BinarySearch(ts, f.At); i < len(ts) {
				worst = max(worst, ts[i]-f.At)
			}
		}
		rec = append(rec, worst)
	}
	r.Recovery = percentiles(rec)
	r.Downtime = percentiles(down)
}

// OpsPerSecond is the clients' call rate.
func (r *Report) OpsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Verdict.Ops) / r.Elapsed.Seconds()
}

// Linearizable reports whether the check found every instance's history
// linearizable; false when it found one that is not, or could not tell.
func (r *Report) Linearizable() bool { return r.Verdict.Result == Linearizable }

// Line is the report's one-line verdict, the last line of the command's
// output:
//
//	torture: ops=N acked=N lost=N duplicated=N linearizable=true|false
func (r *Report) Line() string {
	v := r.Verdict
	return fmt.Sprintf("torture: ops=%d acked=%d lost=%d duplicated=%d linearizable=%t", v.Ops, v.Acked, v.Lost, v.Duplicated, r.Linearizable())
}

// Err returns nil when the run found nothing wrong, else an error listing
// what it found: updates lost or duplicated, a history that is not
// linearizable, an inconclusive check, instances that could not be read at
// the end, unexpected errors, faults that could not be injected.
func (r *Report) Err() error {
	v := r.Verdict
	var errs []error
	if v.Lost > 0 || v.Duplicated > 0 {
		errs = append(errs, fmt.Errorf("%d acknowledged updates lost, %d updates applied twice", v.Lost, v.Duplicated))
	}
	switch v.Result {
	case NotLinearizable:
		errs = append(errs, fmt.Errorf("the history is not linearizable (instances %s)", strings.Join(v.Bad, ", ")))
	case Inconclusive:
		errs = append(errs, fmt.Errorf("%w: the checker ran out of time (%v)", errInconclusive, r.Config.CheckTimeout))
	}
	if len(v.Unread) > 0 {
		errs = append(errs, fmt.Errorf("no final read succeeded on %s", strings.Join(v.Unread, ", ")))
	}
	if v.Unexpected > 0 {
		errs = append(errs, fmt.Errorf("%d calls failed with unexpected errors (%s)", v.Unexpected, r.errorCounts(false)))
	}
	for _, f := range r.FaultErrors {
		errs = append(errs, errors.New(f))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("torture: %w", errors.Join(errs...))
}

// errorCounts lists the failures by code, the expected ones too if all.
func (r *Report) errorCounts(all bool) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(r.Verdict.Errors)) {
		if all || !expectedFailure(code) {
			parts = append(parts, fmt.Sprintf("%s %d", code, r.Verdict.Errors[code]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// WriteSummary writes the human summary, ending with Line.
func (r *Report) WriteSummary(w io.Writer) error {
	c, v := &r.Config, r.Verdict
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	tlsNote := ""
	if c.TLS {
		tlsNote = " under mutual TLS"
	}
	p("run:       %s: %d nodes on %s%s; %d clients, %d instances, %.0f%% reads, %v; seed %d",
		r.RunID, c.Nodes, r.Store, tlsNote, c.Clients, c.Instances, 100*c.ReadFraction, c.Duration, r.Seed)
	p("calls:     %d in %v (%.0f/s): %d updates acknowledged, %d of unknown outcome; %d reads, %d failed",
		v.Ops, round(r.Elapsed), r.OpsPerSecond(), v.Acked, v.Unknown, v.Reads, v.FailedReads)
	p("latency:   %v (successful calls)", r.Latency)
	p("errors:    %s", r.errorCounts(true))
	faults := fmt.Sprintf("%d SIGKILL+restart", r.Kills)
	if r.RestartRetries > 0 {
		faults += fmt.Sprintf(" (%d restarts retried)", r.RestartRetries)
	}
	if c.StopEvery > 0 {
		faults += fmt.Sprintf(", %d SIGSTOP for %v", r.Stops, c.stopFor())
	}
	if c.PGRestartCmd != "" {
		faults += fmt.Sprintf(", %d PostgreSQL restart", r.PGRestarts)
		for _, f := range r.History.Faults {
			if f.Kind == FaultPGRestart {
				faults += fmt.Sprintf(" (at %v, took %v)", round(f.At), round(f.Until-f.At))
			}
		}
	}
	if r.FaultsSkipped > 0 {
		faults += fmt.Sprintf("; %d skipped to keep a node serving", r.FaultsSkipped)
	}
	if r.Crashes > 0 {
		faults += fmt.Sprintf("; %d nodes CRASHED on their own", r.Crashes)
	}
	p("faults:    %s", faults)
	if r.Kills > 0 {
		p("failover:  every instance answering again after a kill: %v; %d takeovers from nodes proven dead", r.Recovery, r.Takeovers)
		p("restarts:  killed node serving again after: %v (the pause before the restart included)", r.Downtime)
	}
	p("leases:    %d lost by live nodes (which then registered again)", r.LeaseLosses)
	for _, f := range r.FaultErrors {
		p("FAULT:     %s", f)
	}
	p("check:     %s (%d instances, checked in %v); lost %d, duplicated %d", v.Result, v.Instances, round(v.Elapsed), v.Lost, v.Duplicated)
	if len(v.Bad) > 0 {
		p("VIOLATION: on %s", strings.Join(v.Bad, ", "))
	}
	if v.Result == Inconclusive {
		p("VIOLATION: the check was inconclusive: it ran out of time after %v; nothing was shown", c.CheckTimeout)
	}
	if len(v.Unread) > 0 {
		p("VIOLATION: no final read succeeded on %s", strings.Join(v.Unread, ", "))
	}
	if v.Unexpected > 0 {
		p("VIOLATION: %d calls failed with unexpected errors: %s", v.Unexpected, r.errorCounts(false))
	}
	for _, f := range r.Files {
		p("wrote:     %s", f)
	}
	for _, e := range r.FileErrors {
		p("not written: %s", e)
	}
	p("%s", r.Line())
	_, err := io.WriteString(w, b.String())
	return err
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// byCall orders ops by invocation time.
func byCall(a, b Op) int { return cmp.Compare(a.Call, b.Call) }
