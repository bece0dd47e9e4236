package torture

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Result is the outcome of the linearizability check.
type Result int

const (
	// Inconclusive: the checker ran out of time. It fails a run as surely
	// as a violation: a check that could not tell is no evidence.
	Inconclusive Result = iota
	// Linearizable: every instance's history is linearizable.
	Linearizable
	// NotLinearizable: some instance's history is not (Verdict.Bad).
	NotLinearizable
)

func (r Result) String() string {
	switch r {
	case Linearizable:
		return "linearizable"
	case NotLinearizable:
		return "not linearizable"
	}
	return "inconclusive"
}

// Verdict is the judgement of a history.
type Verdict struct {
	Result Result
	// Elapsed is how long the check took.
	Elapsed time.Duration

	// Instances is the number of instances in the history.
	Instances int
	// Ops counts the clients' calls (the final reads excluded), Acked the
	// updates that succeeded, Unknown those that failed (outcome unknown),
	// Reads the reads that succeeded and FailedReads those that did not.
	Ops, Acked, Unknown, Reads, FailedReads int
	// Errors counts the clients' failed calls by code. Unexpected counts
	// those whose code is none of unavailable, deadline_exceeded and
	// canceled: no call of the workload should get one.
	Errors     map[registry.Code]int
	Unexpected int

	// Lost and Duplicated are lower bounds on the acknowledged updates
	// lost and the updates applied more than once, from each instance's
	// final value F, the values A returned by its acknowledged updates and
	// the number U of its updates with unknown outcome. Every update adds
	// one, and its reply is the counter just after it, so in a correct
	// history the values in A are distinct and none exceeds F:
	//
	//	lost       = (|A| - |distinct A|) + |{v in distinct A : v > F}|
	//	duplicated = max(0, F - |A| - U)
	//
	// Two acknowledged updates that returned the same value mean one
	// overwrote the other; an acknowledged value above the final one
	// means the instance went back in time. A final value above what the
	// acknowledged and unknown updates together could reach means some
	// update took effect twice (a retry applied again, say). These catch
	// lost and doubled updates even where the checker cannot be run to
	// the end, and say how many.
	Lost, Duplicated int

	// Bad lists the instances whose history is not linearizable or whose
	// counts show lost or duplicated updates, sorted.
	Bad []string
	// Unread lists the instances with no successful final read: their
	// final value, hence their counts, are unknown. They fail the run.
	Unread []string

	history *History      // what was judged
	end     time.Duration // the end of the history: unknown ops return then
	timeout time.Duration
}

// OK reports whether the verdict is clean: linearizable, nothing lost or
// duplicated, every instance read at the end, no unexpected error.
func (v *Verdict) OK() bool {
	return v.Result == Linearizable && v.Lost == 0 && v.Duplicated == 0 && len(v.Unread) == 0 && v.Unexpected == 0
}

// Check judges h: it runs the linearizability checker on each instance's
// history, within timeout, and computes the counts of Verdict. Failed
// updates are taken as unknown: they may be linearized at any point after
// their invocation (their response is put at the end of the history), or
// never. Failed reads are left out.
func Check(h *History, timeout time.Duration) *Verdict {
	start := time.Now()
	v := &Verdict{Errors: map[registry.Code]int{}, history: h, timeout: timeout}
	byInstance := map[string][]*Op{}
	for i := range h.Ops {
		op := &h.Ops[i]
		byInstance[op.Instance] = append(byInstance[op.Instance], op)
		v.end = max(v.end, op.Return+time.Millisecond)
		if op.Final {
			continue
		}
		v.Ops++
		switch {
		case op.OK && op.Kind == Add:
			v.Acked++
		case op.OK:
			v.Reads++
		case op.Kind == Add:
			v.Unknown++
		default:
			v.FailedReads++
		}
		if !op.OK {
			v.Errors[op.Code]++
			if !expectedFailure(op.Code) {
				v.Unexpected++
			}
		}
	}
	v.Instances = len(byInstance)

	bad := map[string]bool{}
	for inst, ops := range byInstance {
		lost, dup, read := counts(ops)
		v.Lost += lost
		v.Duplicated += dup
		if lost > 0 || dup > 0 {
			bad[inst] = true
		}
		if !read {
			v.Unread = append(v.Unread, inst)
		}
	}
	slices.Sort(v.Unread)

	v.Result = linearizable(porcupine.CheckOperationsTimeout(counterModel, v.operations(nil, false), timeout))
	if v.Result == NotLinearizable {
		// The checker stops at the first partition it finds illegal: check
		// each instance alone, to name all of them.
		for _, inst := range slices.Sorted(maps.Keys(byInstance)) {
			left := timeout - time.Since(start)
			if left <= 0 {
				break
			}
			only := map[string]bool{inst: true}
			if porcupine.CheckOperationsTimeout(counterModel, v.operations(only, false), left) == porcupine.Illegal {
				bad[inst] = true
			}
		}
	}
	v.Bad = slices.Sorted(maps.Keys(bad))
	v.Elapsed = time.Since(start)
	return v
}

func linearizable(r porcupine.CheckResult) Result {
	switch r {
	case porcupine.Ok:
		return Linearizable
	case porcupine.Illegal:
		return NotLinearizable
	}
	return Inconclusive
}

// counts computes one instance's lost and duplicated counts (see Verdict),
// and whether it had a final read.
func counts(ops []*Op) (lost, dup int, read bool) {
	var (
		final   *Op
		acked   = map[int]bool{}
		nAcked  int
		unknown int
	)
	for _, op := range ops {
		switch {
		case op.Final:
			if op.OK && (final == nil || op.Return > final.Return) {
				final = op
			}
		case op.Kind == Add && op.OK:
			nAcked++
			acked[op.Value] = true
		case op.Unknown():
			unknown++
		}
	}
	lost = nAcked - len(acked)
	if final == nil {
		return lost, 0, false
	}
	for v := range acked {
		if v > final.Value {
			lost++
		}
	}
	return lost, max(0, final.Value-nAcked-unknown), true
}

