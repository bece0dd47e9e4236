package container

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/registry"
)

// MaxIDLength bounds an instance id in bytes.
const MaxIDLength = 512

// Container hosts component instances on one node. It implements
// registry.Caller, for in-process calls, and rpc.Handler.
type Container struct {
	cfg   Config
	start time.Time // base of the monotonic container clock

	incarnation atomic.Pointer[string]
	leaseUntil  atomic.Int64  // container clock: serve only before this
	leaseGen    atomic.Uint64 // bumped whenever the lease is lost
	started     atomic.Bool

	table *table
	gate  *gate
	peers peerCache
	nodes nodesCache
	stats counters

	kick     chan struct{} // wakes the janitor early
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New returns a container. Call Start before serving calls.
func New(cfg Config) (*Container, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Container{
		cfg: cfg, start: time.Now(), table: newTable(), gate: newGate(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	c.peers.init()
	inc := newIncarnation()
	c.incarnation.Store(&inc)
	return c, nil
}

func newIncarnation() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// now is the container's monotonic clock.
func (c *Container) now() int64 { return int64(time.Since(c.start)) }

// Incarnation returns the id of this node process in the store. It changes
// if the node loses its lease and registers again.
func (c *Container) Incarnation() string { return *c.incarnation.Load() }

// Addr returns the advertised address.
func (c *Container) Addr() string { return c.cfg.Addr }

// Start registers the node in the store and starts its heartbeat and
// janitor. Stop them with Shutdown.
func (c *Container) Start(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("container: already started")
	}
	sent := c.now()
	if err := c.cfg.Store.Register(ctx, passivate.Node{Incarnation: c.Incarnation(), Addr: c.cfg.Addr}, c.cfg.Lease); err != nil {
		return fmt.Errorf("container: register node: %w", err)
	}
	c.extendLease(sent)
	c.wg.Add(2)
	go c.heartbeatLoop()
	go c.janitorLoop()
	c.cfg.Logger.Info("node registered", "incarnation", c.Incarnation(), "addr", c.cfg.Addr, "lease", c.cfg.Lease)
	return nil
}

// Invoke runs a call on its instance, activating it if needed, and returns
// the encoded reply once any state change is durable. Errors are
// *registry.Error.
func (c *Container) Invoke(ctx context.Context, call *registry.Call) ([]byte, error) {
	var ev CallEvent
	var start time.Time
	if c.cfg.Observer != nil {
		start = time.Now()
	}
	reply, err := c.invoke(ctx, call, &ev)
	c.stats.count(err)
	if err != nil {
		err = registry.AsError(err, registry.CodeInternal)
		reply = nil
	}
	if c.cfg.Observer != nil {
		ev.Code = registry.CodeOf(err)
		ev.Duration = time.Since(start)
		c.cfg.Observer.ObserveCall(ev)
	}
	return reply, err
}

func (c *Container) invoke(ctx context.Context, call *registry.Call, ev *CallEvent) ([]byte, error) {
	if !c.started.Load() {
		return nil, registry.Errorf(registry.CodeUnavailable, "node is not started")
	}
	comp, ok := c.cfg.Registry.Lookup(call.Component)
	if !ok {
		return nil, registry.Errorf(registry.CodeNotFound, "unknown component %q", call.Component)
	}
	ev.Component = comp.Name()
	h, ok := comp.Method(call.Method)
	if !ok {
		return nil, registry.Errorf(registry.CodeNotFound, "component %q has no method %q", call.Component, call.Method)
	}
	ev.Method = h.Name()
	if err := checkID(call.ID); err != nil {
		return nil, err
	}
	args, err := h.DecodeArgs(call.Args)
	if err != nil {
		return nil, err
	}
	if !c.gate.enter() {
		return nil, registry.Errorf(registry.CodeUnavailable, "node is shutting down")
	}
	defer c.gate.leave()

	key := passivate.Key{Component: comp.Name(), ID: call.ID}
	for {
		inst := c.table.get(key, comp)
		if c.table.len() > c.cfg.MaxActive {
			c.wake()
		}
		if err := inst.acquire(ctx); err != nil {
			return nil, registry.AsError(err, registry.CodeDeadlineExceeded)
		}
		if inst.dropped {
			inst.release()
			continue
		}
		reply, err := c.invokeLocked(ctx, inst, h, args, call, ev)
		inst.lastUsed.Store(c.now())
		inst.release()
		return reply, err
	}
}

func checkID(id string) error {
	switch {
	case id == "":
		return registry.Errorf(registry.CodeBadRequest, "empty instance id")
	case len(id) > MaxIDLength:
		return registry.Errorf(registry.CodeBadRequest, "instance id of %d bytes exceeds %d", len(id), MaxIDLength)
	case !utf8.ValidString(id) || bytes.IndexByte([]byte(id), 0) >= 0:
		return registry.Errorf(registry.CodeBadRequest, "instance id must be UTF-8 text without NUL bytes")
	}
	return nil
}

// invokeLocked runs the call while holding inst's turn.
func (c *Container) invokeLocked(ctx context.Context, inst *instance, h *registry.Handler, args any, call *registry.Call, ev *CallEvent) ([]byte, error) {
	if !c.leaseValid() {
		return nil, registry.Errorf(registry.CodeUnavailable, "node lease expired: not serving until it is renewed")
	}
	if inst.active && inst.gen != c.leaseGen.Load() {
		c.unload(inst, "lease lost")
	}
	if !inst.active {
		if err := c.activate(ctx, inst); err != nil {
			return nil, err
		}
		// Activation took a round trip: make sure the lease outlived it.
		if !c.leaseValid() || inst.gen != c.leaseGen.Load() {
			c.unload(inst, "lease lost")
			return nil, registry.Errorf(registry.CodeUnavailable, "node lease expired during activation")
		}
	}

	exactlyOnce := len(call.Client) > 0 && call.Seq != 0
	var fp uint64
	if exactlyOnce {
		fp = fingerprint(call)
		if rec, ok := inst.done.lookup(call.Client, call.Seq); ok {
			if rec.Fingerprint != fp {
				return nil, registry.Errorf(registry.CodeConflict, "sequence number %d was already used by this client for another call", call.Seq)
			}
			c.stats.replayed.Add(1)
			ev.Replayed = true
			return rec.Reply, nil
		}
		if inst.done.stale(call.Client, call.Seq) {
			c.stats.stale.Add(1)
			return nil, registry.Errorf(registry.CodeConflict, "stale request: the client already has the reply of call %d", call.Seq)
		}
		if inst.done.evictedBelow(call.Client, call.Seq) {
			c.stats.stale.Add(1)
			return nil, registry.Errorf(registry.CodeConflict, "outcome of call %d unknown: its completion record was evicted (more than %d unacknowledged calls on %s); not running it again", call.Seq, c.cfg.MaxCompletions, inst.key)
		}
	}
	// Waiting for the turn and activating took time: a caller that has
	// given up since must not have its call run (a retry may be under way).
	if err := ctx.Err(); err != nil {
		return nil, registry.AsError(err, registry.CodeDeadlineExceeded)
	}

	reply, err := c.run(ctx, inst, h, args)
	if err != nil {
		c.rollback(inst)
		return nil, err
	}
	comp := inst.comp
	encoded, err := comp.EncodeState(inst.state)
	if err != nil {
		c.rollback(inst)
		return nil, registry.Errorf(registry.CodeInternal, "%s: state cannot be encoded after %s: %v", inst.key, h.Name(), err)
	}
	if limit := c.maxState(comp); len(encoded) > limit {
		c.rollback(inst)
		return nil, registry.Errorf(registry.CodeTooLarge, "%s: %s would grow the state to %d bytes, over the limit of %d", inst.key, h.Name(), len(encoded), limit)
	}
	c.stats.observeState(len(encoded))
	ev.StateBytes = len(encoded)
	removes := h.Removes()
	if !removes && bytes.Equal(encoded, inst.committed) {
		c.stats.unchanged.Add(1)
		return reply, nil
	}

	done := inst.done
	if exactlyOnce {
		rec := completion{Client: call.Client, Seq: call.Seq, Fingerprint: fp, Reply: reply}
		if done, err = inst.done.with(rec, call.Ack, c.cfg.MaxCompletions, c.cfg.MaxCompletionBytes); err != nil {
			c.rollback(inst)
			return nil, registry.Errorf(registry.CodeInternal, "encode completion records: %v", err)
		}
	}
	w := &passivate.Write{
		Key: inst.key, Owner: inst.owner, Version: inst.version,
		State: encoded, StateVersion: comp.Options().StateVersion,
		Completions: done.raw, Remove: removes,
	}
	if removes {
		w.State = nil
	}
	// The write does not stop when the caller goes away (that would only
	// make its outcome unknown), but it gives up in time to answer
	// unavailable before the caller's deadline.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.storeTimeout(ctx))
	err = c.cfg.Store.Save(sctx, w)
	cancel()
	switch {
	case errors.Is(err, passivate.ErrFenced):
		c.stats.fenced.Add(1)
		c.unload(inst, "ownership lost")
		return nil, registry.Errorf(registry.CodeUnavailable, "%s: this node lost ownership of the instance; retry", inst.key)
	case err != nil:
		// The write may or may not have committed: forget what this node
		// believes, and let a retry (same sequence number) find out from
		// the store.
		c.unload(inst, "write outcome unknown")
		return nil, registry.Errorf(registry.CodeUnavailable, "%s: store write failed, outcome unknown; retry: %v", inst.key, err)
	}
	c.stats.writes.Add(1)
	ev.Wrote = true
	inst.version++
	inst.committed = encoded
	inst.done = done
	if removes {
		c.removed(ctx, inst)
	}
	return reply, nil
}

// storeTimeout bounds a store operation made for a call: StoreTimeout, but
// ending a little before the call's deadline so that a store outage is
// reported as unavailable (retryable) rather than as a missed deadline.
func (c *Container) storeTimeout(ctx context.Context) time.Duration {
	d := c.cfg.StoreTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		d = min(d, left-min(left/10, 100*time.Millisecond))
	}
	return max(d, time.Millisecond)
}

func (c *Container) maxState(comp *registry.Component) int {
	if n := comp.Options().MaxStateSize; n > 0 {
		return n
	}
	return c.cfg.MaxStateSize
}

// run invokes the method, turning a panic into an internal error.
func (c *Container) run(ctx context.Context, inst *instance, h *registry.Handler, args any) (reply []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.stats.panics.Add(1)
			c.cfg.Logger.Error("component method panicked", "instance", inst.key.String(), "method", h.Name(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = registry.Errorf(registry.CodeInternal, "%s.%s panicked: %v", inst.key.Component, h.Name(), p)
		}
	}()
	reply, err = h.Invoke(ctx, inst.state, args)
	if err != nil {
		var re *registry.Error
		if !errors.As(err, &re) {
			err = &registry.Error{Code: registry.CodeApplication, Message: err.Error()}
		}
	}
	return reply, err
}

// rollback restores the state of the last commit after a failed call,
// keeping the transient fields.
func (c *Container) rollback(inst *instance) {
	s, err := inst.comp.Rollback(inst.state, inst.committed)
	if err != nil {
		c.cfg.Logger.Error("rollback failed; dropping the activation", "instance", inst.key.String(), "err", err)
		c.unload(inst, "rollback failed")
		return
	}
	inst.state = s
}

// activate claims inst in the store and loads its state.
func (c *Container) activate(ctx context.Context, inst *instance) error {
	gen := c.leaseGen.Load()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.storeTimeout(ctx))
	defer cancel()
	var act *passivate.Activation
	for attempt := 0; ; attempt++ {
		var err error
		act, err = c.cfg.Store.Activate(sctx, inst.key, c.Incarnation())
		var owned *passivate.OwnedError
		if errors.As(err, &owned) {
			if attempt < 2 && c.ownerDead(sctx, owned) {
				if err := c.cfg.Store.MarkDead(sctx, owned.Owner); err != nil {
					return registry.Errorf(registry.CodeUnavailable, "store: mark node %s dead: %v", owned.Owner, err)
				}
				c.cfg.Logger.Info("took over from a dead node", "instance", inst.key.String(), "dead", owned.Owner, "addr", owned.Addr)
				continue
			}
			c.drop(inst, "owned elsewhere")
			if owned.Addr == "" {
				return registry.Errorf(registry.CodeUnavailable, "%s is active on node %s, which has no address", inst.key, owned.Owner)
			}
			return &registry.Error{Code: registry.CodeRedirect, Message: fmt.Sprintf("%s is active on another node", inst.key), Addr: owned.Addr}
		}
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return registry.AsError(ctx.Err(), registry.CodeCanceled)
			}
			return registry.Errorf(registry.CodeUnavailable, "store: activate %s: %v", inst.key, err)
		}
		break
	}
	state, err := inst.comp.DecodeState(act.State, act.StateVersion)
	if err != nil {
		c.releaseClaim(inst.key, act.Owner)
		return err
	}
	done, err := decodeCompletions(act.Completions)
	if err != nil {
		c.releaseClaim(inst.key, act.Owner)
		return registry.Errorf(registry.CodeInternal, "%s: decode completion records: %v", inst.key, err)
	}
	committed := act.State
	if committed == nil {
		// No stored state: the baseline is the empty state, so that a call
		// that leaves it empty writes nothing.
		if committed, err = inst.comp.EncodeState(state); err != nil {
			c.releaseClaim(inst.key, act.Owner)
			return registry.Errorf(registry.CodeInternal, "%s: encode empty state: %v", inst.key, err)
		}
	}
	if a, ok := state.(registry.Activator); ok {
		if err := c.hook(ctx, inst, "OnActivate", a.OnActivate); err != nil {
			c.releaseClaim(inst.key, act.Owner)
			return err
		}
	}
	inst.active, inst.owner, inst.gen = true, act.Owner, gen
	inst.state, inst.committed, inst.version, inst.done = state, committed, act.Version, done
	c.stats.activations.Add(1)
	return nil
}

