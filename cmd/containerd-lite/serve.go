package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/rpc"
)

func (m *Main) serve(ctx context.Context, args []string) error {
	fs := m.flags("serve", "[--listen ADDR] [--store URL|PATH] [flags]")
	var (
		listen    = fs.String("listen", "127.0.0.1:7401", "TCP address to serve RPC on")
		advertise = fs.String("advertise", "", "address clients and peers use to reach this node (default: the listen address)")
		store     = fs.String("store", "", "postgres:// URL, or embedded store path (default ./"+DefaultDataDir+")")
		migrate   = fs.Bool("migrate", false, "apply PostgreSQL migrations before serving")
		lease     = fs.Duration("lease", 3*time.Second, "node lease: how long the node stays owner without a heartbeat")
		heartbeat = fs.Duration("heartbeat", time.Second, "lease renewal interval (at most lease/2)")
		idle      = fs.Duration("idle-timeout", 10*time.Minute, "passivate instances idle this long (components may override)")
		maxActive = fs.Int("max-active", 100_000, "instances kept in memory at most (least recently used are passivated)")
		maxState  = fs.Int("max-state", 1<<20, "bytes an encoded state may take (components may override)")
		maxFrame  = fs.Int("max-frame", rpc.DefaultMaxFrameSize, "bytes a wire frame may take")
		maxConns  = fs.Int("max-conns", rpc.DefaultMaxConns, "client connections served at once (past it, clients move to other nodes)")
		token     = fs.String("token", os.Getenv("CONTAINERD_LITE_TOKEN"), "shared secret clients must present (default $CONTAINERD_LITE_TOKEN)")
		drain     = fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGTERM waits for calls in flight")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		metricsAt = fs.String("metrics-listen", "", "serve Prometheus /metrics and /readyz on this address (default: off)")
	)
	tlsf := serveTLSFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve takes no arguments, got %q", fs.Args())
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"lease", *lease}, {"heartbeat", *heartbeat}, {"idle-timeout", *idle}} {
		if d.v <= 0 {
			return usagef("--%s must be positive, got %v", d.name, d.v)
		}
	}
	if *drain < 0 {
		return usagef("--shutdown-timeout must not be negative, got %v", *drain)
	}
	if *heartbeat > *lease/2 {
		return usagef("--heartbeat %v must be at most half of --lease %v", *heartbeat, *lease)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max-active", *maxActive}, {"max-state", *maxState}, {"max-conns", *maxConns}} {
		if n.v <= 0 {
			return usagef("--%s must be positive, got %d", n.name, n.v)
		}
	}
	if *maxFrame < 4096 {
		return usagef("--max-frame must be at least 4096 bytes, got %d", *maxFrame)
	}
	serverTLS, peerTLS, keyPair, err := tlsf.serverConfigs()
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	st, desc, err := openStore(ctx, *store, *migrate)
	if err != nil {
		return err
	}
	defer st.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	addr := *advertise
	if addr == "" {
		addr = ln.Addr().String()
		if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host).IsUnspecified() {
			ln.Close()
			return usagef("--listen %s is a wildcard address: give --advertise HOST:PORT so that clients can be redirected here", *listen)
		}
	}

	if keyPair != nil {
		check := func(cert *tls.Certificate) []string { return nodeWarnings(serverTLS, peerTLS, cert, addr) }
		for _, w := range check(keyPair.current()) {
			log.Warn("tls: " + w)
		}
		keyPair.watch(log, check)
	}

	var (
		promReg  = newRegistry()
		observer container.Observer
	)
	if *metricsAt != "" {
		observer = newMetrics(promReg)
	}
	node, err := container.New(container.Config{
		Registry: m.Registry, Store: st, Addr: addr,
		Lease: *lease, Heartbeat: *heartbeat, IdleTimeout: *idle,
		MaxActive: *maxActive, MaxStateSize: *maxState,
		ProveDead: rpc.Prober{TLS: peerTLS, Token: *token}.ProveDead,
		Observer:  observer,
		Logger:    log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	if err := node.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	if *metricsAt != "" {
		registerNode(promReg, node, st)
		stopMetrics, err := serveMetrics(ctx, *metricsAt, promReg, node, log)
		if err != nil {
			ln.Close()
			node.Shutdown(context.Background())
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		defer stopMetrics()
	}
	srv := rpc.NewServer(node, &rpc.ServerConfig{
		Incarnation: node.Incarnation(), Addr: addr, Token: *token, TLS: serverTLS, MaxFrameSize: *maxFrame, MaxConns: *maxConns, Logger: log,
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "addr", addr, "incarnation", node.Incarnation(), "store", desc, "components", m.Registry.Names(), "tls", tlsMode(serverTLS))

	select {
	case <-ctx.Done():
		stop() // a second signal kills the process at once
		log.Info("shutting down: draining calls and releasing instances")
	case err := <-served:
		node.Shutdown(context.Background())
		return fmt.Errorf("rpc server: %w", err)
	}
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	derr := node.Shutdown(dctx)
	serr := srv.Shutdown(dctx)
	if err := <-served; !errors.Is(err, rpc.ErrServerClosed) {
		log.Warn("rpc server", "err", err)
	}
	stats := node.Stats()
	log.Info("stopped", "calls", stats.Calls, "writes", stats.Writes, "activations", stats.Activations)
	return errors.Join(derr, serr)
}