// The porcupine model: each instance is a counter, starting at 0.
//
// Its state is the range of values the counter may hold, [Lo, Hi]: an
// update of unknown outcome is linearized like any other operation, and at
// that point it either took effect or never will, so it widens the range
// by one; an operation that returned a value pins it. (The values reachable
// from a range through such choices form a range again.) Linearizing
// unknown updates as "maybe" keeps the search linear where a model that
// must decide "applied here or not" would try every subset of the updates
// still pending: they all stay pending to the end of the history.

type opInput struct {
	Instance string
	Kind     OpKind
}

type opOutput struct {
	Value   int
	Unknown bool // a failed update: it may or may not have taken effect
}

type counterRange struct{ Lo, Hi int }

func (r counterRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + ".." + strconv.Itoa(r.Hi)
}

var counterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		parts := map[string][]porcupine.Operation{}
		for _, op := range history {
			inst := op.Input.(opInput).Instance
			parts[inst] = append(parts[inst], op)
		}
		out := make([][]porcupine.Operation, 0, len(parts))
		for _, inst := range slices.Sorted(maps.Keys(parts)) {
			out = append(out, parts[inst])
		}
		return out
	},
	Init: func() any { return counterRange{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(counterRange), input.(opInput), output.(opOutput)
		switch {
		case in.Kind == Add && out.Unknown:
			return true, counterRange{s.Lo, s.Hi + 1}
		case in.Kind == Add:
			return s.Lo <= out.Value-1 && out.Value-1 <= s.Hi, counterRange{out.Value, out.Value}
		case in.Kind == Get:
			return s.Lo <= out.Value && out.Value <= s.Hi, counterRange{out.Value, out.Value}
		}
		return false, s
	},
	Hash: func(state any) uint64 {
		s := state.(counterRange)
		return uint64(s.Lo)<<32 ^ uint64(s.Hi)
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(opInput), output.(opOutput)
		if out.Unknown {
			return in.Kind.String() + " → ?"
		}
		return in.Kind.String() + " → " + strconv.Itoa(out.Value)
	},
	DescribeState: func(state any) string { return state.(counterRange).String() },
}

// operations converts the history (only the instances in only, if not
// nil) for porcupine. Failed reads are left out; failed updates return at
// the end of the history, with an output the model accepts in any state.
func (v *Verdict) operations(only map[string]bool, describe bool) []porcupine.Operation {
	ops := make([]porcupine.Operation, 0, len(v.history.Ops))
	for i := range v.history.Ops {
		op := &v.history.Ops[i]
		if (!op.OK && op.Kind == Get) || (only != nil && !only[op.Instance]) {
			continue
		}
		pop := porcupine.Operation{
			ClientId: op.Client,
			Input:    opInput{Instance: op.Instance, Kind: op.Kind},
			Call:     int64(op.Call),
			Output:   opOutput{Value: op.Value, Unknown: !op.OK},
			Return:   int64(op.Return),
		}
		if !op.OK {
			pop.Return = int64(v.end)
		}
		if describe {
			pop.Metadata = describeOp(op)
		}
		ops = append(ops, pop)
	}
	// Sorted, so that the checker's search, and a visualisation, do not
	// depend on the order the clients' records were merged in.
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	return ops
}

func describeOp(op *Op) string {
	who := fmt.Sprintf("client %d", op.Client)
	if op.Final {
		who = "final read"
	}
	s := fmt.Sprintf("%s %s, %s to %s (%s)", op.Instance, who, op.Call.Round(time.Microsecond), op.Return.Round(time.Microsecond), (op.Return - op.Call).Round(time.Microsecond))
	if !op.OK {
		s += ", failed (outcome unknown): " + op.Err
	}
	return s
}

// Visualize writes the checker's visualisation (an HTML page) of the bad
// instances, or of every instance when none is bad, to path, with the
// faults shown alongside.
func (v *Verdict) Visualize(path string) error {
	var only map[string]bool
	if len(v.Bad) > 0 {
		only = map[string]bool{}
		for _, inst := range v.Bad {
			only[inst] = true
		}
	}
	_, info := porcupine.CheckOperationsVerbose(counterModel, v.operations(only, true), v.timeout)
	var notes []porcupine.Annotation
	for _, f := range v.history.Faults {
		desc := string(f.Kind)
		if f.Node >= 0 {
			desc = fmt.Sprintf("%s node %d", f.Kind, f.Node)
		}
		details := fmt.Sprintf("%s %s from %s to %s", desc, f.Addr, f.At.Round(time.Millisecond), f.Until.Round(time.Millisecond))
		if f.Err != "" {
			details += ": " + f.Err
		}
		notes = append(notes, porcupine.Annotation{
			Tag: "faults", Start: int64(f.At), End: int64(max(f.Until, f.At)),
			Description: desc, Details: details, BackgroundColor: "#f6c6c6",
		})
	}
	info.AddAnnotations(notes)
	return porcupine.VisualizePath(counterModel, info, path)
}

// BadHistory returns the part of the history that concerns the bad
// instances (the faults included), for a closer look.
func (v *Verdict) BadHistory() *History {
	bad := map[string]bool{}
	for _, inst := range v.Bad {
		bad[inst] = true
	}
	out := &History{Faults: v.history.Faults}
	for _, op := range v.history.Ops {
		if bad[op.Instance] {
			out.Ops = append(out.Ops, op)
		}
	}
	slices.SortStableFunc(out.Ops, byCall)
	return out
}