// hook runs a lifecycle hook, turning an error or a panic into an error.
func (c *Container) hook(ctx context.Context, inst *instance, name string, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("hook panicked", "instance", inst.key.String(), "hook", name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = registry.Errorf(registry.CodeInternal, "%s: %s panicked: %v", inst.key, name, p)
		}
	}()
	if err := fn(ctx); err != nil {
		c.cfg.Logger.Warn("hook failed", "instance", inst.key.String(), "hook", name, "err", err)
		return registry.Errorf(registry.CodeInternal, "%s: %s: %v", inst.key, name, err)
	}
	return nil
}

func (c *Container) releaseClaim(key passivate.Key, owner passivate.Owner) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
	defer cancel()
	if err := c.cfg.Store.Release(ctx, key, owner); err != nil {
		c.cfg.Logger.Warn("release failed", "instance", key.String(), "err", err)
	}
}

// unload forgets inst's activation (running its Passivator hook) without
// touching the store; the slot stays, and the next call activates again.
// The caller holds the turn.
func (c *Container) unload(inst *instance, why string) {
	if inst.active {
		if p, ok := inst.state.(registry.Passivator); ok {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
			_ = c.hook(ctx, inst, "OnPassivate", p.OnPassivate)
			cancel()
		}
		c.cfg.Logger.Debug("activation dropped", "instance", inst.key.String(), "why", why)
	}
	inst.active = false
	inst.state, inst.committed, inst.done = nil, nil, completions{}
}

