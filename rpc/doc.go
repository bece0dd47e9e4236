// Package rpc is containerd-lite's wire protocol: TCP (optionally TLS)
// carrying one hashicorp/yamux session per connection, and CBOR frames on a
// long-lived yamux stream.
//
// # Framing
//
// Every frame is a 13-byte header — body length (uint32), kind (byte) and
// call id (uint64), big endian — followed by a CBOR body. The length is
// checked against the frame size limit before the body is read, and bodies
// are decoded with bounded nesting, array and map sizes, no duplicate keys
// and no indefinite lengths. Because the call id is in the header, a frame
// whose body is oversized or malformed still gets a typed error reply, and
// the connection keeps working.
//
// # Calls
//
// A session opens with a handshake (protocol version, client id, optional
// token) on its first stream. Calls are then multiplexed by id on that
// stream: each request is served in its own goroutine and replies are
// written as they complete, so a slow call blocks no other. Writers coalesce
// the frames that are ready at the same time into one write, which is where
// the throughput of a yamux session comes from (a stream opened per call
// costs about three times as much CPU). A call carries its deadline; a
// caller that gives up sends a cancel frame, which cancels the call's
// context on the node.
//
// # Failover
//
// Client keeps a list of nodes, learns the live ones from any node it
// reaches (and again every ClientConfig.RefreshNodes while in use), follows redirects to an instance's owner and retries a call on
// another node only when the failure is a transport failure or a retryable
// code (unavailable, redirect), never an application error. Every request
// carries the client's id and a sequence number, so a retried call takes
// effect at most once. A connection whose node stops answering (a frozen
// process) is detected by pings and abandoned.
package rpc
