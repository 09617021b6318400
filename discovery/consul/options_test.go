package consul

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// parseYAML runs the registered factory on an options block, decoding it the
// strict way Remora's config loader does (unknown fields are errors).
func parseYAML(t *testing.T, block string) (*Options, error) {
	t.Helper()
	o, err := discoverytest.Parse(t, Type, block)
	if err != nil {
		return nil, err
	}
	return o.(*Options), nil
}

func TestParseDefaults(t *testing.T) {
	o, err := parseYAML(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if o.Address != DefaultAddress || o.Scheme != "http" || time.Duration(o.WaitTime) != DefaultWaitTime {
		t.Fatalf("defaults: %v", o)
	}
}

func TestParseFullBlock(t *testing.T) {
	o, err := parseYAML(t, `
address: consul.internal:8501
token: s3cr3t-token
datacenter: dc2
namespace: team-a
partition: part-1
tag: prod
include_warning: true
wait_time: 30s
tls:
  ca_file: ca.pem
  cert_file: client.pem
  key_file: client-key.pem
  server_name: consul.internal
  insecure_skip_verify: false
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{
		Address: "consul.internal:8501", Scheme: "https", Token: "s3cr3t-token", Datacenter: "dc2",
		Namespace: "team-a", Partition: "part-1", Tag: "prod", IncludeWarning: true,
		WaitTime: Duration(30 * time.Second),
		TLS:      TLS{CAFile: "ca.pem", CertFile: "client.pem", KeyFile: "client-key.pem", ServerName: "consul.internal"},
	}
	if *o != want {
		t.Fatalf("got  %#v\nwant %#v", *o, want)
	}
	if string(o.Token) != "s3cr3t-token" {
		t.Fatal("token not kept")
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		block string
		want  []string // every one must appear in the error
	}{
		{"address: localhost", []string{"address:", `"localhost"`, "host:port"}},
		{"address: localhost:0", []string{"address:", "port"}},
		{"address: ftp://localhost:8500", []string{"address:", `"ftp"`}},
		{"address: https://localhost:8500\nscheme: http", []string{"address:", "scheme says http"}},
		{"scheme: gopher", []string{"scheme:", `"gopher"`}},
		{"scheme: http\ntls: {ca_file: ca.pem}", []string{"tls:", "scheme is http"}},
		{"tls: {cert_file: c.pem}", []string{"tls.key_file: missing; cert_file and key_file go together"}},
		{"token: a\ntoken_file: b", []string{"token_file: set, and so is token; set only one"}},
		{"token: ' a'", []string{"token:", "white space"}},
		{"wait_time: 100ms", []string{"wait_time:", "100ms", "1s..10m"}},
		{"wait_time: 11m", []string{"wait_time:"}},
		{"wait_time: 30", []string{"line 1, column 12: wait_time: 30 is not a duration; write it with a unit, such as 5s or 250ms"}},
		{"tag_filter: x", []string{"line 1, column 1: tag_filter: unknown field; known fields: address, scheme, token, token_file, datacenter, namespace, partition, tag, include_warning, wait_time, tls"}},
		{"include_warning: maybe\ntls: {key_file: k}", []string{`line 1, column 18: include_warning: "maybe" is not true or false`, "tls.cert_file: missing"}},
		// Several mistakes are reported together.
		{"scheme: gopher\nwait_time: 1h", []string{"scheme:", "wait_time:"}},
	}
	for _, tc := range tests {
		_, err := parseYAML(t, tc.block)
		if err == nil {
			t.Errorf("%q: no error", tc.block)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", tc.block, err, w)
			}
		}
	}
}

func TestParseAddressForms(t *testing.T) {
	tests := []struct{ block, addr, scheme string }{
		{"address: 10.0.0.1:8500", "10.0.0.1:8500", "http"},
		{"address: http://10.0.0.1:8500/", "10.0.0.1:8500", "http"},
		{"address: https://10.0.0.1:8501", "10.0.0.1:8501", "https"},
		{"address: '[::1]:8500'", "[::1]:8500", "http"},
		{"scheme: HTTPS", DefaultAddress, "https"},
		{"tls: {insecure_skip_verify: true}", DefaultAddress, "https"},
	}
	for _, tc := range tests {
		o, err := parseYAML(t, tc.block)
		if err != nil {
			t.Errorf("%q: %v", tc.block, err)
			continue
		}
		if o.Address != tc.addr || o.Scheme != tc.scheme {
			t.Errorf("%q: address %q scheme %q, want %q %q", tc.block, o.Address, o.Scheme, tc.addr, tc.scheme)
		}
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	const tok = "b7e1c1f4-0000-4000-8000-token-value"
	o, err := parseYAML(t, "token: "+tok)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(o)
	ys, _ := yaml.Marshal(o)
	for _, s := range []string{
		fmt.Sprint(o), fmt.Sprintf("%v %+v %#v %s %q", *o, *o, *o, *o, o.Token),
		fmt.Sprintf("%v %+v %#v", o.Token, o.Token, o.Token), o.String(), string(js), string(ys),
		fmt.Sprintf("%+v", struct{ O Options }{*o}),
	} {
		if strings.Contains(s, tok) {
			t.Fatalf("token leaked: %s", s)
		}
	}
	if !strings.Contains(o.String(), "token="+redacted) {
		t.Fatalf("String() should say a token is set: %s", o)
	}
}

func TestTokenResolution(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer func(g func(string) string) { getenv = g }(getenv)
	env := map[string]string{TokenEnv: "from-env"}
	getenv = func(k string) string { return env[k] }
	tests := []struct {
		o       Options
		want    string
		wantErr string
	}{
		{o: Options{Token: "inline"}, want: "inline"},
		{o: Options{TokenFile: "tok"}, want: "from-file"},
		{o: Options{TokenFile: filepath.Join(dir, "tok")}, want: "from-file"},
		{o: Options{}, want: "from-env"},
		{o: Options{TokenFile: "empty"}, wantErr: "token_file:"},
		{o: Options{TokenFile: "missing"}, wantErr: "token_file:"},
	}
	check := func(tc struct {
		o       Options
		want    string
		wantErr string
	}) {
		t.Helper()
		got, err := tc.o.token(dir)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.o, err, tc.wantErr)
			}
			return
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: token %q err %v, want %q", tc.o, got, err, tc.want)
		}
	}
	for _, tc := range tests {
		check(tc)
	}
	// $CONSUL_HTTP_TOKEN_FILE comes before $CONSUL_HTTP_TOKEN, as in the CLI.
	env[TokenFileEnv] = filepath.Join(dir, "tok")
	tests[3].want = "from-file"
	check(tests[3])
	check(tests[0]) // but not before the options
	env[TokenFileEnv] = filepath.Join(dir, "missing")
	tests[3].wantErr = "$" + TokenFileEnv
	check(tests[3])
	delete(env, TokenFileEnv)
	delete(env, TokenEnv)
	tests[3].want, tests[3].wantErr = "", ""
	check(tests[3])
}

// Open fails for a file that Check accepted and that vanished since (a
// race), naming its field.
func TestOpenErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{TokenFile: "nope"}, "token_file:"},
		{Options{Scheme: "https", TLS: TLS{CAFile: "missing-ca.pem"}}, "tls.ca_file:"},
	} {
		o := tc.o
		if err := o.normalize(); err != nil {
			t.Fatal(err)
		}
		_, err := o.Open(discovery.Env{Name: "c", BaseDir: dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%v) = %v, want an error naming %s", o, err, tc.want)
		}
	}
}

// Open must not contact Consul: an unreachable agent is the watchers' news.
func TestOpenWithUnreachableAgent(t *testing.T) {
	o, err := parseYAML(t, "address: 192.0.2.1:1") // TEST-NET-1: nothing listens
	if err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
}
