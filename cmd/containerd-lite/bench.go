package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/containerd-lite/containerd-lite/bench"
)

func (m *Main) bench(ctx context.Context, args []string) error {
	fs := m.flags("bench", "--store postgres://... [flags]")
	d := bench.DefaultConfig()
	var (
		store       = fs.String("store", "", "PostgreSQL URL (required). The bench creates a scratch schema bench_<random> there and drops it at the end")
		duration    = fs.Duration("duration", d.Duration, "measured window of each cell (one workload at one concurrency)")
		warmup      = fs.Duration("warmup", d.Warmup, "unmeasured warm-up before each cell (0 for none)")
		concurrency = fs.String("concurrency", "1,8,64", "comma-separated numbers of concurrent callers")
		stateSize   = fs.Int("state-size", d.StateSize, "encoded state size of each instance and raw row, in bytes")
		workloads   = fs.String("workloads", "all", "comma-separated workloads: raw-upsert, cart-pg, raw-yamux, raw-tcp, cart-mem, cart-sqlite, reactivate-pg, or all")
		rounds      = fs.Int("rounds", d.Rounds, "repeat the whole sequence this many times and report each cell's median round (for a busy machine)")
		reacts      = fs.Int("reactivations", d.Reactivations, "passivated instances prepared per reactivate-pg cell (the cell ends when they are used up)")
		cpuprofile  = fs.String("cpuprofile", "", "directory to write a CPU profile of each cell's measured window to (WORKLOAD-cN.pprof)")
		jsonOut     = fs.String("json", "", "file to write the report to as JSON as well (durations in nanoseconds)")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("bench takes no arguments, got %q", fs.Args())
	}
	cfg := &bench.Config{
		StoreURL: *store, Duration: *duration, Warmup: *warmup, StateSize: *stateSize,
		Reactivations: *reacts, Rounds: *rounds, CPUProfileDir: *cpuprofile, Progress: m.Stderr,
	}
	var err error
	if cfg.Workloads, err = bench.ParseWorkloads(*workloads); err != nil {
		return usagef("--workloads: %v", err)
	}
	if cfg.Concurrency, err = bench.ParseConcurrency(*concurrency); err != nil {
		return usagef("--concurrency: %v", err)
	}
	needPG := slices.ContainsFunc(cfg.Workloads, bench.Workload.NeedsPostgres)
	switch {
	case *store == "" && needPG:
		return usagef("bench: --store postgres://... is required: the PostgreSQL server to measure against (the bench creates a scratch schema there and drops it at the end)")
	case *duration <= 0:
		return usagef("--duration must be positive")
	case *reacts <= 0:
		return usagef("--reactivations must be positive")
	case *rounds <= 0:
		return usagef("--rounds must be positive")
	}
	if *warmup == 0 {
		cfg.Warmup = -1 // none; zero would mean the default
	}
	if err := cfg.Validate(); err != nil {
		return usagef("%v", err)
	}

	// An interrupt ends the run early; the scratch schema is still dropped.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills the process at once
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Cells) > 0 {
		err = errors.Join(err, rep.WriteTable(m.Stdout))
		if *jsonOut != "" {
			err = errors.Join(err, writeJSON(*jsonOut, rep))
		}
	}
	return err
}

func writeJSON(path string, rep *bench.Report) error {
	r := *rep
	r.Config.StoreURL = redact(r.Config.StoreURL)
	r.Config.Progress = nil
	b, err := json.MarshalIndent(&r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
