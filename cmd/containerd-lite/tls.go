package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Environment defaults of the TLS flags, like $CONTAINERD_LITE_TOKEN.
const (
	envTLSCA   = "CONTAINERD_LITE_TLS_CA"
	envTLSCert = "CONTAINERD_LITE_TLS_CERT"
	envTLSKey  = "CONTAINERD_LITE_TLS_KEY"
)

// tlsFlags are the TLS flags of one command. serve has --tls-cert,
// --tls-key, --tls-client-ca and --tls-ca; call and nodes have --tls-ca,
// --tls-cert, --tls-key and --tls-server-name. A bad combination or an
// unusable file is a usage error that names the flag and the file.
type tlsFlags struct {
	fs         *flag.FlagSet
	ca         string
	cert, key  string
	clientCA   string // serve
	serverName string // call, nodes
}

// serveTLSFlags registers the TLS flags of serve on fs.
func serveTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{fs: fs}
	fs.StringVar(&f.cert, "tls-cert", os.Getenv(envTLSCert), "PEM certificate (chain) `FILE` of this node: serve TLS with it, and present it to peer nodes when probing them (default $"+envTLSCert+")")
	fs.StringVar(&f.key, "tls-key", os.Getenv(envTLSKey), "PEM private key `FILE` of --tls-cert (default $"+envTLSKey+")")
	fs.StringVar(&f.clientCA, "tls-client-ca", "", "`FILE` of PEM CA certificates: require client certificates signed by them (mutual TLS); needs --tls-cert")
	fs.StringVar(&f.ca, "tls-ca", os.Getenv(envTLSCA), "`FILE` of PEM CA certificates that signed the peer nodes' certificates, to verify peers when probing them (default $"+envTLSCA+", else --tls-client-ca, else the system roots)")
	return f
}

// clientTLSFlags registers the TLS flags of call and nodes on fs.
func clientTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{fs: fs}
	fs.StringVar(&f.ca, "tls-ca", os.Getenv(envTLSCA), "`FILE` of PEM CA certificates to verify the nodes with; enables TLS (default $"+envTLSCA+")")
	fs.StringVar(&f.cert, "tls-cert", os.Getenv(envTLSCert), "PEM client certificate `FILE`, for nodes that require one (mutual TLS); enables TLS (default $"+envTLSCert+")")
	fs.StringVar(&f.key, "tls-key", os.Getenv(envTLSKey), "PEM private key `FILE` of --tls-cert (default $"+envTLSKey+")")
	fs.StringVar(&f.serverName, "tls-server-name", "", "`NAME` the nodes' certificates must hold, instead of the host of each address; enables TLS")
	return f
}

// name names a flag in messages, and the environment variable its value
// came from when it was not given on the command line.
func (f *tlsFlags) name(flagName, env string) string {
	if !f.given(flagName) && os.Getenv(env) != "" {
		return "--" + flagName + " (from $" + env + ")"
	}
	return "--" + flagName
}

// given reports whether a flag was set on the command line.
func (f *tlsFlags) given(flagName string) bool {
	given := false
	f.fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == flagName })
	return given
}

// keyPair checks that --tls-cert and --tls-key come together and loads
// them. ok is false when neither is set.
func (f *tlsFlags) keyPair() (cert tls.Certificate, ok bool, err error) {
	if ok, err = f.pairGiven(); !ok {
		return tls.Certificate{}, false, err
	}
	cert, err = loadKeyPair(f.name("tls-cert", envTLSCert), f.cert, f.name("tls-key", envTLSKey), f.key)
	return cert, err == nil, err
}

// pairGiven reports whether --tls-cert and --tls-key are set; one without
// the other is an error.
func (f *tlsFlags) pairGiven() (bool, error) {
	switch {
	case f.cert == "" && f.key == "":
		return false, nil
	case f.key == "":
		return false, usagef("%s needs --tls-key", f.name("tls-cert", envTLSCert))
	case f.cert == "":
		return false, usagef("%s needs --tls-cert", f.name("tls-key", envTLSKey))
	}
	return true, nil
}

func loadKeyPair(certName, certFile, keyName, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM(certName, certFile, "CERTIFICATE", isCert)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM(keyName, keyFile, "PRIVATE KEY", isKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, usagef("%s %s, %s %s: %v", certName, certFile, keyName, keyFile, err)
	}
	return cert, nil
}

// reloadEvery is how often a node looks at its certificate files.
const reloadEvery = time.Second

