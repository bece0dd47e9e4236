package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/containerd-lite/containerd-lite/passivate"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore"
	"github.com/containerd-lite/containerd-lite/passivate/pgstore/pgtest"
)

// proxy is a TCP proxy between a store and PostgreSQL that a test can cut.
type proxy struct {
	ln      net.Listener
	network string // of the target: "tcp" or "unix"
	target  string

	mu    sync.Mutex
	mode  proxyMode
	conns map[net.Conn]struct{} // both ends of every proxied connection
	held  chan struct{}         // closed when a blackhole ends
	wg    sync.WaitGroup
}

type proxyMode int

const (
	forward   proxyMode = iota
	refuse              // close every connection at once, as a crashed server's host does
	blackhole           // let nothing through, as a network partition does
)

// newProxy starts a proxy to the server dsn names; it stops with t.
func newProxy(t *testing.T, dsn string) *proxy {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	network, target := "tcp", net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	if strings.HasPrefix(cfg.ConnConfig.Host, "/") {
		network, target = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, network: network, target: target, conns: map[net.Conn]struct{}{}, held: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode, held := p.mode, p.held
		if mode == refuse {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if mode == blackhole {
				// Accept the connection, then answer nothing until the
				// partition ends, and drop it then.
				<-held
				p.drop(c)
				return
			}
			s, err := net.Dial(p.network, p.target)
			if err != nil {
				p.drop(c)
				return
			}
			p.mu.Lock()
			p.conns[s] = struct{}{}
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(s, c)
			}()
			p.pipe(c, s)
		}()
	}
}

// pipe copies src to dst until either fails, holding the bytes while a
// blackhole lasts.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.drop(dst)
	defer p.drop(src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode, held := p.mode, p.held
			p.mu.Unlock()
			if mode == blackhole {
				<-held // then dropped: the partition lasted too long for TCP
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// set switches the proxy's mode. Cutting (refuse) closes every open
// connection; ending a blackhole drops the connections it held.
func (p *proxy) set(mode proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == blackhole && mode != blackhole {
		close(p.held)
		p.held = make(chan struct{})
	}
	p.mode = mode
	if mode == refuse {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.set(refuse)
	p.wg.Wait()
}

// withHosts returns dsn pointing at hostports instead of its own hosts.
func withHosts(t testing.TB, dsn string, hostports ...string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		u.Host = strings.Join(hostports, ",")
		return u.String()
	}
	var hosts, ports []string
	for _, hp := range hostports {
		h, p, err := net.SplitHostPort(hp)
		require.NoError(t, err)
		hosts, ports = append(hosts, h), append(ports, p)
	}
	return dsn + " host=" + strings.Join(hosts, ",") + " port=" + strings.Join(ports, ",")
}

// postgresqlURL returns dsn as a postgresql:// URL, whatever form the test
// DSN takes (a postgres:// URL or keyword/value pairs).
func postgresqlURL(t testing.TB, dsn string) string {
	t.Helper()
	switch {
	case strings.HasPrefix(dsn, "postgresql://"):
		return dsn
	case strings.HasPrefix(dsn, "postgres://"):
		return "postgresql://" + strings.TrimPrefix(dsn, "postgres://")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	cc := cfg.ConnConfig
	u := &url.URL{
		Scheme: "postgresql",
		User:   url.UserPassword(cc.User, cc.Password),
		Host:   net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))),
		Path:   "/" + cc.Database,
	}
	q := url.Values{}
	if cc.TLSConfig == nil {
		q.Set("sslmode", "disable")
	}
	for k, v := range cc.RuntimeParams {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestDatabaseOutage cuts the connection between a store and PostgreSQL,
// either refused (the server's host is up, the server is not) or
// blackholed (a partition): Save and Activate fail within their deadline,
// with an error that is not a fencing error, and once the database is back
// the same store works again and no acknowledged write is lost.
func TestDatabaseOutage(t *testing.T) {
	for _, mode := range []proxyMode{refuse, blackhole} {
		name := map[proxyMode]string{refuse: "Refused", blackhole: "Blackholed"}[mode]
		t.Run(name, func(t *testing.T) { testOutage(t, mode) })
	}
}

func testOutage(t *testing.T, mode proxyMode) {
	dsn := pgtest.DSN(t)
	p := newProxy(t, dsn)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := ctxT(t, time.Minute)
	s, err := pgstore.Open(ctx, withHosts(t, dsn, p.addr()), &pgstore.Options{FlushTimeout: 3 * time.Second, ConnectTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer s.Close()

	node := passivate.Node{Incarnation: "inc-outage", Addr: "127.0.0.1:3"}
	require.NoError(t, s.Register(ctx, node, time.Minute))
	k := passivate.Key{Component: "outage", ID: "k"}
	a, err := s.Activate(ctx, k, node.Incarnation)
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 0, State: []byte("acked-1"), StateVersion: 1}))

	p.set(mode)
	const deadline = time.Second
	const slack = 500 * time.Millisecond
	failsInTime := func(what string, op func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		err := op(ctx)
		took := time.Since(start)
		require.Error(t, err, what)
		assert.NotErrorIs(t, err, passivate.ErrFenced, what)
		var owned *passivate.OwnedError
		assert.False(t, errors.As(err, &owned), "%s: %v", what, err)
		assert.Less(t, took, deadline+slack, "%s failed after %v: %v", what, took, err)
		t.Logf("%s: failed after %v: %v", what, took.Round(time.Millisecond), err)
	}
	failsInTime("Save", func(ctx context.Context) error {
		return s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: 1, State: []byte("unacked-2"), StateVersion: 1})
	})
	failsInTime("Activate", func(ctx context.Context) error {
		_, err := s.Activate(ctx, passivate.Key{Component: "outage", ID: "other"}, node.Incarnation)
		return err
	})
	failsInTime("Renew", func(ctx context.Context) error {
		return s.Renew(ctx, node.Incarnation, time.Minute)
	})

	p.set(forward)
	// The pool finds its broken connections and reconnects by itself. The
	// failed Save's outcome is unknown to its caller, which drops the
	// activation and claims the instance again.
	var b *passivate.Activation
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, err = s.Activate(ctx, k, node.Incarnation)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "the store recovers: %v", err)
	switch b.Version {
	case 1:
		assert.Equal(t, []byte("acked-1"), b.State, "the acknowledged write survived")
	case 2:
		assert.Equal(t, []byte("unacked-2"), b.State, "the unacknowledged write landed whole")
	default:
		t.Fatalf("version %d after the outage", b.Version)
	}
	require.NoError(t, s.Save(ctx, &passivate.Write{Key: k, Owner: b.Owner, Version: b.Version, State: []byte("after"), StateVersion: 1}))
	assert.ErrorIs(t, s.Save(ctx, &passivate.Write{Key: k, Owner: a.Owner, Version: b.Version, State: []byte("zombie"), StateVersion: 1}), passivate.ErrFenced)
	require.NoError(t, s.Renew(ctx, node.Incarnation, time.Minute))
	require.NoError(t, s.Release(ctx, k, b.Owner))
	c, err := s.Activate(ctx, k, node.Incarnation)
	require.NoError(t, err)
	assert.Equal(t, []byte("after"), c.State)
	assert.Equal(t, b.Version+1, c.Version)
	require.NoError(t, s.Close())
}