// drop unloads inst and removes its slot from the table; goroutines
// waiting for its turn look the key up again. The caller holds the turn.
func (c *Container) drop(inst *instance, why string) {
	c.unload(inst, why)
	inst.dropped = true
	c.table.remove(inst)
}

// removed finishes an instance whose removal committed.
func (c *Container) removed(ctx context.Context, inst *instance) {
	if r, ok := inst.state.(registry.Remover); ok {
		_ = c.hook(ctx, inst, "OnRemove", r.OnRemove)
	}
	c.stats.removals.Add(1)
	inst.active = false
	c.drop(inst, "removed")
}

// passivate takes inst out of memory and releases its ownership so that
// any node can activate it at once. The caller holds the turn.
func (c *Container) passivate(inst *instance, why string) {
	wasActive, owner := inst.active, inst.owner
	c.drop(inst, why)
	if wasActive {
		c.releaseClaim(inst.key, owner)
		c.stats.passivations.Add(1)
	}
}

// ownerDead reports whether the owner named by err is proven dead.
func (c *Container) ownerDead(ctx context.Context, owned *passivate.OwnedError) bool {
	if c.peers.isDead(owned.Owner) {
		return true
	}
	if owned.Addr == c.cfg.Addr && owned.Owner != c.Incarnation() && c.cfg.Addr != "" {
		// An earlier process on our own address: we replaced it.
		c.peers.markDead(owned.Owner)
		return true
	}
	if c.cfg.ProveDead == nil || owned.Addr == "" || c.peers.recentlyAlive(owned.Owner) {
		return false
	}
	if c.cfg.ProveDead(ctx, owned.Addr, owned.Owner) {
		c.peers.markDead(owned.Owner)
		return true
	}
	c.peers.markAlive(owned.Owner)
	return false
}

