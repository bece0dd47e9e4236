package rpc

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// ClientConfig configures a Client. The zero value of a field means its
// default.
type ClientConfig struct {
	// Nodes are the seed addresses. The client learns the other live nodes
	// from the first node it reaches.
	Nodes []string
	// ClientID identifies this client for exactly-once retries; default a
	// random 16-byte id. Two clients must never share one.
	ClientID []byte
	// Token is presented in the handshake when the nodes require one.
	Token string
	// TLS, when set, dials TLS (and mTLS if it holds a certificate).
	TLS *tls.Config
	// DialTimeout bounds connecting plus the handshake.
	DialTimeout time.Duration
	// CallTimeout bounds a call, retries included, when its context has no
	// deadline of its own. Default DefaultCallTimeout.
	CallTimeout time.Duration
	// SuspectAfter is how long a node may stay silent while calls wait on
	// it before it is pinged; one more SuspectAfter without an answer
	// abandons the connection. Default DefaultSuspectAfter.
	SuspectAfter time.Duration
	// RefreshNodes is how often a client in use asks a connected node for
	// the live nodes, so that nodes started after it connected (a rolling
	// deploy) are known before the ones it knows are gone. Default
	// DefaultRefreshNodes; the refresh rides on calls and costs nothing
	// while the client is idle.
	RefreshNodes time.Duration
	// MaxFrameSize bounds frames both ways. Default DefaultMaxFrameSize.
	MaxFrameSize int
	// Logger receives failover events. Nil discards them.
	Logger *slog.Logger
}

// Client calls components on a set of nodes, with failover. It is safe for
// concurrent use and keeps one connection per node. It implements
// registry.Caller, so typed method descriptors call through it.
type Client struct {
	cfg     ClientConfig
	connCfg connConfig
	acks    ackTracker // numbers calls

	mu        sync.Mutex
	seeds     []string
	nodes     []string // seeds first, then learned
	preferred string
	down      map[string]time.Time // node → until when to avoid it
	conns     map[string]*conn
	dialing   map[string]*dialCall
	owners    map[string]string // instance → last known owner
	closed    bool

	nextRefresh atomic.Int64 // unix nanoseconds: when to ask for the live nodes again
	refreshing  atomic.Bool

	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
}

const maxOwnerCache = 1 << 16

