package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"syscall"
	"time"
)

// ProbeTimeout bounds one liveness probe.
const ProbeTimeout = 300 * time.Millisecond

// Prober checks whether peer nodes are alive. It needs the credentials of
// a client, since the peers serve only clients that present them.
type Prober struct {
	TLS   *tls.Config
	Token string
}

// ProveDead reports whether the node process with the given incarnation,
// last seen at addr, is proven dead: its port refuses connections, or the
// address is now served by another incarnation (a restarted process). A
// node that does not answer in time is not proven dead: it may be frozen or
// partitioned, and only its lease expiry frees its instances.
func (p Prober) ProveDead(ctx context.Context, addr, incarnation string) bool {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	c, err := dial(ctx, addr, connConfig{
		client: []byte("probe"), tls: p.TLS, token: p.Token, dialTimeout: ProbeTimeout,
		maxFrame: DefaultMaxFrameSize, suspectAfter: time.Second,
	})
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	defer c.close()
	return c.incarnation != "" && c.incarnation != incarnation
}
