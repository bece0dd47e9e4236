package registry

import "context"

// Call is one invocation of a method on an instance.
type Call struct {
	Component string
	ID        string
	Method    string
	// Args is the CBOR encoding of the method's argument; empty for methods
	// that take none.
	Args []byte

	// Client identifies the calling client process and Seq numbers its calls.
	// A call retried with the same (Client, Seq) takes effect at most once
	// and gets the original reply. Ack tells the node that the client has
	// the replies of all its calls on this instance numbered below Ack (or
	// has abandoned them), so their completion records may be discarded.
	// All three are zero for local calls that need no exactly-once
	// protection.
	Client []byte
	Seq    uint64
	Ack    uint64
}

// Caller invokes calls and returns the CBOR-encoded reply. *rpc.Client
// implements it over the network and *container.Container in process.
// Errors are *Error values (or wrap one).
type Caller interface {
	Invoke(ctx context.Context, call *Call) ([]byte, error)
}