// keyPairFiles is a node's key pair, reloaded from its files when they
// change, so that a renewed certificate (cert-manager, ACME, a cron job)
// takes effect without a restart: new connections, in both directions,
// get the new one. A pair that does not load (the two files are being
// replaced one after the other, say) is logged and the old one kept.
type keyPairFiles struct {
	certName, certFile, keyName, keyFile string

	mu     sync.Mutex
	log    *slog.Logger
	check  func(*tls.Certificate) []string // warnings about a new pair
	cur    *tls.Certificate
	stamp  [2]fileStamp
	failed [2]fileStamp // the stamps of the last pair that failed to load
	next   time.Time    // when to look at the files again
}

type fileStamp struct {
	mod  int64 // unix nanoseconds: comparable with ==, unlike time.Time
	size int64
}

func stampOf(file string) fileStamp {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime().UnixNano(), fi.Size()}
}

func newKeyPairFiles(f *tlsFlags) (*keyPairFiles, error) {
	kp := &keyPairFiles{
		certName: f.name("tls-cert", envTLSCert), certFile: f.cert,
		keyName: f.name("tls-key", envTLSKey), keyFile: f.key,
	}
	kp.stamp = [2]fileStamp{stampOf(f.cert), stampOf(f.key)}
	cert, err := loadKeyPair(kp.certName, kp.certFile, kp.keyName, kp.keyFile)
	if err != nil {
		return nil, err
	}
	kp.cur, kp.next = &cert, time.Now().Add(reloadEvery)
	kp.log = slog.New(slog.DiscardHandler)
	return kp, nil
}

// watch logs reloads to log, with the warnings check finds in a new pair.
func (kp *keyPairFiles) watch(log *slog.Logger, check func(*tls.Certificate) []string) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	kp.log, kp.check = log, check
}

// current returns the key pair, reloaded first if the files changed.
func (kp *keyPairFiles) current() *tls.Certificate {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	now := time.Now()
	if now.Before(kp.next) {
		return kp.cur
	}
	kp.next = now.Add(reloadEvery)
	stamp := [2]fileStamp{stampOf(kp.certFile), stampOf(kp.keyFile)}
	if stamp == kp.stamp || stamp == kp.failed {
		return kp.cur
	}
	cert, err := loadKeyPair(kp.certName, kp.certFile, kp.keyName, kp.keyFile)
	if err != nil {
		kp.failed = stamp
		kp.log.Warn("tls: key pair changed but does not load; keeping the previous one", "err", err)
		return kp.cur
	}
	kp.cur, kp.stamp = &cert, stamp
	if leaf := cert.Leaf; leaf != nil {
		kp.log.Info("tls: key pair reloaded", "cert", kp.certFile, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	} else {
		kp.log.Info("tls: key pair reloaded", "cert", kp.certFile)
	}
	if kp.check != nil {
		for _, w := range kp.check(&cert) {
			kp.log.Warn("tls: " + w)
		}
	}
	return kp.cur
}

func (kp *keyPairFiles) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return kp.current(), nil
}

// clientCert presents the key pair whenever a node asks for a client
// certificate; see always.
func (kp *keyPairFiles) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.current(), nil
}

// serverConfigs returns what a node serves with and what it probes its
// peers with (the peers serve only clients with the right credentials);
// both are nil without --tls-cert. The node presents its own certificate
// to its peers, so under mutual TLS a node certificate must allow client
// authentication as well as server authentication.
//
// The key pair is reloaded when its files change (kp; nil without TLS).
// The CA files are read once: changing them takes a restart.
func (f *tlsFlags) serverConfigs() (serve, peer *tls.Config, kp *keyPairFiles, err error) {
	if ok, err := f.pairGiven(); err != nil {
		return nil, nil, nil, err
	} else if !ok {
		// A CA from the environment alone is meant for clients: ignore it.
		for _, name := range []string{"tls-client-ca", "tls-ca"} {
			if f.given(name) {
				return nil, nil, nil, usagef("--%s needs --tls-cert and --tls-key", name)
			}
		}
		return nil, nil, nil, nil
	}
	if kp, err = newKeyPairFiles(f); err != nil {
		return nil, nil, nil, err
	}
	serve = &tls.Config{GetCertificate: kp.serverCert, MinVersion: tls.VersionTLS12}
	peer = &tls.Config{GetClientCertificate: kp.clientCert, MinVersion: tls.VersionTLS12}
	if f.clientCA != "" {
		if serve.ClientCAs, err = loadPool("--tls-client-ca", f.clientCA); err != nil {
			return nil, nil, nil, err
		}
		serve.ClientAuth = tls.RequireAndVerifyClientCert
		peer.RootCAs = serve.ClientCAs
	}
	if f.ca != "" {
		if peer.RootCAs, err = loadPool(f.name("tls-ca", envTLSCA), f.ca); err != nil {
			return nil, nil, nil, err
		}
	}
	return serve, peer, kp, nil
}

