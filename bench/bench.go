package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/memstore"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/sqlitestore"
	"github.com/containerd-lite/containerd-lite/registry"
)

// Report is the outcome of a run.
type Report struct {
	// Config is the configuration run, with defaults applied.
	Config Config
	// Schema is the scratch schema the run worked in (dropped at its end);
	// empty when no PostgreSQL workload ran.
	Schema string
	// Environment.
	GoVersion  string
	GOOS       string
	GOARCH     string
	NumCPU     int
	GOMAXPROCS int
	Started    time.Time
	// LoadBefore and LoadAfter are the 1-minute load averages at the start
	// and end of the run (Linux; empty elsewhere). Other processes on the
	// machine skew every figure: compare runs made at low load.
	LoadBefore, LoadAfter string
	// StateBytes is the encoded state of every cart (and raw row), and
	// SKUs the number of SKUs in a cart.
	StateBytes int
	SKUs       int
	// Cells in report order: by workload, then concurrency as configured.
	Cells []Cell
	// Partial is set when the run stopped early (an error or an
	// interrupt): Cells holds what was measured before.
	Partial bool
}

// Cell returns the cell of workload w at concurrency c.
func (r *Report) Cell(w Workload, c int) (Cell, bool) {
	for _, cell := range r.Cells {
		if cell.Workload == w && cell.C == c {
			return cell, true
		}
	}
	return Cell{}, false
}

// Run measures the configured workloads at each concurrency. The cells of
// one concurrency run one after another, so that a workload and its raw
// ceiling are measured close in time. cfg may be nil for the defaults
// (which need StoreURL, though). On error the report holds the cells
// measured so far.
func Run(ctx context.Context, cfg *Config) (rep *Report, err error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rep = &Report{
		Config: c, GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Started: time.Now(),
		LoadBefore: loadAverage(),
	}
	defer func() {
		if rep == nil {
			return
		}
		rep.LoadAfter = loadAverage()
		rep.Partial = err != nil
		rep.sort()
		rep.ratios()
	}()
	r := &run{cfg: c, reg: registry.New()}
	if err := cart.Register(r.reg); err != nil {
		return nil, err
	}
	comp, _ := r.reg.Lookup(cart.Type.Name())
	r.stateVersion = comp.Options().StateVersion
	if r.shape, err = newCartShape(c.StateSize); err != nil {
		return nil, err
	}
	rep.StateBytes, rep.SKUs = len(r.shape.state), len(r.shape.skus)
	if c.CPUProfileDir != "" {
		if err := os.MkdirAll(c.CPUProfileDir, 0o755); err != nil {
			return nil, err
		}
	}

	if slices.ContainsFunc(c.Workloads, Workload.NeedsPostgres) {
		fmt.Fprintf(c.Progress, "bench: creating a scratch schema in %s\n", redact(c.StoreURL))
		if r.scratch, err = createScratch(ctx, c.StoreURL); err != nil {
			return nil, err
		}
		rep.Schema = r.scratch.name
		defer func() {
			if derr := r.scratch.drop(); derr != nil {
				err = errors.Join(err, derr)
			}
		}()
		mctx, cancel := context.WithTimeout(ctx, setupTimeout)
		_, err := pgstore.Migrate(mctx, r.scratch.url)
		cancel()
		if err != nil {
			return rep, fmt.Errorf("bench: migrate the scratch schema: %w", err)
		}
	}

	// Rounds repeat the whole sequence, so that every cell is measured
	// several times at different moments; each cell reports its median
	// round.
	rounds := map[cellKey][]Cell{}
	defer func() { rep.Cells = medians(rounds) }()
	for round := range c.Rounds {
		r.round = round
		for _, n := range c.Concurrency {
			for _, w := range Workloads() {
				if !slices.Contains(c.Workloads, w) {
					continue
				}
				cell, err := r.cell(ctx, w, n)
				if err != nil {
					return rep, fmt.Errorf("bench: %s at c=%d: %w", w, n, err)
				}
				cell.Workload = w
				roundNote := ""
				if c.Rounds > 1 {
					roundNote = fmt.Sprintf(" (round %d of %d)", round+1, c.Rounds)
				}
				fmt.Fprintf(c.Progress, "bench: %-13s c=%-4d %9.0f calls/s  p50 %7.3f ms  p99 %7.3f ms  %6.1f allocs/call%s\n",
					w, n, cell.CallsPerSec, ms(cell.P50), ms(cell.P99), cell.AllocsPerCall, roundNote)
				key := cellKey{w, n}
				rounds[key] = append(rounds[key], cell)
			}
		}
	}
	return rep, nil
}

