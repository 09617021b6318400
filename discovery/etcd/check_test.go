package etcd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// Every file the block names is read at validation (Check), so that
// `remora validate` refuses what would stop `remora run`; each error is
// placed at its field and never shows the password.
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	discoverytest.WriteCert(t, dir)
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
		discoverytest.WantFieldErrors(t, tc.block, err, tc.want)
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("%q: the password is in the error: %v", tc.block, err)
		}
	}
}