// TestOpenURLs opens stores through the URL forms a deployment uses.
func TestOpenURLs(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := ctxT(t, time.Minute)
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	server := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	dead := deadAddr(t)

	check := func(t *testing.T, url string) {
		t.Helper()
		s, err := pgstore.Open(ctx, url, nil)
		require.NoError(t, err)
		defer s.Close()
		n := passivate.Node{Incarnation: "inc-" + t.Name(), Addr: "127.0.0.1:4"}
		require.NoError(t, s.Register(ctx, n, time.Minute))
		nodes, err := s.LiveNodes(ctx)
		require.NoError(t, err)
		assert.Contains(t, nodes, n)
	}
	t.Run("postgresql scheme", func(t *testing.T) {
		check(t, postgresqlURL(t, dsn))
	})
	t.Run("multi-host read-write", func(t *testing.T) {
		url := withHosts(t, dsn, dead, server)
		if strings.Contains(url, "://") {
			url += "&target_session_attrs=read-write"
		} else {
			url += " target_session_attrs=read-write"
		}
		check(t, url)
	})
	t.Run("pool and runtime parameters", func(t *testing.T) {
		url := dsn
		if strings.Contains(url, "://") {
			url += "&pool_max_conns=7&application_name=cl-test&connect_timeout=3"
		} else {
			url += " pool_max_conns=7 application_name=cl-test connect_timeout=3"
		}
		check(t, url)
		applied, err := pgstore.Migrate(ctx, url)
		require.NoError(t, err, "Migrate strips the pool parameters")
		assert.Empty(t, applied)
	})
	t.Run("unreachable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := pgstore.Open(ctx, withHosts(t, dsn, dead), nil)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 2*time.Second+500*time.Millisecond)
		assert.NotErrorIs(t, err, pgstore.ErrNotMigrated)
	})
}

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
