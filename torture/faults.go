package torture

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/containerd-lite/containerd-lite/internal/cluster"
)

// restartRetry is the pause between attempts to restart a killed node that
// would not start (while PostgreSQL restarts, say).
const restartRetry = 500 * time.Millisecond

// pgRestartTimeout bounds the PostgreSQL restart command.
const pgRestartTimeout = 2 * time.Minute

type nodeState uint8

const (
	nodeUp     nodeState = iota
	nodeDown             // killed, not yet serving again
	nodeFrozen           // SIGSTOPped
)

// injector injects the faults of a run on a schedule, in goroutines it
// owns, until finish. It keeps at least one node serving whenever there is
// more than one.
type injector struct {
	cfg   *Config
	nodes []*cluster.Node
	since func() time.Duration
	log   *slog.Logger

	ctx    context.Context // canceled by finish when healing takes too long
	cancel context.CancelFunc
	stop   chan struct{} // closed by finish: no new faults
	wg     sync.WaitGroup

	mu       sync.Mutex
	rng      *rand.Rand
	state    []nodeState
	faults   []Fault
	retries  int // restarts that failed and were tried again
	skipped  int // faults not injected, to keep a node serving
	failures []string
}

func newInjector(ctx context.Context, cfg *Config, nodes []*cluster.Node, since func() time.Duration, seed uint64, log *slog.Logger) *injector {
	in := &injector{
		cfg: cfg, nodes: nodes, since: since, log: log,
		stop:  make(chan struct{}),
		rng:   rand.New(rand.NewPCG(seed, 0xfa017)),
		state: make([]nodeState, len(nodes)),
	}
	in.ctx, in.cancel = context.WithCancel(ctx)
	return in
}

// start starts the fault loops the config asks for, and the watch for
// nodes that die on their own.
func (in *injector) start() {
	in.wg.Go(in.watchLoop)
	if in.cfg.KillEvery > 0 {
		in.wg.Go(in.killLoop)
	}
	if in.cfg.StopEvery > 0 {
		in.wg.Go(in.stopLoop)
	}
	if in.cfg.PGRestartCmd != "" {
		in.wg.Go(in.pgRestart)
	}
}

// finish stops injecting faults and heals the cluster: frozen nodes are
// resumed and killed nodes restarted. It waits up to timeout for that, then
// gives up on the nodes still down. It returns the faults injected.
func (in *injector) finish(timeout time.Duration) []Fault {
	close(in.stop)
	done := make(chan struct{})
	go func() { in.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		in.fail("the cluster did not heal within %v of the end of the run", timeout)
		in.cancel()
		<-done
	}
	in.cancel()
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.faults
}

// pick chooses a random node that is up, such that another one stays up,
// and marks it with s. It returns -1 when there is none.
func (in *injector) pick(s nodeState) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	var up []int
	for i, st := range in.state {
		if st == nodeUp {
			up = append(up, i)
		}
	}
	if len(up) == 0 || (len(up) == 1 && len(in.nodes) > 1) {
		in.skipped++
		return -1
	}
	i := up[in.rng.IntN(len(up))]
	in.state[i] = s
	return i
}

func (in *injector) setState(i int, s nodeState) {
	in.mu.Lock()
	in.state[i] = s
	in.mu.Unlock()
}

// record appends a fault and returns its index, for end.
func (in *injector) record(f Fault) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults = append(in.faults, f)
	return len(in.faults) - 1
}

// end closes fault i.
func (in *injector) end(i int, errMsg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults[i].Until = in.since()
	in.faults[i].Err = errMsg
}

func (in *injector) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	in.log.Error("fault injection: " + msg)
	in.mu.Lock()
	in.failures = append(in.failures, msg)
	in.mu.Unlock()
}

// count returns the number of faults injected so far.
func (in *injector) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.faults)
}

// stats returns the restarts retried, the faults skipped and the failures
// of the injection.
func (in *injector) stats() (retries, skipped int, failures []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.retries, in.skipped, append([]string(nil), in.failures...)
}

// sleep waits for d, or less if stop is closed; it reports whether the
// whole d passed.
func (in *injector) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-in.stop:
		return false
	}
}

