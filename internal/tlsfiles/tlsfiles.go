// Package tlsfiles builds a client tls.Config from file names in config.
package tlsfiles

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// Options name the files and settings of a TLS client.
type Options struct {
	// CAFile holds PEM certificates to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate (mTLS); both or none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name to verify and send as SNI.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns verification off; for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Config loads the files, relative to base, and returns the client config.
// Errors name the field at fault. Only regular files of at most
// regularfile.MaxSize bytes are read: a named pipe, a device or a
// directory is an error that says so, at once.
func (o *Options) Config(base string) (*tls.Config, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	tc := &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in
	if o.CAFile != "" {
		pem, err := regularfile.ReadFileMax(Resolve(base, o.CAFile), regularfile.MaxSize)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := loadKeyPair(Resolve(base, o.CertFile), Resolve(base, o.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// loadKeyPair is tls.LoadX509KeyPair over regularfile.ReadFileMax.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := regularfile.ReadFileMax(certFile, regularfile.MaxSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := regularfile.ReadFileMax(keyFile, regularfile.MaxSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// Resolve returns path relative to base (the config file's directory):
// as is when it is absolute, base is empty or path is empty (no file).
func Resolve(base, path string) string {
	if base == "" || path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(base, path)
}

// Same reports whether two TLS configs are the same: the same CAs trusted,
// the same certificates and keys presented, the same other settings.
// Loading unchanged files twice with Options.Config gives the same config,
// a rotated file a different one. A config with a callback is the same
// only as itself. Either may be nil.
func Same(a, b *tls.Config) bool {
	switch {
	case a == b:
		return true
	case a == nil || b == nil,
		(a.RootCAs == nil) != (b.RootCAs == nil), a.RootCAs != nil && !a.RootCAs.Equal(b.RootCAs),
		len(a.Certificates) != len(b.Certificates):
		return false
	}
	for i := range a.Certificates {
		if !sameCertificate(&a.Certificates[i], &b.Certificates[i]) {
			return false
		}
	}
	ra, rb := a.Clone(), b.Clone()
	ra.RootCAs, rb.RootCAs, ra.Certificates, rb.Certificates = nil, nil, nil, nil
	return reflect.DeepEqual(ra, rb)
}

func sameCertificate(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	key, ok := a.PrivateKey.(interface{ Equal(crypto.PrivateKey) bool })
	return ok && key.Equal(b.PrivateKey)
}
