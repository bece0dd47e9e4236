package rpc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProveDead(t *testing.T) {
	srv := startServer(t, nil, &ServerConfig{Incarnation: "inc-1", Token: "tok"})
	p := Prober{Token: "tok"}

	t.Run("port refuses", func(t *testing.T) {
		require.True(t, p.ProveDead(t.Context(), closedAddr(t), "inc-1"))
	})
	t.Run("same incarnation", func(t *testing.T) {
		require.False(t, p.ProveDead(t.Context(), srv.addr, "inc-1"))
	})
	t.Run("another incarnation", func(t *testing.T) {
		require.True(t, p.ProveDead(t.Context(), srv.addr, "inc-0"))
	})
	t.Run("refused handshake proves nothing", func(t *testing.T) {
		require.False(t, Prober{Token: "wrong"}.ProveDead(t.Context(), srv.addr, "inc-0"))
	})
	t.Run("accepts but never answers", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		var (
			mu    sync.Mutex
			conns []net.Conn
			wg    sync.WaitGroup
		)
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c) // held open, never read
				mu.Unlock()
			}
		})
		t.Cleanup(func() {
			ln.Close()
			wg.Wait()
			for _, c := range conns {
				c.Close()
			}
		})
		start := time.Now()
		require.False(t, p.ProveDead(t.Context(), ln.Addr().String(), "inc-1"))
		require.GreaterOrEqual(t, time.Since(start), ProbeTimeout-10*time.Millisecond, "gave up before the probe timeout")
		require.Less(t, time.Since(start), ioTimeout)
	})
	t.Run("canceled context proves nothing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.False(t, p.ProveDead(ctx, srv.addr, "inc-0"))
	})
	// The node is unharmed by the probes.
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, Token: "tok"})
	_, err := c.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)
}
