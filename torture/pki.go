package torture

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd-lite/containerd-lite/internal/pki"
)

// runPKI is the throwaway certificate authority of a run with Config.TLS:
// one certificate the nodes share (server and client authentication: they
// probe their peers), and a client certificate for the clients.
type runPKI struct {
	serveArgs []string    // the serve flags of mutual TLS
	client    *tls.Config // what the clients dial with
}

// newRunPKI writes the CA and the nodes' key pair to dir.
func newRunPKI(dir string, valid time.Duration) (*runPKI, error) {
	ca, err := pki.NewCA("containerd-lite torture CA", valid)
	if err != nil {
		return nil, err
	}
	nodeCert, nodeKey, err := ca.Issue("torture node", valid, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	clientCert, clientKey, err := ca.Issue("torture client", valid, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.pem": ca.PEM, "node.pem": nodeCert, "node-key.pem": nodeKey}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	pair, err := tls.X509KeyPair(clientCert, clientKey)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &runPKI{
		serveArgs: []string{
			"--tls-cert", filepath.Join(dir, "node.pem"), "--tls-key", filepath.Join(dir, "node-key.pem"),
			"--tls-client-ca", filepath.Join(dir, "ca.pem"),
		},
		client: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}, nil
}