// Nodes returns the advertised addresses of the live nodes.
func (c *Container) Nodes(ctx context.Context) ([]string, error) {
	return c.nodes.get(ctx, c.cfg.Store)
}

// ActiveInstances returns the number of instances in memory.
func (c *Container) ActiveInstances() int { return c.table.len() }

// Shutdown drains the node: new calls get unavailable (clients move to
// other nodes), calls in flight finish, every instance is passivated and
// the node is deregistered, which frees its instances for other nodes at
// once. It returns ctx's error if the calls in flight outlast it.
func (c *Container) Shutdown(ctx context.Context) error {
	idle := c.gate.close()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
	for _, inst := range c.table.all() {
		if inst.tryAcquire() {
			c.drop(inst, "shutdown")
			inst.release()
		}
	}
	if c.started.Load() {
		dctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
		defer cancel()
		if derr := c.cfg.Store.Deregister(dctx, c.Incarnation()); derr != nil {
			c.cfg.Logger.Warn("deregister failed; instances wait for the lease to expire", "err", derr)
		}
	}
	return err
}

// peerCache remembers which peer incarnations are proven dead (forever: an
// incarnation never comes back) and which answered recently.
type peerCache struct {
	mu    sync.Mutex
	dead  map[string]struct{}
	alive map[string]time.Time
}