type cellKey struct {
	w Workload
	c int
}

// medians returns, for each cell measured, its round of median calls/s
// (the lower middle of an even count), with Rounds and Spread set.
func medians(rounds map[cellKey][]Cell) []Cell {
	out := make([]Cell, 0, len(rounds))
	for _, cells := range rounds {
		slices.SortFunc(cells, func(a, b Cell) int { return cmp.Compare(a.CallsPerSec, b.CallsPerSec) })
		m := cells[(len(cells)-1)/2]
		m.Rounds = len(cells)
		if m.CallsPerSec > 0 {
			m.Spread = (cells[len(cells)-1].CallsPerSec - cells[0].CallsPerSec) / m.CallsPerSec
		}
		out = append(out, m)
	}
	return out
}

// sort puts the cells in report order.
func (r *Report) sort() {
	order := Workloads()
	slices.SortStableFunc(r.Cells, func(a, b Cell) int {
		if d := slices.Index(order, a.Workload) - slices.Index(order, b.Workload); d != 0 {
			return d
		}
		return slices.Index(r.Config.Concurrency, a.C) - slices.Index(r.Config.Concurrency, b.C)
	})
}

// ratios fills in each cell's ratio to its baseline at the same c.
func (r *Report) ratios() {
	for i := range r.Cells {
		cell := &r.Cells[i]
		base := cell.Workload.Baseline()
		if base == "" {
			continue
		}
		if b, ok := r.Cell(base, cell.C); ok && b.CallsPerSec > 0 {
			cell.Baseline = base
			cell.Ratio = cell.CallsPerSec / b.CallsPerSec
		}
	}
}

// run is the state of one Run.
type run struct {
	cfg          Config
	round        int // of cfg.Rounds, from 0
	reg          *registry.Registry
	stateVersion int
	shape        *cartShape
	scratch      *scratch
}

func (r *run) loop(w Workload, c int, call callFunc) loop {
	l := loop{c: c, warmup: r.cfg.Warmup, duration: r.cfg.Duration, call: call}
	if r.cfg.CPUProfileDir != "" {
		name := fmt.Sprintf("%s-c%d.pprof", w, c)
		if r.cfg.Rounds > 1 {
			name = fmt.Sprintf("%s-c%d-r%d.pprof", w, c, r.round+1)
		}
		l.profile = filepath.Join(r.cfg.CPUProfileDir, name)
	}
	return l
}

