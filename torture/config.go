package torture

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config describes a torture run. Start from DefaultConfig and change what
// you need: Run takes the values as they are, and a zero duration turns
// the fault it schedules off.
type Config struct {
	// Binary is the containerd-lite executable the nodes run. Required.
	Binary string
	// Store is a postgres:// (or postgresql://) URL, migrated before the
	// nodes start, or a path for the embedded store. Empty means a fresh
	// embedded store in a temporary directory, removed after the run.
	Store string
	// Nodes is the number of `serve` processes.
	Nodes int
	// Clients is the number of concurrent clients, each with its own
	// rpc.Client (client id and sequence numbers).
	Clients int
	// Instances is the number of cart instances the clients share.
	Instances int
	// Duration is how long the clients call while faults are injected.
	Duration time.Duration
	// ReadFraction is the share of calls that are reads (cart.Get); the
	// rest are updates (cart.Add).
	ReadFraction float64
	// CallTimeout bounds each call, failover retries included. A call
	// still failing then is recorded as failed.
	CallTimeout time.Duration

	// KillEvery is the period of SIGKILL faults; 0 means none.
	KillEvery time.Duration
	// RestartAfter is how long a killed node stays down before it is
	// restarted on its address.
	RestartAfter time.Duration
	// StopEvery is the period of SIGSTOP faults; 0 means none.
	StopEvery time.Duration
	// StopFor is how long a node stays frozen; 0 means Lease + 1 s, so
	// that the node's instances move on while it is frozen and the node
	// finds its lease gone when it wakes.
	StopFor time.Duration
	// PGRestartCmd, when set, is run once with `sh -c` at PGRestartAt to
	// restart the PostgreSQL server, e.g.
	// "pg_ctlcluster --skip-systemctl-redirect 15 main restart". It must
	// return once the server is back (or has failed to come back).
	PGRestartCmd string
	// PGRestartAt is when, from the start of the calls, PGRestartCmd runs;
	// 0 means half-way through Duration.
	PGRestartAt time.Duration

	// Lease and Heartbeat are passed to the nodes (--lease, --heartbeat).
	// A short lease makes frozen nodes lose their instances quickly.
	Lease     time.Duration
	Heartbeat time.Duration
	// NodeArgs are extra `serve` flags.
	NodeArgs []string
	// TLS runs the cluster under mutual TLS with a throwaway CA made for
	// the run: clients and nodes present certificates, and nodes probe
	// their peers over TLS.
	TLS bool

	// CheckTimeout bounds the linearizability check. A check that runs out
	// of time is inconclusive, which fails the run.
	CheckTimeout time.Duration
	// OutDir receives the files written on a violation; "" means the
	// working directory.
	OutDir string
	// HistoryFile, when set, receives the whole history as JSON, whatever
	// the verdict.
	HistoryFile string
	// Seed seeds the clients' choices of instance and operation; 0 picks
	// one at random (Report.Seed says which).
	Seed uint64
	// Logger receives progress: faults as they are injected and a line
	// every ProgressEvery. Nil discards it.
	Logger        *slog.Logger
	ProgressEvery time.Duration
}

// DefaultConfig returns a fresh copy of the defaults: 3 nodes on a fresh
// embedded store, 64 clients on 16 instances, 30% reads, for 60 s, with a
// SIGKILL every 2 s.
func DefaultConfig() *Config {
	return &Config{
		Nodes:         3,
		Clients:       64,
		Instances:     16,
		Duration:      60 * time.Second,
		ReadFraction:  0.3,
		CallTimeout:   10 * time.Second,
		KillEvery:     2 * time.Second,
		RestartAfter:  300 * time.Millisecond,
		Lease:         2 * time.Second,
		Heartbeat:     500 * time.Millisecond,
		CheckTimeout:  2 * time.Minute,
		ProgressEvery: 10 * time.Second,
	}
}

// Validate reports every invalid field, and combinations that cannot
// work.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("torture: "+format, args...)) }
	if c.Binary == "" {
		bad("Binary (--bin), the containerd-lite executable, is required")
	}
	if strings.Contains(c.Store, "://") && !isPostgres(c.Store) {
		bad("Store (--store) %q: expected a postgres:// URL or a filesystem path", c.Store)
	}
	if c.Nodes < 1 {
		bad("Nodes (--nodes) must be at least 1, got %d", c.Nodes)
	}
	if c.Clients < 1 {
		bad("Clients (--clients) must be at least 1, got %d", c.Clients)
	}
	if c.Instances < 1 {
		bad("Instances (--instances) must be at least 1, got %d", c.Instances)
	}
	if c.Duration <= 0 {
		bad("Duration (--duration) must be positive, got %v", c.Duration)
	}
	if c.ReadFraction < 0 || c.ReadFraction > 1 {
		bad("ReadFraction (--read-fraction) must be between 0 and 1, got %v", c.ReadFraction)
	}
	if c.CallTimeout <= 0 {
		bad("CallTimeout (--call-timeout) must be positive, got %v", c.CallTimeout)
	}
	if c.KillEvery < 0 || c.RestartAfter < 0 || c.StopEvery < 0 || c.StopFor < 0 || c.PGRestartAt < 0 {
		bad("fault periods and delays (--kill-every, --restart-after, --stop-every, --stop-for, --pg-restart-at) must not be negative")
	}
	if c.PGRestartCmd != "" && !isPostgres(c.Store) {
		bad("PGRestartCmd (--pg-restart-cmd) needs a PostgreSQL store")
	}
	if c.PGRestartCmd != "" && c.PGRestartAt >= c.Duration {
		bad("PGRestartAt (--pg-restart-at) %v is past the end of the run (%v)", c.PGRestartAt, c.Duration)
	}
	if c.Lease <= 0 || c.Heartbeat <= 0 || c.Heartbeat > c.Lease/2 {
		bad("Lease and Heartbeat (--lease, --heartbeat) must be positive, the heartbeat at most half the lease (got %v, %v)", c.Lease, c.Heartbeat)
	}
	if c.CheckTimeout <= 0 {
		bad("CheckTimeout (--check-timeout) must be positive, got %v", c.CheckTimeout)
	}
	if c.ProgressEvery < 0 {
		bad("ProgressEvery (--progress) must not be negative")
	}
	return errors.Join(errs...)
}

func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// stopFor is StopFor with its default applied.
func (c *Config) stopFor() time.Duration {
	if c.StopFor > 0 {
		return c.StopFor
	}
	return c.Lease + time.Second
}

// pgRestartAt is PGRestartAt with its default applied.
func (c *Config) pgRestartAt() time.Duration {
	if c.PGRestartAt > 0 {
		return c.PGRestartAt
	}
	return c.Duration / 2
}
