package etcd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

func parse(t *testing.T, block string) (*etcd.Options, error) {
	t.Helper()
	o, err := discoverytest.Parse(t, etcd.Type, block)
	if err != nil {
		return nil, err
	}
	return o.(*etcd.Options), nil
}

// The keys of the config as examples/etcd writes them keep decoding to the
// same options, with the same defaults.
func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		block string
		want  func(o *etcd.Options) bool
	}{
		{"endpoints: [127.0.0.1:2379]", func(o *etcd.Options) bool {
			return o.Prefix == etcd.DefaultPrefix && time.Duration(o.DialTimeout) == etcd.DefaultDialTimeout && o.TLS == nil
		}},
		{"endpoints: [127.0.0.1:2379]\nprefix: /services\ndial_timeout: 5s", func(o *etcd.Options) bool {
			return o.Prefix == "/services" && time.Duration(o.DialTimeout) == 5*time.Second
		}},
		{"endpoints: ['https://10.0.0.1:2379', 'https://[::1]:2379']\nprefix: /svc/", func(o *etcd.Options) bool {
			return o.Prefix == "/svc" && len(o.Endpoints) == 2
		}},
		{"endpoints: [h:1]\nusername: remora\npassword: pw", func(o *etcd.Options) bool {
			return o.Username == "remora" && string(o.Password) == "pw"
		}},
		{"endpoints: [h:1]\nprefix: /", func(o *etcd.Options) bool { return o.Prefix == "/" }},
		{"endpoints: [h:1]\ntls: {}", func(o *etcd.Options) bool { return o.TLS != nil }},
		{"endpoints: ['https://h:1', h:2]\ntls: {}", func(o *etcd.Options) bool { return o.TLS != nil }},
		{"endpoints: ['http://h:1']", func(o *etcd.Options) bool { return o.TLS == nil }},
	} {
		o, err := parse(t, tc.block)
		if err != nil || !tc.want(o) {
			t.Errorf("Parse(%q) = %v, %v", tc.block, o, err)
		}
	}
}

// fieldFirst matches an error that starts with its field (after the
// position, when it has one), as the config loader needs to place it.
var fieldFirst = regexp.MustCompile(`^(line \d+, column \d+: )?[a-z_]+(\[\d+\]|\.[a-z_]+)*: `)

func TestParseErrorsNameFields(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"prefix: /x", "endpoints: at least one"},
		{"endpoints: [localhost]", `endpoints[0]: "localhost" is not host:port`},
		{"endpoints: [h:1, 'h:x']", `endpoints[1]: "h:x" has port "x"`},
		{"endpoints: [unix://h:1]", `endpoints[0]: "unix://h:1": scheme "unix" is not supported`},
		{"endpoints: [h:1]\nprefix: services", `prefix: "services" must start with /`},
		// The value as written, not as trimmed.
		{"endpoints: [h:1]\nprefix: services/", `prefix: "services/" must start with /`},
		{"endpoints: [h:1]\nusername: u\npassword: a\npassword_file: b", "password_file: set, and so is password; set only one"},
		// The client authenticates only with both: one alone was ignored.
		{"endpoints: [h:1]\nusername: u", `password: missing; username "u" is set, so set password or password_file`},
		{"endpoints: [h:1]\npassword: p", "username: missing; password is set, so set the user name it belongs to"},
		{"endpoints: [h:1]\npassword_file: p", "username: missing; password_file is set, so set the user name it belongs to"},
		{"endpoints: [h:1]\ndial_timeout: -1s", "dial_timeout: -1s is out of range"},
		{"endpoints: [h:1]\ndial_timeout: 5", "line 2, column 15: dial_timeout: 5 is not a duration; write it with a unit, such as 5s or 250ms"},
		{"endpoints: [h:1]\ntls: {cert_file: c}", "tls.key_file: missing; cert_file and key_file go together"},
		// http:// is plain text to the etcd client, tls or not.
		{"endpoints: ['https://a:1', 'http://h:1']\ntls: {ca_file: ca.pem}", `endpoints[1]: "http://h:1" is http://, which is plain text, but tls is set; write https://h:1 (or remove tls)`},
		{"endpoints: ['HTTP://h:1/']\ntls: {}", `endpoints[0]: "HTTP://h:1/" is http://, which is plain text, but tls is set; write https://h:1/`},
		// The client speaks the first endpoint's TLS or plain text to all.
		{"endpoints: ['http://a:1', 'https://b:1']", `endpoints[1]: "https://b:1" and endpoints[0] "http://a:1" mix TLS and plain text`},
		{"endpoints: ['a:1', 'HTTPS://b:1']", `endpoints[1]: "HTTPS://b:1" and endpoints[0] "a:1" mix TLS and plain text`},
		{"endpoints: ['https://a:1', 'b:1']", `endpoints[1]: "b:1" and endpoints[0] "https://a:1" mix TLS and plain text`},
		{"endpoint: [h:1]", "line 1, column 1: endpoint: unknown field; did you mean endpoints?"},
		{"endpoints: h:1", `line 1, column 12: endpoints: "h:1" is not a list; write [h:1] for a list of one`},
		// Several mistakes, one a line.
		{"endpoints: [h:1]\nprefix: x\ndial_timeout: 1h", "(e.g. /services)\nline 3, column 15: dial_timeout: 1h0m0s is out of range"},
	} {
		_, err := parse(t, tc.block)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v; want %q", tc.block, err, tc.want)
		}
		for _, line := range strings.Split(fmt.Sprint(err), "\n") {
			if err != nil && !fieldFirst.MatchString(line) {
				t.Errorf("Parse(%q) error line %q does not start with the field", tc.block, line)
			}
		}
	}
}

