package container

import (
	"context"
	"errors"
	"time"

	"github.com/containerd-lite/containerd-lite/passivate"
)

// leaseMargin is subtracted from the lease when the node computes how long
// it may serve: the store's clock starts the lease after the node sent the
// renewal, and the margin covers clock rate differences on top.
func (c *Container) leaseMargin() time.Duration { return c.cfg.Lease/10 + 50*time.Millisecond }

// extendLease records a renewal sent at container time sent.
func (c *Container) extendLease(sent int64) {
	until := sent + int64(c.cfg.Lease-c.leaseMargin())
	for {
		cur := c.leaseUntil.Load()
		if until <= cur || c.leaseUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// leaseValid reports whether the node may serve from memory now. It reads
// the monotonic clock, so a process resumed after SIGSTOP or a long pause
// refuses before its heartbeat loop has noticed anything.
func (c *Container) leaseValid() bool { return c.now() < c.leaseUntil.Load() }

func (c *Container) heartbeatLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.renew()
	}
}

// renew extends the lease, or, when the store says it was lost, discards
// every activation and registers again under a new incarnation.
func (c *Container) renew() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Lease)
	defer cancel()
	sent := c.now()
	err := c.cfg.Store.Renew(ctx, c.Incarnation(), c.cfg.Lease)
	switch {
	case err == nil:
		c.extendLease(sent)
		return
	case !errors.Is(err, passivate.ErrLeaseLost):
		left := time.Duration(c.leaseUntil.Load() - c.now())
		c.cfg.Logger.Warn("lease renewal failed", "err", err, "lease_left", left.Round(time.Millisecond))
		return
	}
	// Another node may have taken our instances: every activation made
	// under the old lease is void. Bumping the generation makes each one
	// reload on its next call; the janitor unloads the idle ones.
	c.leaseGen.Add(1)
	old := c.Incarnation()
	inc := newIncarnation()
	c.incarnation.Store(&inc)
	c.cfg.Logger.Warn("lease lost; discarding activations and registering again", "old_incarnation", old, "incarnation", inc)
	sent = c.now()
	if err := c.cfg.Store.Register(ctx, passivate.Node{Incarnation: inc, Addr: c.cfg.Addr}, c.cfg.Lease); err != nil {
		c.cfg.Logger.Warn("register failed", "err", err)
		return
	}
	c.extendLease(sent)
	c.wake()
}
