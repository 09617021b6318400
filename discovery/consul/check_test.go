package consul

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// Every file the block names is read at validation (Check), so that
// `remora validate` refuses what would stop `remora run`; each error is
// placed at its field and never shows a secret.
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	discoverytest.WriteCert(t, dir)
	const token = "8d3f0c1e-secret-token"
	for name, content := range map[string]string{"tok": token + "\n", "empty": "\n", "garbage.pem": "not PEM\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		block string
		want  [][2]string // field, text
	}{
		{"token_file: tok", nil},
		{"token_file: " + filepath.Join(dir, "tok"), nil},
		{"tls: {ca_file: cert.pem, cert_file: cert.pem, key_file: key.pem, server_name: consul:8501}", nil},
		{"token: inline", nil},
		{"", nil},
		{"token_file: missing", [][2]string{{"token_file", "open " + missing + ": no such file or directory"}}},
		{"token_file: empty", [][2]string{{"token_file", "is empty"}}},
		{"token_file: .", [][2]string{{"token_file", "not a regular file but a directory"}}},
		{"tls: {ca_file: missing}", [][2]string{{"tls.ca_file", "open " + missing}}},
		{"tls: {ca_file: garbage.pem}", [][2]string{{"tls.ca_file", "holds no PEM certificate"}}},
		{"tls: {cert_file: cert.pem, key_file: missing}", [][2]string{{"tls.cert_file/key_file", "open " + missing}}},
		{"tls: {cert_file: garbage.pem, key_file: key.pem}", [][2]string{{"tls.cert_file/key_file", "PEM"}}},
		{"token_file: missing\ntls: {ca_file: missing}", [][2]string{{"token_file", "open"}, {"tls.ca_file", "open"}}},
		{"token_file: tok\ntls: {ca_file: garbage.pem}", [][2]string{{"tls.ca_file", "PEM"}}},
	} {
		o, err := parseYAML(t, tc.block)
		if err != nil {
			t.Fatalf("%q: %v", tc.block, err)
		}
		var c discovery.Checker = o
		err = c.Check(dir)
		discoverytest.WantFieldErrors(t, tc.block, err, tc.want)
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("%q: the token is in the error: %v", tc.block, err)
		}
	}
}

// A token file named by $CONSUL_HTTP_TOKEN_FILE is the environment's, not
// the config's: when it cannot be read, Open still returns a registry, and
// its watchers and registrations report the error (and never query without
// the token).
func TestOpenWithUnreadableEnvTokenFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	defer func(g func(string) string) { getenv = g }(getenv)
	getenv = func(k string) string {
		if k == TokenFileEnv {
			return missing
		}
		return ""
	}
	o, err := parseYAML(t, "address: 192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Check(t.TempDir()); err != nil {
		t.Fatalf("Check reads the environment: %v", err)
	}
	reg, err := o.Open(discovery.Env{Name: "c"})
	if err != nil {
		t.Fatalf("Open: %v; want a registry whose watchers report the error", err)
	}
	defer reg.Close()
	err = discoverytest.WatchError(t, reg, "web", 5*time.Second)
	if !strings.Contains(err.Error(), "$"+TokenFileEnv) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Next: %v; want the token file's error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := reg.(discovery.Registrar).Register(ctx, "web", discovery.Instance{ID: "i1", Address: "127.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if st := g.(discovery.StatusReporter).Status(); st.Up || !strings.Contains(st.LastError, "$"+TokenFileEnv) {
		t.Errorf("registration status: %+v; want the token file's error", st)
	}
}
