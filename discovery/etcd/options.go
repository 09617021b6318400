package etcd

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Defaults applied by Parse.
const (
	// DefaultPrefix is the key prefix under which services live.
	DefaultPrefix = "/services"
	// DefaultDialTimeout bounds one attempt to connect (and authenticate).
	DefaultDialTimeout = 5 * time.Second

	maxDialTimeout = 2 * time.Minute
)

// Options are the settings of an etcd registry, the block under the `etcd:`
// key of a registry with `type: etcd`:
//
//	registries:
//	  - name: main
//	    type: etcd
//	    etcd:
//	      endpoints: [10.0.0.1:2379, 10.0.0.2:2379]  # host:port, or http:// / https:// URLs; required
//	      prefix: /services            # keys are <prefix>/<service>/<instance id>; / is the root
//	      username: remora             # with password or password_file
//	      password_file: etcd.pass
//	      dial_timeout: 5s             # one attempt to connect and authenticate
//	      tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, server_name: etcd}
//
// Relative file names are resolved against the config file's directory. An
// Options value is immutable once Parse has returned it. The password is a
// Secret and is never printed.
type Options struct {
	// Endpoints are etcd client URLs or host:port pairs.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix; default /services. "/" is the root: keys
	// are /<service>/<instance id>.
	Prefix string `yaml:"prefix"`
	// Username and Password (or PasswordFile) authenticate to an etcd with
	// auth enabled; they go together: one without the other is refused.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// PasswordFile holds the password; it is checked with the config
	// (Check) and read when the registry opens.
	PasswordFile string `yaml:"password_file"`
	// DialTimeout bounds one attempt to connect and authenticate; the
	// registry keeps trying after it. Default 5s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// TLS configures client TLS; plain text when absent. It cannot go
	// with an http:// endpoint; an https:// one without it uses TLS with
	// the system's roots.
	TLS *TLSOptions `yaml:"tls"`
}

// TLSOptions configure TLS to etcd.
type TLSOptions = tlsfiles.Options

// Secret is a string that formats as "[redacted]" (when non-empty) in every
// fmt verb and in text/JSON/YAML encodings. Use string(s) to read it.
type Secret = secret.Secret

// Duration is a time.Duration written as a Go duration string ("5s") in the
// config.
type Duration = duration.Duration

// String describes the options without the password.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "etcd{endpoints=%s prefix=%s", strings.Join(o.Endpoints, ","), o.Prefix)
	for _, kv := range [][2]string{
		{"username", o.Username}, {"password", o.Password.String()}, {"password_file", o.PasswordFile},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if t := o.TLS; t != nil {
		fmt.Fprintf(&b, " tls{ca_file=%s cert_file=%s key_file=%s server_name=%s insecure_skip_verify=%v}",
			t.CAFile, t.CertFile, t.KeyFile, t.ServerName, t.InsecureSkipVerify)
	}
	fmt.Fprintf(&b, " dial_timeout=%s}", o.DialTimeout)
	return b.String()
}

// GoString covers %#v, which would otherwise print the struct's fields.
func (o Options) GoString() string { return o.String() }

// normalize applies defaults and validates; each error starts with the
// field at fault ("endpoints[0]: ..."), and they are joined (errors.Join)
// so that the config loader places each at its line.
func (o *Options) normalize() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(o.Endpoints) == 0 {
		bad("endpoints: at least one etcd endpoint is required (e.g. [127.0.0.1:2379])")
	}
	for i, ep := range o.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			bad("endpoints[%d]: %v", i, err)
		}
	}

	switch {
	case o.Prefix == "":
		o.Prefix = DefaultPrefix
	case !strings.HasPrefix(o.Prefix, "/"):
		bad("prefix: %q must start with / (e.g. %s)", o.Prefix, DefaultPrefix)
	case o.Prefix != "/":
		// "/" is the root: keys are /<service>/<id> (the registry
		// drops the prefix's last slash when it joins a key).
		o.Prefix = strings.TrimSuffix(o.Prefix, "/")
	}

	if o.Password != "" && o.PasswordFile != "" {
		bad("password_file: set, and so is password; set only one")
	}
	// The client authenticates only with both a user name and a password:
	// one alone would be ignored, and etcd would answer "user name is
	// empty" (or refuse every request) at run time.
	switch {
	case o.Username == "" && o.Password != "":
		bad("username: missing; password is set, so set the user name it belongs to")
	case o.Username == "" && o.PasswordFile != "":
		bad("username: missing; password_file is set, so set the user name it belongs to")
	case o.Username != "" && o.Password == "" && o.PasswordFile == "":
		bad("password: missing; username %q is set, so set password or password_file", o.Username)
	}

	switch d := time.Duration(o.DialTimeout); {
	case d == 0:
		o.DialTimeout = Duration(DefaultDialTimeout)
	case d < 0 || d > maxDialTimeout:
		bad("dial_timeout: %s is out of range; want 0 (default %s) up to %s", d, DefaultDialTimeout, maxDialTimeout)
	}

	if o.TLS == nil {
		// The etcd client speaks to every endpoint as it would to the
		// first: TLS for https://, plain text for the rest. A mix would
		// speak the wrong one to some of them.
		https := func(ep string) bool { return strings.HasPrefix(strings.ToLower(ep), "https://") }
		for i, ep := range o.Endpoints {
			if first := o.Endpoints[0]; https(ep) != https(first) {
				bad("endpoints[%d]: %q and endpoints[0] %q mix TLS and plain text; the etcd client speaks the first's to every endpoint: write them all https:// (or set tls), or none", i, ep, first)
				break
			}
		}
	}
	if t := o.TLS; t != nil {
		if err := tlsPair(t.CertFile, t.KeyFile); err != nil {
			errs = append(errs, err)
		}
		// The etcd client dials an http:// endpoint in plain text, tls
		// or not: refuse the pair rather than drop tls silently.
		for i, ep := range o.Endpoints {
			if scheme, rest, ok := strings.Cut(ep, "://"); ok && strings.EqualFold(scheme, "http") {
				bad("endpoints[%d]: %q is http://, which is plain text, but tls is set; write https://%s (or remove tls)", i, ep, rest)
			}
		}
	}
	return errors.Join(errs...)
}

// tlsPair checks that a client certificate comes with its key, naming the
// one that is missing.
func tlsPair(cert, key string) error {
	const both = "cert_file and key_file go together; set both (a client certificate and its key) or neither"
	switch {
	case cert != "" && key == "":
		return errors.New("tls.key_file: missing; " + both)
	case cert == "" && key != "":
		return errors.New("tls.cert_file: missing; " + both)
	}
	return nil
}

// checkEndpoint accepts host:port, http://host:port and https://host:port.
func checkEndpoint(ep string) error {
	if _, creds := secret.Userinfo(ep); creds {
		return secret.UserinfoError(ep, "username: with password: or password_file:")
	}
	hostport := ep
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		if s := strings.ToLower(scheme); s != "http" && s != "https" {
			return fmt.Errorf("%q: scheme %q is not supported; write host:port, http://host:port or https://host:port", ep, scheme)
		}
		hostport = strings.TrimSuffix(rest, "/")
	}
	_, port, err := net.SplitHostPort(hostport)
	if err != nil || port == "" {
		return fmt.Errorf("%q is not host:port or a URL with a port (e.g. 127.0.0.1:2379)", ep)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has port %q; want 1..65535", ep, port)
	}
	return nil
}
