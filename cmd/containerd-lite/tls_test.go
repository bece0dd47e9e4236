package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/internal/pki"
)

// testCA is a certificate authority made up for a test, with its
// certificate in a file.
type testCA struct {
	*pki.CA
	file string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	ca, err := pki.NewCA(name, time.Hour)
	require.NoError(t, err)
	file := filepath.Join(dir, name+".pem")
	require.NoError(t, os.WriteFile(file, ca.PEM, 0o600))
	return &testCA{CA: ca, file: file}
}

// issue signs a certificate for the loopback addresses, localhost and
// node.test with the given uses, and returns its certificate and key files.
func (ca *testCA) issue(t *testing.T, dir, name string, usage ...x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(name, time.Hour, usage...)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	return certFile, keyFile
}

// testPKI is what the TLS tests use: a CA with a node certificate (server
// and client authentication: nodes probe each other as clients) and a
// client certificate, and another CA with a client certificate of its own.
type testPKI struct {
	ca, otherCA             *testCA
	nodeCert, nodeKey       string
	clientCert, clientKey   string
	foreignCert, foreignKey string // a client certificate of otherCA
	garbage, missing        string // files that must be refused
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{ca: newTestCA(t, dir, "ca"), otherCA: newTestCA(t, dir, "other-ca")}
	p.nodeCert, p.nodeKey = p.ca.issue(t, dir, "node", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	p.clientCert, p.clientKey = p.ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	p.foreignCert, p.foreignKey = p.otherCA.issue(t, dir, "foreign", x509.ExtKeyUsageClientAuth)
	p.garbage = filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(p.garbage, []byte("not PEM at all\n"), 0o600))
	p.missing = filepath.Join(dir, "missing.pem")
	return p
}

// serveMTLS are the serve flags of a node with mutual TLS.
func (p *testPKI) serveMTLS() []string {
	return []string{"--tls-cert", p.nodeCert, "--tls-key", p.nodeKey, "--tls-client-ca", p.ca.file}
}

// client are the call flags of a client with the right certificate.
func (p *testPKI) client() []string {
	return []string{"--tls-ca", p.ca.file, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}
}

// cliEnv is cli with extra environment variables.
func cliEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r, err := runCLI(env, args...)
	require.NoError(t, err)
	return r
}

// runCLI runs the binary with no TLS settings from the environment but
// env; it may be called from any goroutine.
func runCLI(env []string, args ...string) (result, error) {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTAINERD_LITE_TLS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code, err = ee.ExitCode(), nil
	}
	return result{strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()), code}, err
}