// NewClient returns a client for the given nodes. It connects lazily.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("rpc: no nodes given")
	}
	if cfg.ClientID == nil {
		cfg.ClientID = make([]byte, 16)
		_, _ = rand.Read(cfg.ClientID)
	}
	if len(cfg.ClientID) > 64 {
		return nil, errors.New("rpc: client id longer than 64 bytes")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.SuspectAfter <= 0 {
		cfg.SuspectAfter = DefaultSuspectAfter
	}
	if cfg.MaxFrameSize <= 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	if cfg.RefreshNodes <= 0 {
		cfg.RefreshNodes = DefaultRefreshNodes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	seeds := make([]string, 0, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(seeds, n) {
			seeds = append(seeds, n)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("rpc: no nodes given")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg: cfg,
		connCfg: connConfig{
			client: cfg.ClientID, token: cfg.Token, tls: cfg.TLS,
			dialTimeout: cfg.DialTimeout, maxFrame: cfg.MaxFrameSize, suspectAfter: cfg.SuspectAfter,
		},
		seeds: seeds, nodes: slices.Clone(seeds), preferred: seeds[0],
		down: map[string]time.Time{}, conns: map[string]*conn{}, dialing: map[string]*dialCall{},
		owners: map[string]string{}, bgCtx: ctx, bgCancel: cancel,
	}
	c.acks.init()
	return c, nil
}

// ID returns the client id used for exactly-once retries.
func (c *Client) ID() []byte { return c.cfg.ClientID }

// Invoke performs call with failover: it follows redirects to the
// instance's owner and retries on other nodes after transport failures and
// retryable errors, under the same sequence number, until the call's
// deadline. Errors are *registry.Error (remote ones have Remote set).
func (c *Client) Invoke(ctx context.Context, call *registry.Call) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	m := &callMsg{Component: call.Component, ID: call.ID, Method: call.Method, Args: call.Args, Client: call.Client, Seq: call.Seq}
	if m.Client == nil {
		m.Client = c.cfg.ClientID
	}
	c.maybeRefresh()
	key := call.Component + "\x00" + call.ID
	auto := m.Seq == 0
	if auto {
		m.Seq = c.acks.begin(key)
		defer c.acks.end(key, m.Seq)
	} else {
		// The caller numbers its own calls, and acknowledges them itself.
		m.Ack = call.Ack
	}
	target := c.route(key)
	var (
		lastErr   error
		tried     = map[string]bool{}
		certBad   = map[string]bool{} // nodes whose TLS handshake failed on certificates
		redirects int
		round     int
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, giveUp(ctx, lastErr)
		}
		if auto {
			m.Ack = c.acks.low(key)
		}
		if dl, ok := ctx.Deadline(); ok {
			m.Timeout = max(int64(time.Until(dl)/time.Microsecond), 1)
		}
		res, sent, err := c.attempt(ctx, target, m)
		if err == nil {
			c.learnOwner(key, target)
			return res, nil
		}
		var re *registry.Error
		switch {
		case errors.Is(err, ErrClientClosed):
			return nil, err
		case errors.As(err, &re) && re.Remote && re.Code == registry.CodeRedirect && re.Addr != "":
			c.learnOwner(key, re.Addr)
			c.addNode(re.Addr)
			redirects++
			lastErr = err
			if c.isDown(re.Addr) || redirects > 4 {
				// The owner looks dead to us but not (yet) to the node that
				// redirected: wait a little for its lease to run out there.
				redirects = 0
				round++
				if !c.sleep(ctx, backoff(round)) {
					return nil, giveUp(ctx, lastErr)
				}
				target = c.next(tried, target)
				continue
			}
			target = re.Addr
			continue
		case errors.As(err, &re) && re.Remote && re.Code == registry.CodeUnavailable:
			lastErr = err
			c.forgetOwner(key)
		case errors.As(err, &re) && !re.Remote && re.Code == registry.CodeTooLarge:
			return nil, err
		case errors.As(err, &re) && re.Remote:
			return nil, err // final: application errors and the like are never retried
		case ctx.Err() != nil && !sent:
			// The deadline passed while connecting: the call never left, and
			// what kept it from running is the last failure.
			return nil, giveUp(ctx, lastErr)
		case ctx.Err() != nil:
			// The call may still be running on the node: unknown outcome.
			return nil, registry.AsError(ctx.Err(), registry.CodeDeadlineExceeded)
		default:
			lastErr = err
			c.markDown(target, err)
			c.forgetOwner(key)
			if certificateError(err) {
				// No retry fixes a certificate: once every node has refused
				// ours or shown one we do not trust, stop.
				certBad[target] = true
				if c.allIn(certBad) {
					return nil, registry.Errorf(registry.CodeUnauthenticated, "TLS: no node accepted this client's certificate, or showed one it trusts: %w", err)
				}
			}
		}
		tried[target] = true
		next := c.next(tried, target)
		if tried[next] {
			// Every known node was tried this round: back off, then go again.
			round++
			clear(tried)
			if !c.sleep(ctx, backoff(round)) {
				return nil, giveUp(ctx, lastErr)
			}
		}
		target = next
	}
}

// attempt runs one try of a call on the node at addr. sent is false when
// it failed before the call could be sent (while connecting).
func (c *Client) attempt(ctx context.Context, addr string, m *callMsg) (res []byte, sent bool, err error) {
	cn, err := c.conn(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	res, err = cn.call(ctx, m)
	var te *TransportError
	if errors.As(err, &te) {
		c.dropConn(addr, cn)
	}
	return res, true, err
}

func backoff(round int) time.Duration {
	d := 10 * time.Millisecond << min(round, 6)
	d = min(d, 500*time.Millisecond)
	return d/2 + mrand.N(d/2+1)
}

func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// giveUp turns the last failure of a call whose deadline passed into the
// error its caller sees: the retryable error that kept it from succeeding
// (unavailable), or deadline_exceeded when nothing else went wrong.
func giveUp(ctx context.Context, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return registry.AsError(ctx.Err(), registry.CodeCanceled)
	}
	if last == nil {
		return registry.AsError(ctx.Err(), registry.CodeDeadlineExceeded)
	}
	var re *registry.Error
	if errors.As(last, &re) && re.Remote {
		return &registry.Error{Code: registry.CodeUnavailable, Message: "gave up at the deadline: " + re.Message, Remote: true}
	}
	return registry.Errorf(registry.CodeUnavailable, "no node could serve the call before the deadline: %w", last)
}

