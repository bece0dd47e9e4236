package rpc

import (
	"errors"
	"time"
)

// ProtocolVersion is the wire protocol version sent in the handshake.
const ProtocolVersion = 1

// Frame kinds.
const (
	kindHello   byte = 1 // client → node: handshake
	kindWelcome byte = 2 // node → client: handshake answer
	kindCall    byte = 3 // client → node: a call
	kindReply   byte = 4 // node → client: a call's result or error
	kindCancel  byte = 5 // client → node: abandon a call
	kindPing    byte = 6 // either way: liveness probe
	kindPong    byte = 7 // answer to a ping
	kindNodes   byte = 8 // client → node: list the live nodes
)

const (
	headerSize = 13
	// DefaultMaxFrameSize bounds a frame's body.
	DefaultMaxFrameSize = 4 << 20
	// discardFactor: an oversized frame up to this many times the limit is
	// skipped and answered with too_large; a larger one closes the stream.
	discardFactor = 16
)

// Defaults.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxStreams       = 16
	DefaultMaxInflight      = 4096
	DefaultMaxConns         = 4096
	DefaultDialTimeout      = time.Second
	DefaultCallTimeout      = 30 * time.Second
	DefaultSuspectAfter     = time.Second
	DefaultRefreshNodes     = 10 * time.Second
)

// Sentinel errors.
var (
	// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
	ErrServerClosed = errors.New("rpc: server closed")
	// ErrClientClosed is returned by calls on a closed Client.
	ErrClientClosed = errors.New("rpc: client closed")
	// ErrUnresponsive: the node accepted the connection but stopped
	// answering pings (a frozen or overloaded process).
	ErrUnresponsive = errors.New("rpc: node stopped answering")
	// ErrConnClosed: the connection to the node was lost.
	ErrConnClosed = errors.New("rpc: connection closed")
)
