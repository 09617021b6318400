package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestSame(t *testing.T) {
	verify := func([][]byte, [][]*x509.Certificate) error { return nil }
	withCallback := &tls.Config{VerifyPeerCertificate: verify}
	for _, tc := range []struct {
		name string
		a, b *tls.Config
		same bool
	}{
		{"both nil", nil, nil, true},
		{"one nil", nil, &tls.Config{}, false},
		{"equal settings", &tls.Config{ServerName: "a", MinVersion: tls.VersionTLS12}, &tls.Config{ServerName: "a", MinVersion: tls.VersionTLS12}, true},
		{"another server name", &tls.Config{ServerName: "a"}, &tls.Config{ServerName: "b"}, false},
		{"verification off", &tls.Config{}, &tls.Config{InsecureSkipVerify: true}, false},
		{"system roots against a pool", &tls.Config{}, &tls.Config{RootCAs: x509.NewCertPool()}, false},
		{"empty pools", &tls.Config{RootCAs: x509.NewCertPool()}, &tls.Config{RootCAs: x509.NewCertPool()}, true},
		{"a callback, itself", withCallback, withCallback, true},
		{"a callback, another config", withCallback, &tls.Config{VerifyPeerCertificate: verify}, false},
	} {
		if got := Same(tc.a, tc.b); got != tc.same {
			t.Errorf("%s: Same = %v; want %v", tc.name, got, tc.same)
		}
	}
}
