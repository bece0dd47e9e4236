package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/registry"
)

// Config configures a Container. The zero value of an optional field means
// its default.
type Config struct {
	// Registry holds the component types the node serves. Required.
	Registry *registry.Registry
	// Store persists instances and node membership. Required.
	Store passivate.Store
	// Addr is the node's advertised RPC address, given to clients in
	// redirects and listed by Nodes.
	Addr string
	// Lease is how long the node's membership stays valid without a
	// heartbeat. Default 3s.
	Lease time.Duration
	// Heartbeat is the lease renewal interval; at most Lease/2. Default 1s.
	Heartbeat time.Duration
	// IdleTimeout passivates instances without calls for this long, for
	// components that do not set their own. Default 10m.
	IdleTimeout time.Duration
	// MaxActive caps the instances in memory; past it the least recently
	// used idle ones are passivated. Default 100000.
	MaxActive int
	// MaxStateSize bounds an encoded state, for components that do not set
	// their own. Default 1 MiB.
	MaxStateSize int
	// MaxCompletions bounds the completion records kept per instance for
	// exactly-once retries, and MaxCompletionBytes their encoded size; the
	// oldest go first. Defaults 128 and 64 KiB.
	MaxCompletions     int
	MaxCompletionBytes int
	// StoreTimeout bounds each store operation. Default 5s.
	StoreTimeout time.Duration
	// SweepEvery is how often the node deletes old tombstones and dead
	// nodes from the store, SweepAge how old they must be. Defaults 1m, 10m.
	SweepEvery time.Duration
	SweepAge   time.Duration
	// ProveDead reports whether the node with the given incarnation, last
	// seen at addr, is proven dead (see rpc.Prober). Nil means a live
	// owner is only ever replaced after its lease expires.
	ProveDead func(ctx context.Context, addr, incarnation string) bool
	// Observer, if set, is told about every call, to feed metrics.
	Observer Observer
	// Logger receives node-level events. Nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Registry == nil {
		return c, errors.New("container: Config.Registry is required")
	}
	if c.Store == nil {
		return c, errors.New("container: Config.Store is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Lease, 3*time.Second)
	def(&c.Heartbeat, time.Second)
	def(&c.IdleTimeout, 10*time.Minute)
	def(&c.StoreTimeout, 5*time.Second)
	def(&c.SweepEvery, time.Minute)
	def(&c.SweepAge, 10*time.Minute)
	if c.MaxActive <= 0 {
		c.MaxActive = 100_000
	}
	if c.MaxStateSize <= 0 {
		c.MaxStateSize = 1 << 20
	}
	if c.MaxCompletions <= 0 {
		c.MaxCompletions = 128
	}
	if c.MaxCompletionBytes <= 0 {
		c.MaxCompletionBytes = 64 << 10
	}
	if c.Heartbeat > c.Lease/2 {
		return c, fmt.Errorf("container: heartbeat %v must be at most half the lease %v", c.Heartbeat, c.Lease)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
