package consul

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
	DefaultAddress  = "127.0.0.1:8500"
	DefaultWaitTime = 60 * time.Second
	minWaitTime     = time.Second
	maxWaitTime     = 10 * time.Minute // Consul caps blocking queries at 10m
)

// The environment variables read for the ACL token when neither token nor
// token_file is set, as the consul CLI does: the file first.
const (
	TokenEnv     = "CONSUL_HTTP_TOKEN"
	TokenFileEnv = "CONSUL_HTTP_TOKEN_FILE"
)

// Options are the settings of a Consul registry, the block under the
// `consul:` key of a registry with `type: consul` (every field optional):
//
//	registries:
//	  - name: dc1
//	    type: consul
//	    consul:
//	      address: 127.0.0.1:8500     # host:port, may start with http:// or https://
//	      scheme: https               # http (default) or https; https is implied by tls
//	      token_file: consul.token    # or token: ..., or $CONSUL_HTTP_TOKEN
//	      datacenter: dc1
//	      tag: prod                   # only instances carrying this tag; the instance register: writes carries it
//	      include_warning: false      # true also routes to instances in "warning"
//	      wait_time: 60s              # blocking query wait, 1s..10m
//	      tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, server_name: consul}
//
// Relative file names are resolved against the config file's directory. An
// Options value is immutable once Parse has returned it. The token is a
// Secret and is never printed.
type Options struct {
	// Address of the Consul agent's HTTP API, host:port.
	Address string `yaml:"address"`
	// Scheme is "http" or "https".
	Scheme string `yaml:"scheme"`
	// Token is the ACL token. At most one of Token and TokenFile is set;
	// with neither, $CONSUL_HTTP_TOKEN_FILE or else $CONSUL_HTTP_TOKEN is
	// used. "anonymous" names Consul's anonymous token explicitly (see
	// ErrPermissionDenied).
	Token Secret `yaml:"token"`
	// TokenFile holds the ACL token; it is checked with the config (Check)
	// and read when the registry opens.
	TokenFile string `yaml:"token_file"`
	// Datacenter to query; empty means the agent's own.
	Datacenter string `yaml:"datacenter"`
	// Namespace and Partition are passed through to Consul (Enterprise).
	Namespace string `yaml:"namespace"`
	Partition string `yaml:"partition"`
	// Tag, when set, limits every watch to instances carrying it (filtered
	// by Consul).
	Tag string `yaml:"tag"`
	// IncludeWarning also returns instances whose worst check is "warning",
	// weighted by their Weights.Warning. By default only instances whose
	// checks all pass are returned.
	IncludeWarning bool `yaml:"include_warning"`
	// WaitTime is how long one blocking query may wait for a change.
	WaitTime Duration `yaml:"wait_time"`
	// TLS configures HTTPS to the agent.
	TLS TLS `yaml:"tls"`
}

// TLS are the client TLS settings.
type TLS = tlsfiles.Options

// Secret is a string that formats as "[redacted]" (when non-empty) in every
// fmt verb and in text/JSON/YAML encodings, so an ACL token cannot leak into
// logs or a config dump. Use string(s) to read it.
type Secret = secret.Secret

const redacted = secret.Redacted

// Duration is a time.Duration written as a Go duration string ("30s",
// "1m30s") in the config.
type Duration = duration.Duration

// String describes the options without the token.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "consul{address=%s scheme=%s", o.Address, o.Scheme)
	if o.Token != "" {
		b.WriteString(" token=" + redacted)
	}
	for _, kv := range [][2]string{
		{"token_file", o.TokenFile}, {"datacenter", o.Datacenter}, {"namespace", o.Namespace},
		{"partition", o.Partition}, {"tag", o.Tag},
		{"tls.ca_file", o.TLS.CAFile}, {"tls.cert_file", o.TLS.CertFile}, {"tls.key_file", o.TLS.KeyFile},
		{"tls.server_name", o.TLS.ServerName},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if o.TLS.InsecureSkipVerify {
		b.WriteString(" tls.insecure_skip_verify=true")
	}
	fmt.Fprintf(&b, " include_warning=%v wait_time=%s}", o.IncludeWarning, o.WaitTime)
	return b.String()
}

// GoString covers %#v, which would otherwise print the struct's fields.
func (o Options) GoString() string { return o.String() }

// normalize applies defaults and validates; each error starts with the
// field at fault ("address: ..."), and they are joined (errors.Join) so
// that the config loader places each at its line.
func (o *Options) normalize() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	o.Scheme = strings.ToLower(strings.TrimSpace(o.Scheme))
	switch o.Scheme {
	case "", "http", "https":
	default:
		bad("scheme: %q is not supported; use http or https", o.Scheme)
	}

	addr := strings.TrimSpace(o.Address)
	if addr == "" {
		addr = DefaultAddress
	}
	if _, creds := secret.Userinfo(addr); creds {
		bad("address: %v", secret.UserinfoError(addr, "token: or token_file:"))
		addr = DefaultAddress
	}
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		switch scheme = strings.ToLower(scheme); {
		case scheme != "http" && scheme != "https":
			bad("address: scheme %q in %q is not supported; use http:// or https://", scheme, o.Address)
		case o.Scheme != "" && o.Scheme != scheme:
			bad("address: %q says %s but scheme says %s; drop one of them", o.Address, scheme, o.Scheme)
		default:
			o.Scheme = scheme
		}
		addr = strings.TrimSuffix(rest, "/")
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host == "" {
		bad("address: %q is not host:port (for example %s)", o.Address, DefaultAddress)
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		bad("address: %q has port %q; want 1..65535", o.Address, port)
	}
	o.Address = addr

	if o.TLS != (TLS{}) {
		if o.Scheme == "http" {
			bad("tls: set, but scheme is http; use scheme: https (or remove tls)")
		}
		o.Scheme = "https"
	}
	if o.Scheme == "" {
		o.Scheme = "http"
	}
	switch {
	case o.TLS.CertFile != "" && o.TLS.KeyFile == "":
		bad("tls.key_file: missing; cert_file and key_file go together; set both (a client certificate and its key) or neither")
	case o.TLS.CertFile == "" && o.TLS.KeyFile != "":
		bad("tls.cert_file: missing; cert_file and key_file go together; set both (a client certificate and its key) or neither")
	}

	if o.Token != "" && o.TokenFile != "" {
		bad("token_file: set, and so is token; set only one")
	}
	if strings.TrimSpace(string(o.Token)) != string(o.Token) {
		bad("token: has leading or trailing white space")
	}

	switch wt := time.Duration(o.WaitTime); {
	case wt == 0:
		o.WaitTime = Duration(DefaultWaitTime)
	case wt < minWaitTime || wt > maxWaitTime:
		bad("wait_time: %s is out of range; want %s..%s", wt, minWaitTime, maxWaitTime)
	}
	return errors.Join(errs...)
}