func (in *injector) killLoop() {
	tick := time.NewTicker(in.cfg.KillEvery)
	defer tick.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-tick.C:
		}
		i := in.pick(nodeDown)
		if i < 0 {
			in.log.Info("SIGKILL skipped: keeping a node serving")
			continue
		}
		n := in.nodes[i]
		f := in.record(Fault{Kind: FaultKill, Node: i, Addr: n.Addr(), At: in.since()})
		if err := n.Kill(); err != nil {
			in.fail("SIGKILL node %d (%s): %v", i, n.Addr(), err)
		}
		in.log.Info("SIGKILL", "node", i, "addr", n.Addr())
		in.wg.Go(func() { in.restart(i, f) })
	}
}

// restart brings killed node i back on its address after RestartAfter,
// trying again until it serves or the injector gives up.
func (in *injector) restart(i, f int) {
	n := in.nodes[i]
	t := time.NewTimer(in.cfg.RestartAfter)
	select {
	case <-t.C:
	case <-in.ctx.Done():
	}
	t.Stop()
	for {
		if in.ctx.Err() != nil {
			in.fail("node %d (%s) was not restarted: %v", i, n.Addr(), in.ctx.Err())
			in.end(f, "not restarted")
			return
		}
		err := n.Restart(in.ctx)
		if err == nil {
			break
		}
		in.mu.Lock()
		in.retries++
		in.mu.Unlock()
		in.log.Warn("restart failed; trying again", "node", i, "addr", n.Addr(), "err", firstLine(err.Error()))
		t := time.NewTimer(restartRetry)
		select {
		case <-t.C:
		case <-in.ctx.Done():
		}
		t.Stop()
	}
	in.end(f, "")
	in.setState(i, nodeUp)
	in.log.Info("restarted", "node", i, "addr", n.Addr())
}

// watchEvery is how often the injector looks for nodes that exited on
// their own.
const watchEvery = 250 * time.Millisecond

// watchLoop fails the run when a node exits without being killed (a crash
// is a finding in itself) and restarts it, so that the run goes on.
func (in *injector) watchLoop() {
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-tick.C:
		}
		for i, n := range in.nodes {
			in.mu.Lock()
			crashed := in.state[i] == nodeUp && !n.Running()
			if crashed {
				in.state[i] = nodeDown
			}
			in.mu.Unlock()
			if !crashed {
				continue
			}
			in.fail("node %d (%s) exited on its own; its log ends with:\n%s", i, n.Addr(), tail(n.Logs(), 20))
			f := in.record(Fault{Kind: FaultCrash, Node: i, Addr: n.Addr(), At: in.since()})
			in.wg.Go(func() { in.restart(i, f) })
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (in *injector) stopLoop() {
	tick := time.NewTicker(in.cfg.StopEvery)
	defer tick.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-tick.C:
		}
		i := in.pick(nodeFrozen)
		if i < 0 {
			in.log.Info("SIGSTOP skipped: keeping a node serving")
			continue
		}
		n := in.nodes[i]
		f := in.record(Fault{Kind: FaultStop, Node: i, Addr: n.Addr(), At: in.since()})
		if err := n.Stop(); err != nil {
			in.fail("SIGSTOP node %d (%s): %v", i, n.Addr(), err)
		}
		in.log.Info("SIGSTOP", "node", i, "addr", n.Addr(), "for", in.cfg.stopFor())
		in.sleep(in.cfg.stopFor())
		if err := n.Cont(); err != nil {
			in.fail("SIGCONT node %d (%s): %v", i, n.Addr(), err)
		}
		in.end(f, "")
		in.setState(i, nodeUp)
		in.log.Info("SIGCONT", "node", i, "addr", n.Addr())
		// The ticker kept ticking while the node was frozen: start the
		// next period now, so that frozen spells do not run back to back.
		tick.Reset(in.cfg.StopEvery)
	}
}

func (in *injector) pgRestart() {
	if !in.sleep(in.cfg.pgRestartAt()) {
		return
	}
	f := in.record(Fault{Kind: FaultPGRestart, Node: -1, At: in.since()})
	in.log.Info("restarting PostgreSQL", "cmd", in.cfg.PGRestartCmd)
	ctx, cancel := context.WithTimeout(in.ctx, pgRestartTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", in.cfg.PGRestartCmd)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := fmt.Sprintf("%v: %s", err, bytes.TrimSpace(out.Bytes()))
		in.end(f, msg)
		in.fail("PostgreSQL restart command %q: %s", in.cfg.PGRestartCmd, msg)
		return
	}
	in.end(f, "")
	in.log.Info("PostgreSQL restarted")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
