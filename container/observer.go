package container

import (
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Observer is told about every call a container serves, to feed metrics
// (the daemon exports them to Prometheus). ObserveCall is called
// concurrently from the calls' goroutines, after the reply is ready: it
// must be quick and must not block.
type Observer interface {
	ObserveCall(CallEvent)
}

// CallEvent describes one call.
type CallEvent struct {
	// Component and Method are the registered names, or "" when the call
	// named none (a not_found error): names sent by clients are never
	// reported as they came, so that bad input cannot grow label sets.
	Component, Method string
	// Code is the error code, "" for success.
	Code     registry.Code
	Duration time.Duration
	// StateBytes is the size of the encoded state after a successful call
	// that ran the method; 0 otherwise.
	StateBytes int
	// Wrote reports that the call committed a state write; Replayed that it
	// was answered from a completion record without running again.
	Wrote, Replayed bool
}

// LeaseValid reports whether the node holds a valid lease now, that is,
// whether it may serve calls (a readiness check).
func (c *Container) LeaseValid() bool { return c.started.Load() && c.leaseValid() }