func (p *peerCache) init() {
	p.dead = map[string]struct{}{}
	p.alive = map[string]time.Time{}
}

func (p *peerCache) isDead(inc string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.dead[inc]
	return ok
}

func (p *peerCache) markDead(inc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.dead) > 10000 {
		clear(p.dead)
	}
	p.dead[inc] = struct{}{}
	delete(p.alive, inc)
}

// recentlyAlive avoids probing a live owner for every misdirected call.
func (p *peerCache) recentlyAlive(inc string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.alive[inc]
	return ok && time.Since(t) < 500*time.Millisecond
}

func (p *peerCache) markAlive(inc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.alive) > 10000 {
		clear(p.alive)
	}
	p.alive[inc] = time.Now()
}

// nodesCache keeps the live node list for a second.
type nodesCache struct {
	mu    sync.Mutex
	at    time.Time
	addrs []string
}

func (n *nodesCache) get(ctx context.Context, s passivate.Membership) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.addrs != nil && time.Since(n.at) < time.Second {
		return n.addrs, nil
	}
	nodes, err := s.LiveNodes(ctx)
	if err != nil {
		return nil, registry.Errorf(registry.CodeUnavailable, "store: list nodes: %v", err)
	}
	addrs := make([]string, 0, len(nodes))
	for _, nd := range nodes {
		if nd.Addr != "" {
			addrs = append(addrs, nd.Addr)
		}
	}
	n.addrs, n.at = addrs, time.Now()
	return addrs, nil
}
