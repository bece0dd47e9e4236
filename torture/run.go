package torture

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/internal/cluster"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/registry"
	"github.com/containerd-lite/containerd-lite/rpc"
)

// sku is the cart item every update adds one of: its quantity is the
// instance's counter.
const sku = "t"

const (
	// healTimeout bounds bringing every node back after the run.
	healTimeout = 2 * time.Minute
	// finalReadTimeout bounds the final read of one instance, retries
	// included.
	finalReadTimeout = time.Minute
	// takeoverMsg is what a node logs when it takes an instance over from
	// a node proven dead.
	takeoverMsg = "took over from a dead node"
	// leaseLostMsg is what a node logs when it finds it lost its lease
	// and registers again under a new incarnation.
	leaseLostMsg = "lease lost; discarding activations"
)

// Run starts a cluster as cfg says, attacks it for cfg.Duration, heals it,
// reads every instance a last time and judges the history. It returns an
// error, and no report, when the run could not be made: an invalid config,
// a store that cannot be prepared, nodes that do not start, or ctx ending.
// A run that found a violation returns its report: Report.Err says what it
// found.
func Run(ctx context.Context, cfg *Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Report{Config: *cfg, RunID: randomHex(4), Seed: cfg.Seed}
	r.Config.Logger = nil
	if r.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		r.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}

	store := cfg.Store
	switch {
	case store == "":
		dir, err := os.MkdirTemp("", "containerd-lite-torture-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		store = filepath.Join(dir, "torture.db")
		r.Store = "embedded store " + store + " (fresh)"
	case isPostgres(store):
		if _, err := pgstore.Migrate(ctx, store); err != nil {
			return nil, fmt.Errorf("torture: migrate %s: %w", redact(store), err)
		}
		r.Store = "PostgreSQL " + redact(store)
	default:
		r.Store = "embedded store " + store
	}

	var (
		nodeArgs  = cfg.NodeArgs
		clientTLS *tls.Config
	)
	if cfg.TLS {
		dir, err := os.MkdirTemp("", "containerd-lite-torture-pki-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		p, err := newRunPKI(dir, cfg.Duration+healTimeout+24*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("torture: make certificates: %w", err)
		}
		nodeArgs = append(slices.Clone(nodeArgs), p.serveArgs...)
		clientTLS = p.client
	}
	nodes, err := startNodes(ctx, cfg, store, nodeArgs, log)
	defer func() {
		for _, n := range nodes {
			_ = n.Kill()
		}
	}()
	if err != nil {
		return nil, err
	}
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	log.Info("nodes serving", "nodes", addrs, "store", r.Store)

	instances := make([]string, cfg.Instances)
	for k := range instances {
		instances[k] = fmt.Sprintf("torture-%s-%d", r.RunID, k)
	}
	clients := make([]*rpc.Client, cfg.Clients+1) // the last one makes the final reads
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	shuffle := mrand.New(mrand.NewPCG(r.Seed, 0x5eed))
	for i := range clients {
		// Each client lists the nodes in its own order, so that they first
		// try different nodes: instances get activated all over the
		// cluster, and every kill hits some of them.
		own := slices.Clone(addrs)
		shuffle.Shuffle(len(own), func(a, b int) { own[a], own[b] = own[b], own[a] })
		if clients[i], err = rpc.NewClient(rpc.ClientConfig{Nodes: own, CallTimeout: cfg.CallTimeout, TLS: clientTLS}); err != nil {
			return nil, err
		}
	}

	// The attack: clients and faults, until the time is up.
	began := time.Now()
	since := func() time.Duration { return time.Since(began) }
	inj := newInjector(ctx, cfg, nodes, since, r.Seed, log)
	var (
		load     = make(chan struct{}) // closed when the time is up
		progress counters
		wg       sync.WaitGroup
	)
	workers := make([]*worker, cfg.Clients)
	for i := range workers {
		workers[i] = &worker{
			id: i, client: clients[i], instances: instances, cfg: cfg, since: since, progress: &progress,
			rng: mrand.New(mrand.NewPCG(r.Seed, uint64(i))),
		}
		wg.Go(func() { workers[i].run(ctx, load) })
	}
	inj.start()
	wg.Go(func() { reportProgress(log, cfg, load, since, &progress, inj) })
	timer := time.NewTimer(cfg.Duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	close(load)
	log.Info("time is up: healing the cluster")
	faults := inj.finish(healTimeout)
	r.RestartRetries, r.FaultsSkipped, r.FaultErrors = inj.stats()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// The final reads, once every node is back.
	h := &History{Faults: faults}
	for _, w := range workers {
		h.Ops = append(h.Ops, w.ops...)
	}
	final := &worker{id: cfg.Clients, client: clients[cfg.Clients], cfg: cfg, since: since, progress: &progress}
	for _, inst := range instances {
		h.Ops = append(h.Ops, final.finalRead(ctx, inst)...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		logs := n.Logs()
		r.Takeovers += strings.Count(logs, takeoverMsg)
		r.LeaseLosses += strings.Count(logs, leaseLostMsg)
	}

	log.Info("checking the history", "ops", len(h.Ops))
	r.History = h
	r.Verdict = Check(h, cfg.CheckTimeout)
	r.summarize()
	if cfg.HistoryFile != "" {
		if err := writeJSON(cfg.HistoryFile, h); err != nil {
			r.FileErrors = append(r.FileErrors, err.Error())
		}
	}
	if !r.Verdict.OK() || len(r.FaultErrors) > 0 {
		r.Files, r.FileErrors = r.writeEvidence(nodes)
	}
	return r, nil
}

// startNodes starts cfg.Nodes nodes on store. On error it returns the
// nodes started so far, for the caller to kill.
func startNodes(ctx context.Context, cfg *Config, store string, extra []string, log *slog.Logger) ([]*cluster.Node, error) {
	args := append([]string{
		"--store", store,
		"--lease", cfg.Lease.String(),
		"--heartbeat", cfg.Heartbeat.String(),
	}, extra...)
	var nodes []*cluster.Node
	for i := range cfg.Nodes {
		n, err := cluster.Start(ctx, cfg.Binary, "", args...)
		if err != nil {
			return nodes, fmt.Errorf("torture: start node %d: %w", i, err)
		}
		nodes = append(nodes, n)
		log.Debug("node started", "node", i, "addr", n.Addr())
	}
	return nodes, nil
}

// counters are the live totals behind the progress lines.
type counters struct {
	ops, acked, failed atomic.Int64
}

func reportProgress(log *slog.Logger, cfg *Config, load <-chan struct{}, since func() time.Duration, c *counters, inj *injector) {
	if cfg.ProgressEvery <= 0 {
		return
	}
	tick := time.NewTicker(cfg.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-load:
			return
		case <-tick.C:
		}
		log.Info("progress", "t", since().Round(time.Second), "ops", c.ops.Load(), "acked", c.acked.Load(), "failed", c.failed.Load(), "faults", inj.count())
	}
}

// worker is one client: it calls one call at a time and records each.
type worker struct {
	id        int
	client    *rpc.Client
	instances []string
	cfg       *Config
	since     func() time.Duration
	rng       *mrand.Rand
	progress  *counters
	ops       []Op
}

// run calls until load is closed.
func (w *worker) run(ctx context.Context, load <-chan struct{}) {
	for {
		select {
		case <-load:
			return
		default:
		}
		inst := w.instances[w.rng.IntN(len(w.instances))]
		kind := Add
		if w.rng.Float64() < w.cfg.ReadFraction {
			kind = Get
		}
		op := w.call(ctx, kind, inst)
		w.ops = append(w.ops, op)
		w.progress.ops.Add(1)
		switch {
		case !op.OK:
			w.progress.failed.Add(1)
		case kind == Add:
			w.progress.acked.Add(1)
		}
	}
}

// call makes one call and records it.
func (w *worker) call(ctx context.Context, kind OpKind, inst string) Op {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	op := Op{Client: w.id, Instance: inst, Kind: kind, Call: w.since()}
	var (
		value int
		err   error
	)
	if kind == Add {
		var line cart.Line
		line, err = cart.Add.Call(ctx, w.client, inst, cart.Item{SKU: sku, Qty: 1})
		value = line.Qty
	} else {
		var sum cart.Summary
		sum, err = cart.Get.Call(ctx, w.client, inst)
		value = sum.Items[sku]
	}
	op.Return = w.since()
	if err != nil {
		op.Code, op.Err = registry.CodeOf(err), err.Error()
		return op
	}
	op.OK, op.Value = true, value
	return op
}

// finalRead reads inst until a read succeeds or finalReadTimeout passes,
// and returns the attempts.
func (w *worker) finalRead(ctx context.Context, inst string) []Op {
	var ops []Op
	deadline := time.Now().Add(finalReadTimeout)
	for ctx.Err() == nil {
		op := w.call(ctx, Get, inst)
		op.Final = true
		ops = append(ops, op)
		if op.OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ops
}

// writeEvidence writes, into OutDir, what a violation needs looked at: the
// checker's visualisation, the bad instances' history and every node's
// log. It returns the files written and the errors met.
func (r *Report) writeEvidence(nodes []*cluster.Node) (files, errs []string) {
	dir := r.Config.OutDir
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, []string{err.Error()}
	}
	name := func(suffix string) string { return filepath.Join(dir, "torture-"+r.RunID+suffix) }
	write := func(path string, err error) {
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", path, err))
			return
		}
		files = append(files, path)
	}
	if r.Verdict.Result != Linearizable || len(r.Verdict.Bad) > 0 {
		p := name(".html")
		write(p, r.Verdict.Visualize(p))
	}
	if len(r.Verdict.Bad) > 0 {
		p := name("-history.json")
		write(p, writeJSON(p, r.Verdict.BadHistory()))
	}
	for i, n := range nodes {
		p := name(fmt.Sprintf("-node%d.log", i))
		write(p, os.WriteFile(p, []byte(n.Logs()), 0o644))
	}
	return files, errs
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// redact hides the password of a URL.
func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	scheme, _, _ := strings.Cut(u, "://")
	return scheme + "://…"
}

var errInconclusive = errors.New("the linearizability check was inconclusive")