// route picks the node to try first for an instance.
func (c *Client) route(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.owners[key]; ok && !c.isDownLocked(o) {
		return o
	}
	if c.isDownLocked(c.preferred) {
		for _, n := range c.nodes {
			if !c.isDownLocked(n) {
				c.preferred = n
				break
			}
		}
	}
	return c.preferred
}

// next returns the node to try after cur: the next known node not tried
// yet and not known to be down, else the next one not tried, else cur's
// successor.
func (c *Client) next(tried map[string]bool, cur string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.nodes)
	start := slices.Index(c.nodes, cur) + 1
	pick := ""
	for i := range n {
		cand := c.nodes[(start+i)%n]
		if tried[cand] {
			continue
		}
		if !c.isDownLocked(cand) {
			return cand
		}
		if pick == "" {
			pick = cand
		}
	}
	if pick != "" {
		return pick
	}
	return c.nodes[start%n]
}

// allIn reports whether every known node is in set.
func (c *Client) allIn(set map[string]bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if !set[n] {
			return false
		}
	}
	return true
}

// certificateError reports whether err is a TLS handshake failure that no
// retry can fix: the node sent an alert (it refused our certificate, or the
// lack of one), or its certificate failed our verification.
func certificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" { // a TLS alert from the node
		return true
	}
	var uaerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	return errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cerr)
}

func (c *Client) isDown(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isDownLocked(addr)
}

func (c *Client) isDownLocked(addr string) bool {
	until, ok := c.down[addr]
	return ok && time.Now().Before(until)
}

func (c *Client) markDown(addr string, err error) {
	c.mu.Lock()
	c.down[addr] = time.Now().Add(time.Second)
	c.mu.Unlock()
	c.cfg.Logger.Debug("rpc: node failed", "node", addr, "err", err)
}

func (c *Client) learnOwner(key, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owners[key] == addr {
		return
	}
	if len(c.owners) >= maxOwnerCache {
		clear(c.owners)
	}
	c.owners[key] = addr
	delete(c.down, addr)
}

func (c *Client) forgetOwner(key string) {
	c.mu.Lock()
	delete(c.owners, key)
	c.mu.Unlock()
}

func (c *Client) addNode(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.nodes, addr) {
		c.nodes = append(c.nodes, addr)
	}
}

// conn returns the connection to addr, dialing it if needed; concurrent
// callers share one dial.
func (c *Client) conn(ctx context.Context, addr string) (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, registry.AsError(ErrClientClosed, registry.CodeCanceled)
	}
	if cn, ok := c.conns[addr]; ok && !cn.isClosed() {
		c.mu.Unlock()
		return cn, nil
	}
	d, ok := c.dialing[addr]
	if !ok {
		d = &dialCall{done: make(chan struct{})}
		c.dialing[addr] = d
		c.bg.Add(1)
		go c.dial(addr, d)
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		return d.c, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) dial(addr string, d *dialCall) {
	defer c.bg.Done()
	cn, err := dial(c.bgCtx, addr, c.connCfg)
	var re *registry.Error
	if err != nil && !errors.As(err, &re) {
		err = &TransportError{Addr: addr, Err: err}
	}
	c.mu.Lock()
	delete(c.dialing, addr)
	if err == nil {
		if c.closed {
			c.mu.Unlock()
			cn.close()
			d.err = registry.AsError(ErrClientClosed, registry.CodeCanceled)
			close(d.done)
			return
		}
		if old, ok := c.conns[addr]; ok {
			c.bg.Add(1)
			go func() { defer c.bg.Done(); old.close() }()
		}
		c.conns[addr] = cn
		delete(c.down, addr)
	}
	c.mu.Unlock()
	if err == nil {
		c.learnNodes(cn.announced)
	}
	d.c, d.err = cn, err
	close(d.done)
}

