package nacos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

// fieldFirst matches an error that starts with its field (after the
// position, when it has one), as the config loader needs to place it.
var fieldFirst = regexp.MustCompile(`^(line \d+, column \d+: )?[a-z_]+(\[\d+\]|\.[a-z_]+)*: `)

func TestParseDefaults(t *testing.T) {
	o, err := parseYAML(t, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []server{{Scheme: "http", Host: "127.0.0.1", Port: 8848, ContextPath: "/nacos"}}
	if !slices.Equal(o.servers, want) || o.Group != DefaultGroup || o.GRPCPortOffset != 1000 ||
		time.Duration(o.Timeout) != DefaultTimeout || o.WeightScale != 1 || o.Namespace != "" || len(o.Clusters) != 0 {
		t.Fatalf("defaults: %v %+v", o, o.servers)
	}
}

func TestParseFullBlock(t *testing.T) {
	o, err := parseYAML(t, `
servers: [10.0.0.1:8848, "http://nacos-2:9000/ctx/", "[::1]", "http://10.0.0.3:8848/"]
grpc_port_offset: 1001
namespace: dev-ns
group: PAY
clusters: [hz-a, hz-b]
username: remora
password: s3cret-pw
access_key: AK123
secret_key: s3cret-sk
timeout: 3s
cache_dir: cache/nacos
weight_scale: 100
`)
	if err != nil {
		t.Fatal(err)
	}
	wantServers := []server{
		{"http", "10.0.0.1", 8848, "/nacos"},
		{"http", "nacos-2", 9000, "/ctx"},
		{"http", "::1", 8848, "/nacos"},
		{"http", "10.0.0.3", 8848, ""},
	}
	if !slices.Equal(o.servers, wantServers) {
		t.Errorf("servers %+v, want %+v", o.servers, wantServers)
	}
	if o.GRPCPortOffset != 1001 || o.Namespace != "dev-ns" || o.Group != "PAY" || !slices.Equal(o.Clusters, []string{"hz-a", "hz-b"}) ||
		o.Username != "remora" || string(o.Password) != "s3cret-pw" || o.AccessKey != "AK123" || string(o.SecretKey) != "s3cret-sk" ||
		time.Duration(o.Timeout) != 3*time.Second || o.CacheDir != "cache/nacos" || o.WeightScale != 100 {
		t.Fatalf("parsed %v", o)
	}
	// What the SDK gets.
	sc := sdkConfig{opts: o, password: "p", secretKey: "k", cacheDir: "/c"}
	cc, srv := sc.clientConfig(), sc.serverConfigs()
	if cc.NamespaceId != "dev-ns" || cc.TimeoutMs != 3000 || cc.Username != "remora" || cc.Password != "p" ||
		cc.AccessKey != "AK123" || cc.SecretKey != "k" || cc.CacheDir != "/c" {
		t.Errorf("client config %+v", cc)
	}
	if srv[1].IpAddr != "nacos-2" || srv[1].Port != 9000 || srv[1].GrpcPort != 10001 || srv[1].ContextPath != "/ctx" || srv[1].Scheme != "http" {
		t.Errorf("server config %+v", srv[1])
	}
}

// The SDK configuration that the adapter relies on, whatever the options.
func TestSDKClientConfig(t *testing.T) {
	o := &Options{}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	cc := sdkConfig{opts: o, cacheDir: "/data/nacos/reg"}.clientConfig()
	if !cc.UpdateCacheWhenEmpty {
		t.Error("UpdateCacheWhenEmpty is off: the SDK would drop the push of an empty list (nacos-sdk-go#423)")
	}
	if !cc.NotLoadCacheAtStart {
		t.Error("the SDK loads its disk cache at start: an old entry can make it drop fresh lists as out of date")
	}
	if cc.CacheDir != "/data/nacos/reg" || !strings.HasPrefix(cc.LogDir, "/data/nacos/reg") {
		t.Errorf("cache dir %q, log dir %q: the SDK must not write to the working directory", cc.CacheDir, cc.LogDir)
	}
	if cc.AppendToStdout {
		t.Error("the SDK would log to stdout")
	}
	if !cc.TLSCfg.Appointed || cc.TLSCfg.Enable {
		t.Errorf("TLS config %+v: must be decided here (plain), not read from the environment", cc.TLSCfg)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		block string
		want  []string // every one must appear in the error
	}{
		{"servers: ['']", []string{"servers[0]:", "empty"}},
		{"servers: [10.0.0.1:0]", []string{"servers[0]:", "port", "1..65535"}},
		{"servers: [10.0.0.1:99999]", []string{"servers[0]:", "port"}},
		{"servers: ['10.0.0.1:x']", []string{"servers[0]:", `"x"`}},
		{"servers: [https://nacos:8848]", []string{"servers[0]:", "https is not supported"}},
		{"servers: [ftp://nacos:8848]", []string{"servers[0]:", `"ftp"`}},
		{"servers: ['http://:8848']", []string{"servers[0]:", "not a host name"}},
		{"servers: ['nacos:8848/a b']", []string{"servers[0]:", "context path"}},
		{"servers: [a:1, a:1]", []string{"servers[1]:", "twice"}},
		{"servers: [a:65000]", []string{"servers[0]:", "gRPC port 66000", "above 65535"}},
		{"grpc_port_offset: -1", []string{"grpc_port_offset:", "1..65534"}},
		{"namespace: 'a@@b'", []string{"namespace:", "@@"}},
		{"group: 'a@@b'", []string{"group:", "@@"}},
		{"group: \"a\\tb \"", []string{"group:"}},
		{"clusters: ['']", []string{"clusters[0]:", "empty"}},
		{"clusters: ['a,b']", []string{"clusters[0]:", "comma"}},
		{"clusters: [a, a]", []string{"clusters[1]:", "twice"}},
		{"clusters: ['a@@b']", []string{"clusters[0]:", "@@"}},
		{"password: x", []string{"username:", "missing"}},
		{"username: u", []string{"password:", "missing"}},
		{"username: u\npassword: x\npassword_file: f", []string{"password_file: set, and so is password; set only one"}},
		{"secret_key: x", []string{"access_key:", "missing"}},
		{"access_key: a", []string{"secret_key:", "missing"}},
		{"access_key: a\nsecret_key: x\nsecret_key_file: f", []string{"secret_key_file: set, and so is secret_key; set only one"}},
		{"username: u\npassword: ' x'", []string{"password:", "white space"}},
		{"timeout: 10ms", []string{"timeout:", "10ms", "100ms..2m0s"}},
		{"timeout: 10", []string{"line 1, column 10: timeout: 10 is not a duration; write it with a unit, such as 5s or 250ms"}},
		{"weight_scale: -1", []string{"weight_scale:", "1..1000"}},
		{"weight_scale: 1001", []string{"weight_scale:"}},
		{"server: [a:1]", []string{"line 1, column 1: server: unknown field; did you mean servers?"}},
		{"weight_scale: x", []string{`line 1, column 15: weight_scale: "x" is not a number`}},
		// Several mistakes are reported together, one a line.
		{"group: 'a@@b'\ntimeout: 1h", []string{"group:", "timeout:"}},
	}
	for _, tc := range tests {
		_, err := parseYAML(t, tc.block)
		if err == nil {
			t.Errorf("%q: no error", tc.block)
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !fieldFirst.MatchString(line) {
				t.Errorf("%q: error line %q does not start with the field", tc.block, line)
			}
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", tc.block, err, w)
			}
		}
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const pw, sk = "pw-0f3c9a71-never-printed", "sk-5e2b7d10-never-printed"
	o, err := parseYAML(t, "username: u\npassword: "+pw+"\naccess_key: ak\nsecret_key: "+sk)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(o)
	ys, _ := yaml.Marshal(o)
	for _, s := range []string{
		fmt.Sprint(o), fmt.Sprintf("%v %+v %#v %s %q", *o, *o, *o, *o, o.Password), o.String(), string(js), string(ys),
		fmt.Sprintf("%v %+v %#v", o.SecretKey, o.SecretKey, o.SecretKey),
		fmt.Sprintf("%+v", struct{ O Options }{*o}),
	} {
		if strings.Contains(s, pw) || strings.Contains(s, sk) {
			t.Fatalf("secret leaked: %s", s)
		}
	}
	if !strings.Contains(o.String(), "password="+redacted) || !strings.Contains(o.String(), "secret_key="+redacted) {
		t.Fatalf("String() should say the secrets are set: %s", o)
	}
}

func TestCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pw", "  from-file\n")
	write("sk", "sk-file\n")
	write("empty", "\n")
	tests := []struct {
		o                Options
		wantPw, wantSk   string
		wantErrSubstring string
	}{
		{o: Options{Password: "inline", SecretKey: "sk"}, wantPw: "inline", wantSk: "sk"},
		{o: Options{PasswordFile: "pw", SecretKeyFile: "sk"}, wantPw: "from-file", wantSk: "sk-file"},
		{o: Options{PasswordFile: filepath.Join(dir, "pw")}, wantPw: "from-file"},
		{o: Options{PasswordFile: "empty"}, wantErrSubstring: "password_file:"},
		{o: Options{PasswordFile: "missing"}, wantErrSubstring: "password_file:"},
		{o: Options{SecretKeyFile: "missing"}, wantErrSubstring: "secret_key_file:"},
	}
	for _, tc := range tests {
		pw, sk, err := tc.o.credentials(dir)
		if tc.wantErrSubstring != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
				t.Errorf("%v: err %v, want %q", tc.o, err, tc.wantErrSubstring)
			}
			continue
		}
		if err != nil || pw != tc.wantPw || sk != tc.wantSk {
			t.Errorf("%v: %q %q %v, want %q %q", tc.o, pw, sk, err, tc.wantPw, tc.wantSk)
		}
	}
}

// Open does not touch the network, puts the SDK's files under the data dir
// (never the working directory) and names the field of a bad file (one that
// Check accepted and that vanished since). An unusable cache directory is
// TestOpenWithUnusableCacheDir's.
func TestOpen(t *testing.T) {
	wd, _ := os.Getwd()
	before, _ := os.ReadDir(wd)
	dataDir := t.TempDir()
	o := &Options{Servers: []string{"127.0.0.1:1"}} // nothing listens there
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{Name: "main/reg", DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nacos", "main_reg")); err != nil {
		t.Errorf("cache dir under the data dir: %v", err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadDir(wd)
	if len(after) != len(before) {
		t.Errorf("Open wrote into the working directory: %d entries before, %d after", len(before), len(after))
	}

	bad := &Options{Username: "u", PasswordFile: "nope"}
	if err := bad.normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Open(discovery.Env{BaseDir: t.TempDir()}); err == nil || !strings.HasPrefix(err.Error(), "password_file:") {
		t.Errorf("Open with a missing password file: %v", err)
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{"": "default", "..": "default", "main": "main", "a/b": "a_b", "x y.z": "x_y.z"} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}
