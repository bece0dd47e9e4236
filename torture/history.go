package torture

import (
	"fmt"
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// OpKind is what a call does to its instance's counter.
type OpKind uint8

const (
	// Add increments the counter and returns its new value (cart.Add).
	Add OpKind = iota + 1
	// Get returns the counter's value (cart.Get).
	Get
)

func (k OpKind) String() string {
	switch k {
	case Add:
		return "add"
	case Get:
		return "get"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one recorded call. Times are measured from the start of the run on
// the monotonic clock: Call just before the call was made, Return just
// after its outcome was known.
type Op struct {
	// Client numbers the client that made the call, from 0. The final
	// reads have their own number, one past the last client.
	Client   int    `json:"client"`
	Instance string `json:"instance"`
	Kind     OpKind `json:"kind"`
	// Final marks the read made of each instance after the faults stopped.
	Final  bool          `json:"final,omitempty"`
	Call   time.Duration `json:"call"`
	Return time.Duration `json:"return"`
	// OK tells whether the call succeeded; Value is then the counter's
	// value it returned (after the increment, for Add).
	OK    bool `json:"ok"`
	Value int  `json:"value,omitempty"`
	// Code and Err describe a failure.
	Code registry.Code `json:"code,omitempty"`
	Err  string        `json:"err,omitempty"`
}

// Unknown reports whether the op's effect is unknown: a failed update may
// or may not have taken effect. (A failed read has no effect at all.)
func (op *Op) Unknown() bool { return !op.OK && op.Kind == Add }

// FaultKind names an injected fault.
type FaultKind string

// The faults.
const (
	FaultKill      FaultKind = "kill"       // SIGKILL, then restart
	FaultStop      FaultKind = "stop"       // SIGSTOP, then SIGCONT
	FaultPGRestart FaultKind = "pg-restart" // the PostgreSQL server restarted
	FaultCrash     FaultKind = "crash"      // a node exited on its own, then restart
)

// Fault is one injected fault, timed like Op: At when it was injected,
// Until when it ended (the node served again, or the command returned).
type Fault struct {
	Kind  FaultKind     `json:"kind"`
	Node  int           `json:"node"` // index in the cluster; -1 for PostgreSQL
	Addr  string        `json:"addr,omitempty"`
	At    time.Duration `json:"at"`
	Until time.Duration `json:"until"`
	Err   string        `json:"err,omitempty"` // what went wrong, if anything
}

// History is everything a run recorded, as the checker takes it.
type History struct {
	// Ops are the calls, in no particular order, the final reads among
	// them.
	Ops []Op `json:"ops"`
	// Faults are shown in the visualisation, next to the calls.
	Faults []Fault `json:"faults,omitempty"`
}

// expectedFailure reports whether a call may fail with code under a fault
// storm: unavailable, deadline_exceeded or canceled. No call of this
// workload should ever get any other code.
func expectedFailure(code registry.Code) bool {
	switch code {
	case registry.CodeUnavailable, registry.CodeDeadlineExceeded, registry.CodeCanceled:
		return true
	}
	return false
}
