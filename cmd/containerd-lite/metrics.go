package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/passivate"
)

// metrics exports a node's metrics to Prometheus, and a readiness check.
type metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	state    *prometheus.HistogramVec
	writes   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "containerd_lite_calls_total",
			Help: "Calls served, by component, method and error code (empty code: success).",
		}, []string{"component", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "containerd_lite_call_duration_seconds",
			Help:    "Time from a call's arrival to its reply, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100 µs to 3.3 s
		}, []string{"component", "method"}),
		state: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "containerd_lite_state_bytes",
			Help:    "Encoded size of an instance's state after a successful call.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 10), // 64 B to 16 MiB
		}, []string{"component"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "containerd_lite_call_outcomes_total",
			Help: "Successful calls by what they cost the store: written (state committed), unchanged (no write) or replayed (answered from a completion record).",
		}, []string{"component", "outcome"}),
	}
	reg.MustRegister(m.calls, m.duration, m.state, m.writes)
	return m
}

// ObserveCall implements container.Observer.
func (m *metrics) ObserveCall(ev container.CallEvent) {
	m.calls.WithLabelValues(ev.Component, ev.Method, string(ev.Code)).Inc()
	if ev.Component == "" || ev.Method == "" {
		return
	}
	m.duration.WithLabelValues(ev.Component, ev.Method).Observe(ev.Duration.Seconds())
	if ev.Code != "" {
		return
	}
	switch {
	case ev.Replayed:
		m.writes.WithLabelValues(ev.Component, "replayed").Inc()
	case ev.Wrote:
		m.writes.WithLabelValues(ev.Component, "written").Inc()
	default:
		m.writes.WithLabelValues(ev.Component, "unchanged").Inc()
	}
	if ev.StateBytes > 0 {
		m.state.WithLabelValues(ev.Component).Observe(float64(ev.StateBytes))
	}
}

// registerNode exports the node's cumulative counters, read when scraped.
func registerNode(reg prometheus.Registerer, node *container.Container, st passivate.Store) {
	counter := func(name, help string, f func(container.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(node.Stats())) }))
	}
	counter("containerd_lite_activations_total", "Instances activated on this node (claimed and loaded).", func(s container.Stats) int64 { return s.Activations })
	counter("containerd_lite_passivations_total", "Instances passivated (idle or evicted) and released.", func(s container.Stats) int64 { return s.Passivations })
	counter("containerd_lite_removals_total", "Instances ended by a removing method.", func(s container.Stats) int64 { return s.Removals })
	counter("containerd_lite_fenced_writes_total", "Writes refused because another node had taken the instance over.", func(s container.Stats) int64 { return s.Fenced })
	counter("containerd_lite_stale_requests_total", "Stale copies of acknowledged calls, refused.", func(s container.Stats) int64 { return s.Stale })
	counter("containerd_lite_panics_total", "Component methods that panicked.", func(s container.Stats) int64 { return s.Panics })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "containerd_lite_active_instances", Help: "Instances in memory on this node.",
	}, func() float64 { return float64(node.ActiveInstances()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "containerd_lite_lease_valid", Help: "1 while the node holds a valid lease and serves calls.",
	}, func() float64 {
		if node.LeaseValid() {
			return 1
		}
		return 0
	}))
	if g, ok := st.(interface{ GroupStats() passivate.GroupStats }); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "containerd_lite_store_commits_total", Help: "Group commits to the store (writes per commit: store_writes_total over this).",
		}, func() float64 { return float64(g.GroupStats().Groups) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "containerd_lite_store_writes_total", Help: "State writes committed to the store in groups.",
		}, func() float64 { return float64(g.GroupStats().Writes) }))
	}
}

// serveMetrics serves /metrics and /readyz (200 while the node holds its
// lease, 503 otherwise) on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, node *container.Container, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !node.LeaseValid() {
			http.Error(w, "not serving: no valid lease", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server", "err", err)
		}
	}()
	log.Info("metrics", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// newRegistry returns a Prometheus registry with the Go runtime and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