// args joins groups of arguments.
func args(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestMutualTLSFailover is TestFailoverSharedEmbeddedStore under mutual
// TLS, and then a takeover that only a probe over mutual TLS can prove.
func TestMutualTLSFailover(t *testing.T) {
	p := newTestPKI(t)
	store := filepath.Join(t.TempDir(), "shared.db")
	// A 30 s lease: no takeover here can come from a lease running out.
	a := startNode(t, args([]string{"--store", store, "--lease", "30s"}, p.serveMTLS())...)
	b := startNode(t, args([]string{"--store", store, "--lease", "30s"}, p.serveMTLS())...)
	call := func(nodes string, rest ...string) result {
		t.Helper()
		return cli(t, args([]string{"call", "--timeout=5s", nodes}, p.client(), rest)...)
	}

	r := call(nodesFlag(a, b), "cart", "m1", "Add", `{"sku":"apple","qty":2}`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"qty":2,"sku":"apple"}`, r.stdout)
	assert.Contains(t, a.Logs(), "tls=mutual")
	assert.NotContains(t, a.Logs(), "level=WARN", "the node certificate passes the node's own checks")

	require.NoError(t, a.Kill())
	r = call(nodesFlag(a, b), "cart", "m1", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{"apple":2}}`, r.stdout)
	assert.Contains(t, b.Logs(), "took over from a dead node")

	// A port that refuses connections proves its node dead before any TLS.
	// A process restarted on the address is proven dead by the new
	// incarnation in its welcome, which takes a whole mutual TLS handshake:
	// a, restarted, must prove b's old process dead that way. Were its
	// probe refused, it would redirect the call to b, which would take the
	// cart over itself.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, b.Kill())
	require.NoError(t, b.Restart(ctx))
	require.NoError(t, a.Restart(ctx))
	r = call(nodesFlag(a), "cart", "m1", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{"apple":2}}`, r.stdout)
	assert.Regexp(t, `msg="took over from a dead node" .*addr=`+regexp.QuoteMeta(b.Addr()), a.Logs())
}

// TestTLSRefusals: TLS nodes serve the clients that trust them and hold
// the right certificate, and refuse the others with a clear error within
// the call's timeout.
func TestTLSRefusals(t *testing.T) {
	p := newTestPKI(t)
	mtls := startNode(t, args([]string{"--store", filepath.Join(t.TempDir(), "m.db")}, p.serveMTLS())...)
	// Without --tls-ca, it checks its certificate against the system roots,
	// as its peers would, and warns that they could not probe it.
	tlsOnly := startNode(t, "--store", filepath.Join(t.TempDir(), "t.db"), "--tls-cert", p.nodeCert, "--tls-key", p.nodeKey)
	assert.Contains(t, tlsOnly.Logs(), "tls=on")
	assert.Contains(t, tlsOnly.Logs(), "checked against the system roots: give --tls-ca), so they cannot probe it")

	r := cli(t, args([]string{"call", nodesFlag(mtls)}, p.client(), []string{"cart", "x", "Add", `{"sku":"a","qty":1}`})...)
	require.Equal(t, 0, r.code, r.stderr)
	r = cli(t, args([]string{"nodes", nodesFlag(mtls)}, p.client())...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, mtls.Addr(), r.stdout)
	r = cliEnv(t, []string{
		"CONTAINERD_LITE_TLS_CA=" + p.ca.file, "CONTAINERD_LITE_TLS_CERT=" + p.clientCert, "CONTAINERD_LITE_TLS_KEY=" + p.clientKey,
	}, "call", nodesFlag(mtls), "cart", "x", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `{"items":{"a":1}}`, r.stdout, "TLS from the environment")
	r = cli(t, "call", nodesFlag(tlsOnly), "--tls-ca", p.ca.file, "cart", "x", "Get")
	require.Equal(t, 0, r.code, r.stderr)
	r = cli(t, "call", nodesFlag(tlsOnly), "--tls-ca", p.ca.file, "--tls-server-name", "node.test", "cart", "x", "Get")
	require.Equal(t, 0, r.code, r.stderr)

	// Certificate failures end the call at once (no retry can fix them);
	// a plain client against a TLS node only sees the node hang up, and
	// retries until its --timeout. The calls run at the same time.
	cases := []struct {
		name string
		node string
		args []string
		code string
		msg  string
	}{
		{"no client certificate", mtls.Addr(), []string{"--tls-ca", p.ca.file}, "unauthenticated", "remote error: tls: certificate required"},
		{"client certificate of another CA", mtls.Addr(), []string{"--tls-ca", p.ca.file, "--tls-cert", p.foreignCert, "--tls-key", p.foreignKey}, "unauthenticated", "remote error: tls: unknown certificate authority"},
		{"node certificate of another CA", mtls.Addr(), []string{"--tls-ca", p.otherCA.file, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}, "unauthenticated", "x509: certificate signed by unknown authority"},
		{"plain client, mutual TLS node", mtls.Addr(), nil, "unavailable", "(if the nodes serve TLS, give --tls-ca"},
		{"plain client, TLS node", tlsOnly.Addr(), nil, "unavailable", "(if the nodes serve TLS, give --tls-ca"},
		{"wrong server name", tlsOnly.Addr(), []string{"--tls-ca", p.ca.file, "--tls-server-name", "other.test"}, "unauthenticated", "certificate is valid for localhost, node.test, not other.test"},
	}
	results := make([]result, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Go(func() {
			results[i], errs[i] = runCLI(nil, args([]string{"call", "--timeout=3s", "--nodes=" + tc.node}, tc.args, []string{"cart", "x", "Get"})...)
		})
	}
	wg.Wait()
	for i, tc := range cases {
		r := results[i]
		require.NoError(t, errs[i], tc.name)
		assert.Equal(t, 1, r.code, "%s: %s", tc.name, r.stderr)
		assert.True(t, strings.HasPrefix(r.stderr, tc.code+": "), "%s: %s", tc.name, r.stderr)
		assert.Contains(t, r.stderr, tc.msg, tc.name)
		assert.Empty(t, r.stdout, tc.name)
	}
	r = cli(t, args([]string{"call", nodesFlag(mtls)}, p.client(), []string{"cart", "x", "Get"})...)
	require.Equal(t, 0, r.code, "the node is fine after all that: %s", r.stderr)
}

func TestTLSFlagErrors(t *testing.T) {
	p := newTestPKI(t)
	serve := []string{"serve", "--listen", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "s.db")}
	call := []string{"call", "--nodes", "127.0.0.1:1", "--timeout", "1s"}
	get := []string{"cart", "x", "Get"}
	for _, tc := range []struct {
		args []string
		env  []string
		msg  string
	}{
		{args(serve, []string{"--tls-cert", p.nodeCert}), nil, "--tls-cert needs --tls-key"},
		{args(serve, []string{"--tls-key", p.nodeKey}), nil, "--tls-key needs --tls-cert"},
		{args(serve, []string{"--tls-client-ca", p.ca.file}), nil, "--tls-client-ca needs --tls-cert and --tls-key"},
		{args(serve, []string{"--tls-ca", p.ca.file}), nil, "--tls-ca needs --tls-cert and --tls-key"},
		{args(serve, []string{"--tls-cert", p.missing, "--tls-key", p.nodeKey}), nil, "--tls-cert: open " + p.missing + ": no such file"},
		{args(serve, []string{"--tls-cert", p.nodeKey, "--tls-key", p.nodeKey}), nil, "--tls-cert " + p.nodeKey + ": no PEM CERTIFICATE in it (found PRIVATE KEY)"},
		{args(serve, []string{"--tls-cert", p.nodeCert, "--tls-key", p.garbage}), nil, "--tls-key " + p.garbage + ": no PEM PRIVATE KEY in it"},
		{args(serve, []string{"--tls-cert", p.nodeCert, "--tls-key", p.foreignKey}), nil, "private key does not match public key"},
		{args(serve, p.serveMTLS()[:4], []string{"--tls-client-ca", p.garbage}), nil, "--tls-client-ca " + p.garbage + ": no PEM CERTIFICATE"},
		{args(call, []string{"--tls-ca", p.garbage}, get), nil, "--tls-ca " + p.garbage + ": no PEM CERTIFICATE"},
		{args(call, []string{"--tls-ca", p.missing}, get), nil, "--tls-ca: open " + p.missing},
		{args(call, []string{"--tls-cert", p.clientCert}, get), nil, "--tls-cert needs --tls-key"},
		{args(call, []string{"--tls-key", p.clientKey}, get), nil, "--tls-key needs --tls-cert"},
		{args(call, get), []string{"CONTAINERD_LITE_TLS_CERT=" + p.clientCert}, "--tls-cert (from $CONTAINERD_LITE_TLS_CERT) needs --tls-key"},
		{args(call, get), []string{"CONTAINERD_LITE_TLS_CA=" + p.garbage}, "--tls-ca (from $CONTAINERD_LITE_TLS_CA) " + p.garbage},
		{[]string{"nodes", "--nodes", "127.0.0.1:1", "--tls-key", p.clientKey}, nil, "--tls-key needs --tls-cert"},
	} {
		r := cliEnv(t, tc.env, tc.args...)
		assert.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.msg, tc.args)
		assert.Empty(t, r.stdout, tc.args)
	}
	// A CA in the environment is for clients: a plain node ignores it.
	r := cliEnv(t, []string{"CONTAINERD_LITE_TLS_CA=" + p.garbage}, "serve", "--listen", "bogus", "--store", filepath.Join(t.TempDir(), "s.db"))
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Contains(t, r.stderr, "listen tcp: address bogus")
	assert.NotContains(t, r.stderr, "tls")
}

// TestTLSKeyPairReload: a node picks up a renewed key pair from its files
// without a restart, and keeps the old one while the files do not load.
func TestTLSKeyPairReload(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	install := func(cert, key string) {
		t.Helper()
		for src, dst := range map[string]string{cert: certFile, key: keyFile} {
			data, err := os.ReadFile(src)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(dst+".tmp", data, 0o600))
			require.NoError(t, os.Rename(dst+".tmp", dst))
		}
	}
	install(p.nodeCert, p.nodeKey)
	n := startNode(t, "--store", filepath.Join(t.TempDir(), "s.db"), "--tls-cert", certFile, "--tls-key", keyFile)
	call := func(ca string) result {
		t.Helper()
		return cli(t, "call", "--timeout=2s", nodesFlag(n), "--tls-ca", ca, "cart", "r", "Get")
	}
	r := call(p.ca.file)
	require.Equal(t, 0, r.code, r.stderr)

	// Renewed by another CA: new connections get the new certificate.
	renewedCert, renewedKey := p.otherCA.issue(t, t.TempDir(), "node", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	install(renewedCert, renewedKey)
	require.Eventually(t, func() bool { return call(p.otherCA.file).code == 0 }, 10*time.Second, 100*time.Millisecond)
	r = call(p.ca.file)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "unauthenticated:")
	assert.Contains(t, n.Logs(), "tls: key pair reloaded")

	// A pair that does not load is logged, and the node keeps serving with
	// the last good one.
	require.NoError(t, os.WriteFile(keyFile, []byte("not a key\n"), 0o600))
	require.Eventually(t, func() bool {
		call(p.otherCA.file)
		return strings.Contains(n.Logs(), "key pair changed but does not load")
	}, 10*time.Second, 100*time.Millisecond)
	r = call(p.otherCA.file)
	require.Equal(t, 0, r.code, r.stderr)
}
