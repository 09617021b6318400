package etcd_test

import (
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

// Every file the block names is read at validation (Check), so that
// `remora validate` refuses what would stop `remora run`; each error is
// placed at its field and never shows the password.
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir)
	const password = "b9e2-secret-password"
	for name, content := range map[string]string{"pw": password + "\n", "empty": "\n", "garbage.pem": "not PEM\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	const ep = "endpoints: [127.0.0.1:2379]\n"
	for _, tc := range []struct {
		block string
		want  [][2]string // field, text
	}{
		{ep, nil},
		{ep + "username: u\npassword_file: pw", nil},
		{ep + "tls: {ca_file: cert.pem, cert_file: cert.pem, key_file: key.pem}", nil},
		{ep + "username: u\npassword_file: missing", [][2]string{{"password_file", "open " + missing + ": no such file or directory"}}},
		{ep + "username: u\npassword_file: empty", [][2]string{{"password_file", "is empty"}}},
		{ep + "tls: {ca_file: missing}", [][2]string{{"tls.ca_file", "open " + missing}}},
		{ep + "tls: {ca_file: garbage.pem}", [][2]string{{"tls.ca_file", "holds no PEM certificate"}}},
		{ep + "tls: {cert_file: cert.pem, key_file: missing}", [][2]string{{"tls.cert_file/key_file", "open " + missing}}},
		{ep + "tls: {cert_file: cert.pem, key_file: garbage.pem}", [][2]string{{"tls.cert_file/key_file", "PEM"}}},
		{ep + "username: u\npassword_file: missing\ntls: {ca_file: missing}", [][2]string{{"password_file", "open"}, {"tls.ca_file", "open"}}},
		{ep + "username: u\npassword_file: pw\ntls: {ca_file: garbage.pem}", [][2]string{{"tls.ca_file", "PEM"}}},
	} {
		o, err := parse(t, tc.block)
		if err != nil {
			t.Fatalf("%q: %v", tc.block, err)
		}
		var c discovery.Checker = o
		err = c.Check(dir)
		wantLines(t, tc.block, err, tc.want)
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("%q: the password is in the error: %v", tc.block, err)
		}
	}
}

// writeCert writes a self-signed certificate and its key, as PEM, to
// cert.pem and key.pem in dir.
func writeCert(t *testing.T, dir string) {
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

// wantLines checks that err has one line per entry of want, each placed at
// the field want names (as the config loader places it: strictyaml.SplitPath)
// and containing its text; want == nil means no error.
func wantLines(t *testing.T, what string, err error, want [][2]string) {
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