func TestPasswordNeverPrinted(t *testing.T) {
	o, err := parse(t, "endpoints: [h:1]\nusername: remora\npassword: hunter2")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%v %+v %#v %s", *o, *o, *o, o.Password)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password printed: %s", s)
		}
	}
}

// Open fails only for a config error: a missing or empty password file
// (which Check refuses first; at Open it vanished since). An unreachable
// etcd is not one.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ block, want string }{
		{"endpoints: [127.0.0.1:1]\nusername: u\npassword_file: missing", "password_file:"},
		{"endpoints: [127.0.0.1:1]\nusername: u\npassword_file: empty", "empty is empty; write the etcd password into it"},
		{"endpoints: [127.0.0.1:1]\ntls: {ca_file: missing.pem}", "tls.ca_file:"},
		{"endpoints: [127.0.0.1:1]\nusername: u\npassword: p", ""},
	} {
		o, err := parse(t, tc.block)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := o.Open(discovery.Env{Name: "t", BaseDir: dir})
		if reg != nil {
			_ = reg.Close()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Open(%q): %v; want a registry that connects in the background", tc.block, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Open(%q) error = %v; want %q", tc.block, err, tc.want)
		}
	}
}

// prefix: / is the root: keys are /<service>/<id>, watched and written
// with one slash, not two.
func TestRootPrefix(t *testing.T) {
	srv := etcdtest.Start(t)
	o, err := parse(t, fmt.Sprintf("endpoints: [%q]\nprefix: /", srv.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	opened, err := o.Open(discovery.Env{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	reg := opened.(*etcd.Registry)
	t.Cleanup(func() { _ = reg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	w, err := reg.Watch(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	srv.Put("/services/users/b", `{"address": "127.0.0.1", "port": 9002}`)
	srv.Put("/users/a", `{"address": "127.0.0.1", "port": 9001}`)
	discoverytest.WaitFor(t, w, 5*time.Second, "a alone", func(s []discovery.Instance) bool {
		return len(s) == 1 && s[0].ID == "a" && s[0].Port == 9001
	})

	g, err := reg.Register(ctx, "orders", discovery.Instance{ID: "o1", Address: "127.0.0.1", Port: 9003, Weight: 1, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Deregister(ctx) }()
	count := func(key string) int64 {
		resp, err := srv.Client().Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	for count("/orders/o1") == 0 {
		if ctx.Err() != nil {
			t.Fatal("/orders/o1 was never written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count("//orders/o1"); n != 0 {
		t.Fatalf("//orders/o1 written too")
	}
}
