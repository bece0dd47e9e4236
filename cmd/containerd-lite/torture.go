package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/containerd-lite/containerd-lite/torture"
)

// torture attacks a cluster of this very binary's `serve` processes and
// judges the outcome (package torture). The last line of its output is
// the verdict; it fails on any violation, or when it could not tell.
func (m *Main) torture(ctx context.Context, args []string) error {
	fs := m.flags("torture", "[--store URL|PATH] [--duration 60s] [flags]")
	cfg := torture.DefaultConfig()
	var nodeArgs string
	fs.StringVar(&cfg.Store, "store", "", "postgres:// URL (migrated first), or embedded store path (default: a fresh embedded store in a temporary directory)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "serve processes to start")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients, each with its own client id")
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "cart instances the clients share")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the clients call while faults are injected")
	fs.Float64Var(&cfg.ReadFraction, "read-fraction", cfg.ReadFraction, "share of calls that are reads (cart.Get); the rest are updates (cart.Add)")
	fs.DurationVar(&cfg.CallTimeout, "call-timeout", cfg.CallTimeout, "deadline of each call, failover retries included")
	fs.DurationVar(&cfg.KillEvery, "kill-every", cfg.KillEvery, "SIGKILL a random node this often (0: never)")
	fs.DurationVar(&cfg.RestartAfter, "restart-after", cfg.RestartAfter, "restart a killed node on its address after this pause")
	fs.DurationVar(&cfg.StopEvery, "stop-every", cfg.StopEvery, "SIGSTOP a random node this often (0: never)")
	fs.DurationVar(&cfg.StopFor, "stop-for", cfg.StopFor, "how long a node stays stopped (default: the lease + 1s)")
	fs.StringVar(&cfg.PGRestartCmd, "pg-restart-cmd", "", "shell command that restarts PostgreSQL, run once during the run (e.g. \"pg_ctlcluster --skip-systemctl-redirect 15 main restart\")")
	fs.DurationVar(&cfg.PGRestartAt, "pg-restart-at", 0, "when to run --pg-restart-cmd (default: half-way)")
	fs.DurationVar(&cfg.Lease, "lease", cfg.Lease, "the nodes' --lease")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "the nodes' --heartbeat")
	fs.StringVar(&nodeArgs, "node-args", "", "extra serve flags, separated by spaces")
	fs.BoolVar(&cfg.TLS, "tls", false, "run the cluster under mutual TLS, with a throwaway CA made for the run")
	fs.DurationVar(&cfg.CheckTimeout, "check-timeout", cfg.CheckTimeout, "time limit of the linearizability check; running out of it fails the run")
	fs.StringVar(&cfg.OutDir, "out-dir", "", "where to write the visualisation, history and node logs on a violation (default: the working directory)")
	fs.StringVar(&cfg.HistoryFile, "history", "", "write the whole history (every call, every fault) to this JSON file")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the clients' choices (default: random)")
	fs.StringVar(&cfg.Binary, "bin", "", "containerd-lite binary the nodes run (default: this one)")
	fs.DurationVar(&cfg.ProgressEvery, "progress", cfg.ProgressEvery, "log progress this often (0: never)")
	quiet := fs.Bool("quiet", false, "log nothing while running; print only the summary")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err) // a bad command line: exit 2
	}
	if fs.NArg() > 0 {
		return usagef("torture takes no arguments, got %q", fs.Args())
	}
	cfg.NodeArgs = strings.Fields(nodeArgs)
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("torture: find this binary for the nodes (give --bin): %w", err)
		}
		cfg.Binary = exe
	}
	if err := cfg.Validate(); err != nil {
		return usagef("%v", err)
	}
	if !*quiet {
		cfg.Logger = slog.New(slog.NewTextHandler(m.Stderr, nil))
	}

	// Interrupted, the run still kills its nodes on the way out.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := torture.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := r.WriteSummary(m.Stdout); err != nil {
		return err
	}
	return r.Err()
}
