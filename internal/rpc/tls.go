package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// keyPair loads a certificate and key, and loads them again when either file
// changes, so that a renewed certificate (cert-manager, say) is used for the
// next handshake without a restart. A failed reload keeps the last good pair.
type keyPair struct {
	cert, key *watchedFile

	mu   sync.Mutex
	pair *tls.Certificate
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{cert: newWatchedFile(certFile), key: newWatchedFile(keyFile)}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	certPEM, certChanged, certErr := kp.cert.get()
	keyPEM, keyChanged, keyErr := kp.key.get()
	if kp.pair != nil && !certChanged && !keyChanged {
		return kp.pair, nil
	}
	if certErr != nil || keyErr != nil {
		if kp.pair != nil {
			return kp.pair, nil
		}
		if certErr != nil {
			return nil, certErr
		}
		return nil, keyErr
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if kp.pair != nil {
			// A half-written rotation: the two files do not match yet.
			return kp.pair, nil
		}
		return nil, fmt.Errorf("load key pair %q, %q: %w", kp.cert.path, kp.key.path, err)
	}
	kp.pair = &pair
	return kp.pair, nil
}

// loadCertPool reads a PEM bundle of CA certificates.
func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %q: no PEM certificate found", file)
	}
	return pool, nil
}

// serverTLSConfig builds the server's TLS configuration: nil without a
// certificate; with a client CA, clients must present a certificate it
// signed (mutual TLS).
func serverTLSConfig(o ServerOptions) (*tls.Config, error) {
	if o.TLSCertFile == "" && o.TLSKeyFile == "" {
		if o.TLSClientCAFile != "" {
			return nil, fmt.Errorf("client CA file %q set without a server certificate and key", o.TLSClientCAFile)
		}
		return nil, nil
	}
	if o.TLSCertFile == "" || o.TLSKeyFile == "" {
		return nil, fmt.Errorf("TLS needs both a certificate file and a key file (got cert %q, key %q)", o.TLSCertFile, o.TLSKeyFile)
	}
	kp, err := newKeyPair(o.TLSCertFile, o.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	if o.TLSClientCAFile != "" {
		pool, err := loadCertPool(o.TLSClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// countingCreds counts failed server handshakes as auth failures.
type countingCreds struct {
	credentials.TransportCredentials
	failures prometheus.Counter
}

func (c countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		// A connection closed before its hello (a TCP probe, a port scan)
		// presented no credentials at all; anything else did, and failed.
		c.failures.Inc()
	}
	return nc, info, err
}

func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{TransportCredentials: c.TransportCredentials.Clone(), failures: c.failures}
}

// PeerCertificate returns the verified leaf certificate the calling client
// presented under mutual TLS, or nil. The coordinator may require it to name
// the worker (its CommonName or a DNS SAN equal to the worker id).
func PeerCertificate(ctx context.Context) *x509.Certificate {
	info, ok := peerTLSInfo(ctx)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}
