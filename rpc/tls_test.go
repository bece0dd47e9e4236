package rpc

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	srv := startServer(t, nil, &ServerConfig{
		Incarnation: "inc-tls",
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
	})
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}

	t.Run("trusted client", func(t *testing.T) {
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, TLS: clientTLS})
		for i := range 10 {
			res, err := c.Invoke(t.Context(), echoCall(t, i))
			require.NoError(t, err)
			require.Equal(t, mustCBOR(t, i), res)
		}
	})
	t.Run("plain TCP client fails cleanly", func(t *testing.T) {
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}})
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Invoke(ctx, echoCall(t, 1))
		require.Equal(t, registry.CodeUnavailable, regErr(t, err).Code, err)
	})
	t.Run("client that does not trust the node fails cleanly", func(t *testing.T) {
		c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, TLS: &tls.Config{MinVersion: tls.VersionTLS13}})
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Invoke(ctx, echoCall(t, 1))
		require.Error(t, err)
	})
	t.Run("raw plain connection is closed", func(t *testing.T) {
		rc := rawConnect(t, srv.addr, nil)
		// Opening a stream already sends bytes the TLS server rejects, so
		// this or the write may fail with the session already shut.
		if st, err := rc.sess.OpenStream(); err == nil {
			f, err := encodeFrame(kindHello, 0, &hello{Version: ProtocolVersion})
			require.NoError(t, err)
			_ = st.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = st.Write(f)
		}
		require.Eventually(t, rc.sess.IsClosed, ioTimeout, 5*time.Millisecond)
	})
	t.Run("TLS connection that never handshakes is closed", func(t *testing.T) {
		// A raw TCP connection that sends nothing: the TLS handshake runs
		// under the handshake timeout too.
		srv := startServer(t, nil, &ServerConfig{
			TLS:              &tls.Config{Certificates: []tls.Certificate{cert}},
			HandshakeTimeout: 200 * time.Millisecond,
		})
		rc := rawConnect(t, srv.addr, nil)
		require.Eventually(t, rc.sess.IsClosed, ioTimeout, 5*time.Millisecond)
	})
	t.Run("prober", func(t *testing.T) {
		require.False(t, Prober{TLS: clientTLS}.ProveDead(t.Context(), srv.addr, "inc-tls"))
		require.True(t, Prober{TLS: clientTLS}.ProveDead(t.Context(), srv.addr, "inc-old"))
	})
	// The node still serves TLS clients after all that.
	c := newClient(t, ClientConfig{Nodes: []string{srv.addr}, TLS: clientTLS})
	_, err := c.Invoke(t.Context(), echoCall(t, "still"))
	require.NoError(t, err)
}

// TestCertificateFailureIsFinal: a certificate no retry can fix ends the
// call at once with unauthenticated once every node failed on it, while a
// node with a bad certificate among good ones only costs a retry.
func TestCertificateFailureIsFinal(t *testing.T) {
	good, pool := selfSigned(t)
	bad, _ := selfSigned(t) // signed by nobody the client trusts
	goodSrv := startServer(t, nil, &ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{good}}})
	badSrv := startServer(t, nil, &ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{bad}}})
	clientTLS := &tls.Config{RootCAs: pool}

	c := newClient(t, ClientConfig{Nodes: []string{badSrv.addr}, TLS: clientTLS, CallTimeout: time.Minute})
	start := time.Now()
	_, err := c.Invoke(t.Context(), echoCall(t, 1))
	require.Equal(t, registry.CodeUnauthenticated, regErr(t, err).Code, err)
	require.Less(t, time.Since(start), 30*time.Second, "not retried until the minute-long deadline")

	c = newClient(t, ClientConfig{Nodes: []string{badSrv.addr, goodSrv.addr}, TLS: clientTLS})
	res, err := c.Invoke(t.Context(), echoCall(t, 2))
	require.NoError(t, err, "the node with a good certificate serves the call")
	require.Equal(t, mustCBOR(t, 2), res)
}

func TestMutualTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	srv := startServer(t, nil, &ServerConfig{TLS: &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}})
	with := newClient(t, ClientConfig{Nodes: []string{srv.addr}, TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}})
	_, err := with.Invoke(t.Context(), echoCall(t, 1))
	require.NoError(t, err)

	without := newClient(t, ClientConfig{Nodes: []string{srv.addr}, TLS: &tls.Config{RootCAs: pool}})
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = without.Invoke(ctx, echoCall(t, 1))
	require.ErrorContains(t, err, "tls: certificate required", "the node's reason, not just EOF")
	require.EqualValues(t, 1, srv.h.invokes.Load())
}
