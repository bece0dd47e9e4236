package container

import (
	"context"
	"slices"
	"time"
)

// wake asks the janitor to run now (for instance when over MaxActive).
func (c *Container) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Container) janitorLoop() {
	defer c.wg.Done()
	every := min(time.Second, c.cfg.IdleTimeout/4)
	t := time.NewTicker(every)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kick:
		}
		c.passivateIdle()
		if time.Since(lastSweep) >= c.cfg.SweepEvery {
			lastSweep = time.Now()
			c.sweep()
		}
	}
}

// passivateIdle passivates instances idle past their timeout, unloads those
// from a lost lease, and then the least recently used ones past MaxActive.
func (c *Container) passivateIdle() {
	now := c.now()
	gen := c.leaseGen.Load()
	all := c.table.all()
	kept := all[:0]
	for _, inst := range all {
		idle := time.Duration(now - inst.lastUsed.Load())
		timeout := c.cfg.IdleTimeout
		if t := inst.comp.Options().IdleTimeout; t != 0 {
			timeout = t
		}
		if (timeout > 0 && idle >= timeout) || idle >= time.Second && !c.isCurrent(inst, gen) {
			if inst.tryAcquire() {
				if !inst.dropped {
					if inst.active && inst.gen != gen {
						c.drop(inst, "lease lost")
					} else {
						c.passivate(inst, "idle")
					}
				}
				inst.release()
				continue
			}
		}
		kept = append(kept, inst)
	}
	excess := len(kept) - c.cfg.MaxActive
	if excess <= 0 {
		return
	}
	// Evict a little more than needed so that a steady stream of new
	// instances does not make the janitor sort on every call.
	excess += c.cfg.MaxActive / 64
	slices.SortFunc(kept, func(a, b *instance) int { return int(a.lastUsed.Load() - b.lastUsed.Load()) })
	for _, inst := range kept {
		if excess <= 0 {
			break
		}
		if inst.tryAcquire() {
			if !inst.dropped {
				c.passivate(inst, "evicted")
				excess--
			}
			inst.release()
		}
	}
}

// isCurrent reports whether inst holds a usable activation; only read
// without the turn as a hint.
func (c *Container) isCurrent(inst *instance, gen uint64) bool {
	if !inst.tryAcquire() {
		return true // busy: certainly in use
	}
	defer inst.release()
	return inst.active && inst.gen == gen
}

func (c *Container) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
	defer cancel()
	n, err := c.cfg.Store.Sweep(ctx, c.cfg.SweepAge)
	if err != nil {
		c.cfg.Logger.Warn("sweep failed", "err", err)
		return
	}
	if n > 0 {
		c.cfg.Logger.Debug("swept old records", "instances", n)
	}
}