// clientConfig returns the TLS configuration of call and nodes: nil when
// no TLS flag is set; the system roots when --tls-ca is not.
func (f *tlsFlags) clientConfig() (*tls.Config, error) {
	cert, ok, err := f.keyPair()
	if err != nil {
		return nil, err
	}
	if !f.clientTLS() {
		return nil, nil
	}
	c := &tls.Config{ServerName: f.serverName, MinVersion: tls.VersionTLS12}
	if ok {
		c.GetClientCertificate = always(cert)
	}
	if f.ca != "" {
		if c.RootCAs, err = loadPool(f.name("tls-ca", envTLSCA), f.ca); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// always presents cert whenever a node asks for a client certificate. With
// Certificates instead, a client withholds a certificate whose issuer is
// not among those the node names, and the node's refusal then reads
// "certificate required" rather than "unknown certificate authority".
func always(cert tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
}

// clientTLS reports whether call or nodes use TLS.
func (f *tlsFlags) clientTLS() bool {
	return f.ca != "" || f.cert != "" || f.key != "" || f.serverName != ""
}

// hint adds to the failure of a plain client whose node hung up on it the
// likeliest reason: the node serves TLS, which takes the client's first
// bytes for a malformed TLS handshake and closes the connection without a
// word (the client reads EOF, or its next write fails).
func (f *tlsFlags) hint(err error) error {
	var re *registry.Error
	if f.clientTLS() || !errors.As(err, &re) || re.Remote {
		return err
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		return err
	}
	return &registry.Error{Code: re.Code, Message: re.Message + " (if the nodes serve TLS, give --tls-ca, and --tls-cert and --tls-key for mutual TLS)"}
}

// nodeWarnings checks the node's certificate the way its peers will, with
// the node's own settings (the peers normally share them): a failure
// means peers cannot probe this node, so a process restarted on its
// address is noticed only when the old one's lease expires. addr is the
// advertised address.
func nodeWarnings(serve, peer *tls.Config, cert *tls.Certificate, addr string) []string {
	if serve == nil {
		return nil
	}
	leaf := cert.Leaf
	if leaf == nil { // x509keypairleaf=0
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return []string{err.Error()}
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	var warns []string
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName: host, Roots: peer.RootCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		roots := "--tls-ca"
		if peer.RootCAs == nil {
			roots = "the system roots: give --tls-ca"
		}
		warns = append(warns, fmt.Sprintf("peers will not accept this node's certificate for %s (checked against %s), so they cannot probe it: %v", addr, roots, err))
	}
	if serve.ClientAuth == tls.RequireAndVerifyClientCert {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: serve.ClientCAs, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			warns = append(warns, fmt.Sprintf("peers will refuse this node's certificate as a client certificate (checked against --tls-client-ca): %v", err))
		}
	}
	return warns
}

// tlsMode describes a node's TLS for its log.
func tlsMode(serve *tls.Config) string {
	switch {
	case serve == nil:
		return "off"
	case serve.ClientAuth == tls.RequireAndVerifyClientCert:
		return "mutual"
	}
	return "on"
}

func isCert(typ string) bool { return typ == "CERTIFICATE" }
func isKey(typ string) bool  { return strings.HasSuffix(typ, "PRIVATE KEY") } // PKCS #8, EC, RSA

// readPEM reads a file that must hold a PEM block of the kind what, as
// told by match on its type.
func readPEM(flagName, file, what string, match func(typ string) bool) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usagef("%s: %v", flagName, err)
	}
	var found []string
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if match(b.Type) {
			return data, nil
		}
		found = append(found, b.Type)
	}
	if len(found) > 0 {
		return nil, usagef("%s %s: no PEM %s in it (found %s)", flagName, file, what, strings.Join(found, ", "))
	}
	return nil, usagef("%s %s: no PEM %s in it", flagName, file, what)
}

// loadPool reads a file of PEM CA certificates.
func loadPool(flagName, file string) (*x509.CertPool, error) {
	data, err := readPEM(flagName, file, "CERTIFICATE", isCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for n := 1; ; n++ {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if !isCert(b.Type) {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, usagef("%s %s: PEM block %d: %v", flagName, file, n, err)
		}
		pool.AddCert(c)
	}
	return pool, nil
}
