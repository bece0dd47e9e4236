package pgstore

import (
	"fmt"
	"time"
)

// Options tunes a Store. The zero value of a field means its default; a nil
// *Options means all defaults.
type Options struct {
	// MaxGroup bounds the Saves committed together in one batch (one round
	// trip, one transaction), and the Activates claimed in one statement.
	// Default 64.
	MaxGroup int
	// Flushers is the number of batches of Saves in flight at once, and of
	// Activates. Default 2. More than a few only queue up in the database
	// and raise latency.
	Flushers int
	// FlushTimeout bounds one batch, including waiting for a connection.
	// Default 10s.
	FlushTimeout time.Duration
	// ConnectTimeout bounds opening one connection (per host of a
	// multi-host URL) when the URL has no connect_timeout. Default 5s.
	ConnectTimeout time.Duration
	// MaxConns, if positive, overrides the URL's pool_max_conns. Without
	// either, the pool has Flushers+8 connections (or pgx's default, the
	// greater of 4 and the number of CPUs, if larger), so that the batches
	// of Saves and Activates (up to 2*Flushers connections) leave some for
	// heartbeats, releases and the retries of racing claims. The pool must
	// have more connections than Flushers.
	MaxConns int32
}

// DefaultOptions returns a fresh copy of the defaults.
func DefaultOptions() *Options {
	return &Options{
		MaxGroup:       64,
		Flushers:       2,
		FlushTimeout:   10 * time.Second,
		ConnectTimeout: 5 * time.Second,
	}
}

// withDefaults returns a copy of o with its zero fields set to the defaults,
// or an error naming an invalid field.
func (o *Options) withDefaults() (Options, error) {
	d := *DefaultOptions()
	if o == nil {
		return d, nil
	}
	r := *o
	switch {
	case r.MaxGroup < 0:
		return r, fmt.Errorf("pgstore: Options.MaxGroup is negative: %d", r.MaxGroup)
	case r.Flushers < 0:
		return r, fmt.Errorf("pgstore: Options.Flushers is negative: %d", r.Flushers)
	case r.FlushTimeout < 0:
		return r, fmt.Errorf("pgstore: Options.FlushTimeout is negative: %v", r.FlushTimeout)
	case r.ConnectTimeout < 0:
		return r, fmt.Errorf("pgstore: Options.ConnectTimeout is negative: %v", r.ConnectTimeout)
	case r.MaxConns < 0:
		return r, fmt.Errorf("pgstore: Options.MaxConns is negative: %d", r.MaxConns)
	}
	if r.MaxGroup == 0 {
		r.MaxGroup = d.MaxGroup
	}
	if r.Flushers == 0 {
		r.Flushers = d.Flushers
	}
	if r.FlushTimeout == 0 {
		r.FlushTimeout = d.FlushTimeout
	}
	if r.ConnectTimeout == 0 {
		r.ConnectTimeout = d.ConnectTimeout
	}
	return r, nil
}
