package discoverytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/strictyaml"
)

// WriteCert writes a self-signed certificate and its key, as PEM, to
// cert.pem and key.pem in dir: files for an adapter's TLS options.
func WriteCert(t testing.TB, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "remora-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{"cert.pem": {Type: "CERTIFICATE", Bytes: der}, "key.pem": {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// WantFieldErrors checks that err has one line per entry of want, each
// placed at the field want names (as the config loader places it:
// strictyaml.SplitPath) and containing its text; want == nil means no
// error. It is how a Checker's or a factory's errors are tested.
func WantFieldErrors(t testing.TB, what string, err error, want [][2]string) {
	t.Helper()
	if err == nil {
		if len(want) > 0 {
			t.Errorf("%s: no error; want %q", what, want)
		}
		return
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%s: %d errors, want %d:\n%v", what, len(lines), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			path, msg := strictyaml.SplitPath(l)
			found = found || path == w[0] && strings.Contains(msg, w[1])
		}
		if !found {
			t.Errorf("%s: no error at %s containing %q in:\n%v", what, w[0], w[1], err)
		}
	}
}

// WatchError watches service on reg and returns the error its first Next
// reports within the given time: how an adapter reports what the
// environment lacks (its Open must not fail for it). It fails t when
// Watch fails or Next returns a set.
func WatchError(t testing.TB, reg discovery.Registry, service string, within time.Duration) error {
	t.Helper()
	w, err := reg.Watch(context.Background(), service)
	if err != nil {
		t.Fatalf("Watch %q: %v", service, err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	set, err := w.Next(ctx)
	if err == nil {
		t.Fatalf("Next: %v; want an error", set)
	}
	return err
}