// maybeRefresh starts a background refresh of the node list, through a
// connection already open, when the last one is older than RefreshNodes.
// On the call path: until a refresh is due it costs one atomic load.
func (c *Client) maybeRefresh() {
	if time.Now().UnixNano() < c.nextRefresh.Load() || !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.conns[c.preferred]
	for _, o := range c.conns {
		if cn != nil && !cn.isClosed() {
			break
		}
		cn = o
	}
	if c.closed || cn == nil || cn.isClosed() {
		c.refreshing.Store(false) // the next dial learns the nodes
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		defer c.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(c.bgCtx, c.cfg.DialTimeout)
		live, err := cn.nodes(ctx)
		cancel()
		if err != nil {
			c.cfg.Logger.Debug("node list refresh failed", "node", cn.addr, "err", err)
		}
		// After a failure too: try again at the next period.
		c.nextRefresh.Store(time.Now().Add(c.cfg.RefreshNodes).UnixNano())
		c.learnNodes(live)
	}()
}

// learnNodes adopts the live nodes a node announced: the seeds first, then
// the others.
func (c *Client) learnNodes(live []string) {
	if len(live) == 0 {
		return
	}
	c.nextRefresh.Store(time.Now().Add(c.cfg.RefreshNodes).UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	nodes := slices.Clone(c.seeds)
	for _, n := range live {
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	c.nodes = nodes
}

func (c *Client) dropConn(addr string, cn *conn) {
	c.mu.Lock()
	if c.conns[addr] == cn {
		delete(c.conns, addr)
	}
	// bg.Add only while not closed, under mu: Close may already be in
	// bg.Wait, and must not return with this goroutine still running.
	closed := c.closed
	if !closed {
		c.bg.Add(1)
	}
	c.mu.Unlock()
	if closed {
		cn.close()
		return
	}
	go func() { defer c.bg.Done(); cn.close() }()
}

// Nodes returns the live nodes as reported by a reachable node.
func (c *Client) Nodes(ctx context.Context) ([]string, error) {
	var lastErr error
	for _, addr := range c.knownNodes() {
		cn, err := c.conn(ctx, addr)
		if err != nil {
			lastErr = err
			continue
		}
		live, err := cn.nodes(ctx)
		if err == nil {
			return live, nil
		}
		lastErr = err
	}
	return nil, registry.Errorf(registry.CodeUnavailable, "no node answered: %w", lastErr)
}

func (c *Client) knownNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Close closes every connection. Calls in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conns := c.conns
	c.conns = map[string]*conn{}
	c.mu.Unlock()
	c.bgCancel()
	for _, cn := range conns {
		cn.close()
	}
	c.bg.Wait()
	return nil
}

// ackTracker numbers calls and knows, per instance, the lowest sequence
// number still in flight there: every call of this client on that instance
// numbered below it has been answered (or abandoned), so the node may
// discard their completion records. Tracking per instance rather than per
// client lets a node drop a record as soon as the client's next call on the
// same instance starts, however many calls are in flight elsewhere.
type ackTracker struct {
	mu       sync.Mutex
	next     uint64              // the sequence number of the next call
	inflight map[string][]uint64 // instance → its calls in flight, ascending
}

func (a *ackTracker) init() { a.inflight = map[string][]uint64{}; a.next = 1 }

// begin numbers a new call on instance key and marks it in flight, under
// one lock: a number handed out but not yet marked would let low run past
// it, acknowledging a call that has not even been sent.
func (a *ackTracker) begin(key string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	seq := a.next
	a.next++
	a.inflight[key] = append(a.inflight[key], seq) // ascending: seq is the largest yet
	return seq
}

func (a *ackTracker) end(key string, seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seqs := a.inflight[key]
	if i := slices.Index(seqs, seq); i >= 0 {
		seqs = slices.Delete(seqs, i, i+1)
	}
	if len(seqs) == 0 {
		delete(a.inflight, key)
		return
	}
	a.inflight[key] = seqs
}

// low returns the ack for a call on instance key: the lowest sequence
// number in flight there (the call itself counts while it is in flight).
func (a *ackTracker) low(key string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seqs := a.inflight[key]; len(seqs) > 0 {
		return seqs[0]
	}
	return a.next
}

// String describes the client for logs.
func (c *Client) String() string {
	return fmt.Sprintf("rpc.Client(%x, nodes %v)", c.cfg.ClientID, c.knownNodes())
}