// cell sets up workload w for c callers, measures it and tears it down.
func (r *run) cell(ctx context.Context, w Workload, c int) (Cell, error) {
	tag := fmt.Sprintf("%s-c%d-r%d", w, c, r.round)
	switch w {
	case RawUpsert:
		u, err := newRawUpsert(ctx, r.scratch.url, c, r.shape.state, tag)
		if err != nil {
			return Cell{}, err
		}
		defer u.close()
		cell, _, err := r.loop(w, c, u.call).run(ctx)
		return cell, err

	case RawYamux:
		e, err := newYamuxEcho(c, r.echoPayload(tag, c))
		if err != nil {
			return Cell{}, err
		}
		defer e.close()
		cell, _, err := r.loop(w, c, e.call).run(ctx)
		return cell, err

	case RawTCP:
		reqLen, replyLen, err := r.echoSizes(tag, c)
		if err != nil {
			return Cell{}, err
		}
		e, err := newTCPEcho(c, reqLen, replyLen)
		if err != nil {
			return Cell{}, err
		}
		defer e.close()
		cell, _, err := r.loop(w, c, e.call).run(ctx)
		return cell, err

	case CartPG, CartMem, CartSQLite:
		st, cleanup, err := r.store(ctx, w)
		if err != nil {
			return Cell{}, err
		}
		defer cleanup()
		ids := ids(tag, c)
		if err := seed(ctx, st, r.stateVersion, ids, r.shape.state, 16); err != nil {
			st.Close()
			return Cell{}, err
		}
		n, err := startCartNode(ctx, r.reg, st)
		if err != nil {
			return Cell{}, err
		}
		cc := newCartCalls(n.client, r.shape, ids)
		cell, t, err := r.loop(w, c, cc.call).run(ctx)
		stats := n.node.Stats()
		err = errors.Join(err, n.close())
		if err == nil && (stats.Writes != t.all || stats.Failed != 0) {
			err = fmt.Errorf("the node wrote %d states and failed %d calls for %d successful calls: every call should write once", stats.Writes, stats.Failed, t.all)
		}
		return cell, err

	case ReactivatePG:
		st, cleanup, err := r.store(ctx, w)
		if err != nil {
			return Cell{}, err
		}
		defer cleanup()
		warm := ids(tag+"-warm", c)
		pool := ids(tag, r.cfg.Reactivations)
		if err := seed(ctx, st, r.stateVersion, append(slices.Clone(warm), pool...), r.shape.state, 16); err != nil {
			st.Close()
			return Cell{}, err
		}
		n, err := startCartNode(ctx, r.reg, st)
		if err != nil {
			return Cell{}, err
		}
		re := &reactivations{client: n.client, sku: r.shape.skus[0], ids: pool}
		l := r.loop(w, c, re.call)
		l.warm = newCartCalls(n.client, r.shape, warm).call
		cell, t, err := l.run(ctx)
		stats := n.node.Stats()
		err = errors.Join(err, n.close())
		// Every reactivation call activated its instance; the warm-up
		// activated at most one instance per caller.
		if err == nil && (stats.Activations < t.main || stats.Activations > t.main+int64(c) || stats.Failed != 0) {
			err = fmt.Errorf("the node made %d activations (and failed %d calls) for %d first calls", stats.Activations, stats.Failed, t.main)
		}
		return cell, err
	}
	return Cell{}, fmt.Errorf("unknown workload %q", w)
}

// store opens the store of a containerd-lite workload; cleanup removes
// what it left on disk once the store is closed.
func (r *run) store(ctx context.Context, w Workload) (st passivate.Store, cleanup func(), err error) {
	switch w {
	case CartMem:
		return memstore.New(), func() {}, nil
	case CartSQLite:
		dir, err := os.MkdirTemp("", "containerd-lite-bench-")
		if err != nil {
			return nil, nil, err
		}
		st, err := sqlitestore.Open(filepath.Join(dir, "bench.db"), nil)
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return st, func() { os.RemoveAll(dir) }, nil
	}
	st, err = pgstore.Open(ctx, r.scratch.url, nil)
	return st, func() {}, err
}

// echoPayload is what the echo callers send: the request and reply of a
// cart Add call on a cart of the run's shape.
func (r *run) echoPayload(tag string, c int) echoPayload {
	return echoPayload{ids: ids(tag, c), args: r.shape.args, result: r.shape.result}
}

// echoSizes returns the frame sizes of a yamux echo call (without the
// header).
func (r *run) echoSizes(tag string, c int) (req, reply int, err error) {
	p := r.echoPayload(tag, c)
	rq, err := echoEnc.Marshal(&echoCall{
		Component: "cart", ID: p.ids[c-1], Method: "Add", Args: p.args, Client: make([]byte, 16),
		Seq: 1 << 20, Ack: 1 << 20, Timeout: int64(30 * time.Second / time.Microsecond),
	})
	if err != nil {
		return 0, 0, err
	}
	rp, err := echoEnc.Marshal(&echoReply{Result: p.result})
	if err != nil {
		return 0, 0, err
	}
	return len(rq) + echoHeader, len(rp) + echoHeader, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
