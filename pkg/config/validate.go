package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/canary"
)

// upstreamName is what a Host header can carry: a lower-case DNS name.
var upstreamName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,251}[a-z0-9])?$`)

// Validate checks the whole configuration and parses registry and balancer
// options. It reports every problem, not just the first.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	addrs := map[string]string{} // address -> field path that binds it
	bind := func(path, addr string) {
		if err := checkHostPort(addr); err != nil {
			add("%s: %q: %v", path, addr, err)
			return
		}
		if strings.HasSuffix(addr, ":0") {
			return // an ephemeral port never clashes
		}
		if prev, dup := addrs[addr]; dup {
			add("%s: address %q is already used by %s", path, addr, prev)
			return
		}
		addrs[addr] = path
	}
	bind("admin.address", c.Admin.Address)
	if c.Admin.TokenFile != "" {
		if c.Admin.Token != "" {
			add("admin.token_file: set either token or token_file")
		}
		data, err := os.ReadFile(tlsfiles.Resolve(c.Dir, c.Admin.TokenFile))
		if err != nil {
			add("admin.token_file: %v", err)
		}
		c.Admin.Token = strings.TrimSpace(string(data))
	}
	if c.Admin.Token == "" && !isLoopback(c.Admin.Address) {
		add("admin.token: required because admin.address %q is not loopback (set token or token_file; /healthz and /readyz stay open for probes)", c.Admin.Address)
	}
	if c.Proxy.MaxHeaderBytes < 0 {
		add("proxy.max_header_bytes: %d is negative", c.Proxy.MaxHeaderBytes)
	}
	if c.Proxy.MaxResponseHeaderBytes < 0 {
		add("proxy.max_response_header_bytes: %d is negative", c.Proxy.MaxResponseHeaderBytes)
	}
	names := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		path := fmt.Sprintf("listeners[%d]", i)
		if names[l.Name] {
			add("%s.name: duplicate listener name %q", path, l.Name)
		}
		names[l.Name] = true
		bind(path+".address", l.Address)
		switch l.Forwarded {
		case "":
			l.Forwarded = ForwardedKeep
		case ForwardedKeep, ForwardedAppend, ForwardedDrop:
		default:
			add("%s.forwarded: %q; want keep, append or drop", path, l.Forwarded)
		}
		if l.RequestID == nil {
			on := true
			l.RequestID = &on
		}
	}
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"drain_timeout", c.DrainTimeout}, {"drain_delay", c.DrainDelay}, {"proxy.read_header_timeout", c.Proxy.ReadHeaderTimeout}, {"proxy.connect_timeout", c.Proxy.ConnectTimeout}, {"proxy.idle_conn_timeout", c.Proxy.IdleConnTimeout}} {
		if d.v < 0 {
			add("%s: %v is negative", d.path, d.v)
		}
	}
	if v := *c.AccessLog.Sample; v < 0 || v > 1 || v != v {
		add("access_log.sample: %v; want a share 0..1", v)
	}
	if c.Proxy.MaxIdleConnsPerHost < 0 {
		add("proxy.max_idle_conns_per_host: %d is negative", c.Proxy.MaxIdleConnsPerHost)
	}

	registries := map[string]bool{}
	for i := range c.Registries {
		r := &c.Registries[i]
		path := fmt.Sprintf("registries[%d]", i)
		switch {
		case r.Name == "":
			add("%s.name: missing; every registry needs a name that upstreams refer to", path)
		case registries[r.Name]:
			add("%s.name: duplicate registry name %q", path, r.Name)
		}
		registries[r.Name] = true
		f, ok := discovery.Lookup(r.Type)
		if !ok {
			add("%s.type: unknown registry type %q; known: %s", path, r.Type, strings.Join(discovery.Types(), ", "))
			continue
		}
		for key := range r.blocks {
			if key != r.Type {
				add("%s: unknown field %q (options go under the type's own key, %q)", path, key, r.Type)
			}
		}
		block := r.blocks[r.Type]
		opts, err := f.Parse(strictDecoder(block))
		if err != nil {
			add("%s.%s: %v", path, r.Type, err)
			continue
		}
		r.Options = opts
	}

	if r := c.Register; r != nil {
		if r.Registry == "" && len(c.Registries) == 1 {
			r.Registry = c.Registries[0].Name
		}
		if !registries[r.Registry] {
			add("register.registry: unknown registry %q; known: %s", r.Registry, strings.Join(registryNames(c.Registries), ", "))
		} else if reg := c.Registry(r.Registry); !canRegister(reg.Type) {
			add("register.registry: registry %q is of type %s, which cannot register instances%s", r.Registry, reg.Type, registrarHint())
		}
		for _, err := range unjoin(r.Validate()) {
			add("register.%v", err)
		}
	}
	upstreams := map[string]bool{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		path := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case u.Name == "":
			add("%s.name: missing; the name is matched against the Host header", path)
		case !upstreamName.MatchString(u.Name):
			add("%s.name: %q is not a lower-case host name (letters, digits, '-', '.', '_')", path, u.Name)
		case upstreams[u.Name]:
			add("%s.name: duplicate upstream name %q", path, u.Name)
		}
		upstreams[u.Name] = true
		switch {
		case u.Registry == "" && len(c.Registries) == 0:
			add("%s.registry: missing, and no registries are configured", path)
		case u.Registry == "":
			add("%s.registry: missing; there are %d registries, name one", path, len(c.Registries))
		case !registries[u.Registry]:
			add("%s.registry: unknown registry %q; known: %s", path, u.Registry, strings.Join(registryNames(c.Registries), ", "))
		}
		if u.Listen != "" {
			bind(path+".listen", u.Listen)
		}
		if u.InitialSyncTimeout < 0 {
			add("%s.initial_sync_timeout: %v is negative", path, u.InitialSyncTimeout)
		}
		if u.Protocol == "tcp" {
			for _, err := range tcpRefuses(u) {
				add("%s.%v", path, err)
			}
		}
		for _, err := range unjoin(u.Health.Validate()) {
			add("%s.health.%v", path, err)
		}
		for _, err := range unjoin(u.Policy.Validate()) {
			add("%s.%v", path, err)
		}
		if l := u.Locality; l != nil {
			if l.Zone == "" {
				l.Zone = cmp.Or(c.Zone, os.Getenv(ZoneEnv))
			}
			for _, err := range unjoin(l.Validate()) {
				add("%s.locality.%v", path, err)
			}
			if l.Zone == "" {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s.locality: Remora's own zone is not known (set zone: at the top, locality.zone, or $%s), so zones are ignored", path, ZoneEnv))
			}
		}
		switch u.Protocol {
		case "", "http":
			u.Protocol = "http"
		case "h2c", "tcp":
		case "h2":
			if u.TLS == nil {
				add("%s.protocol: h2 needs a tls block (h2c is HTTP/2 without TLS)", path)
			}
		default:
			add("%s.protocol: unknown protocol %q; known: http, h2c, h2, tcp", path, u.Protocol)
		}
		if u.Protocol == "tcp" && u.Listen == "" {
			add("%s.listen: a tcp upstream needs its own listen address", path)
		}
		if u.TLS != nil {
			if u.Protocol == "h2c" {
				add("%s.tls: h2c is HTTP/2 without TLS; use protocol h2", path)
			}
			opts := *u.TLS
			if opts.ServerName == "" {
				opts.ServerName = u.Service
			}
			tc, err := opts.Config(c.Dir)
			if err != nil {
				add("%s.tls.%v", path, err)
			}
			if tc != nil && u.Protocol == "h2" {
				tc.NextProtos = []string{"h2"}
			}
			u.TLSConfig = tc
		}
		if u.Canary != nil {
			rule, err := u.Canary.Validate()
			for _, err := range unjoin(err) {
				add("%s.canary.%v", path, err)
			}
			u.CanaryRule = rule // nil when disabled
		} else {
			u.CanaryRule = canary.DefaultRule()
		}
		f, ok := balancer.Lookup(u.Balancer.Policy)
		if !ok {
			add("%s.balancer: unknown policy %q; known: %s", path, u.Balancer.Policy, strings.Join(balancer.Names(), ", "))
			continue
		}
		b, err := f.Parse(strictDecoder(u.Balancer.options))
		if err != nil {
			add("%s.balancer: %v", path, err)
			continue
		}
		u.Balancer.Builder = b
		if k, ok := b.(hashkey.Keyed); ok && u.Protocol == "tcp" && k.HashKey().FromRequest() {
			add("%s.balancer.hash_on: a tcp connection has no request to hash; use source_ip", path)
		}
	}
	for i := range c.Listeners {
		validateRoutes(fmt.Sprintf("listeners[%d]", i), c.Listeners[i].Routes, upstreams, add)
	}
	c.warnSourceIP()
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		path := fmt.Sprintf("upstreams[%d]", i)
		if len(u.Routes) > 0 && (u.Listen == "" || u.Protocol == "tcp") {
			add("%s.routes: routes need the upstream's own http listen port", path)
		}
		validateRoutes(path, u.Routes, upstreams, add)
		validateHeaderRules(path+".request_headers", u.RequestHeaders, add)
		validateHeaderRules(path+".response_headers", u.ResponseHeaders, add)
	}
	return errors.Join(errs...)
}

// tcpRefuses returns the errors for the settings of a tcp upstream that
// have no meaning for a relayed connection (it was set, not defaulted;
// call it before the policy's defaults are filled in). Everything else
// applies to tcp as to http: the balancer, health, canary weights, the
// circuit breakers, timeouts.connect, and timeouts.idle and total, which
// bound a relayed connection's quiet time and its life.
func tcpRefuses(u *Upstream) []error {
	var errs []error
	add := func(field, why string) { errs = append(errs, fmt.Errorf("%s: %s", field, why)) }
	const noRetry = "has no meaning for a tcp upstream: a connection is retried on another node only when its connect fails (at most three times)"
	r := u.Retry
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"max_attempts", r.MaxAttempts != 0}, {"statuses", r.Statuses != nil}, {"max_body_bytes", r.MaxBodyBytes != 0},
		{"budget_percent", r.BudgetPercent != nil}, {"min_retries", r.MinRetries != nil}, {"grpc_statuses", r.GRPCStatuses != nil},
	} {
		if f.set {
			add("retry."+f.name, noRetry)
		}
	}
	if u.Timeouts.PerTry != 0 {
		add("timeouts.per_try", "a tcp connection has no response to wait for; use timeouts.connect, idle or total")
	}
	if u.TLS != nil {
		add("tls", "a tcp upstream relays bytes as they are; TLS to its nodes is not supported (the client's own TLS passes through)")
	}
	if u.RequestHeaders != nil || u.ResponseHeaders != nil {
		add("request_headers/response_headers", "a tcp connection has no headers")
	}
	p := u.Health.Passive
	if p.Consecutive5xx != 0 {
		add("health.passive.consecutive_5xx", "a tcp connection has no status; connect failures count as local-origin and gateway failures")
	}
	if p.ErrorStatuses != nil {
		add("health.passive.error_statuses", "a tcp connection has no status")
	}
	if c := u.Canary; c != nil {
		if c.Header != "" {
			add("canary.header", "a tcp connection has no header to override the split with")
		}
		if len(c.Match) > 0 {
			add("canary.match", "a tcp connection has no header or cookie to match")
		}
		if c.HashOn != nil {
			if k, err := c.HashOn.Compile(); err == nil && k.FromRequest() {
				add("canary.hash_on", "a tcp connection has no request to hash; use source_ip")
			}
		}
	}
	return errs
}

// cannotRegister lists the registry types whose registries are not a
// discovery.Registrar. That capability is found by a type assertion on an
// opened registry, and opening one starts its work (a static file's poller,
// an etcd client), which validation must not do; so the types are named
// here, beside the adapters they describe.
var cannotRegister = map[string]bool{"static": true}

// canRegister reports whether a registry of type typ can announce the
// local application (register:).
func canRegister(typ string) bool { return !cannotRegister[typ] }

// registrarHint names the known registry types that can register, as
// "; use a, b or c", or "" when there are none.
func registrarHint() string {
	var types []string
	for _, t := range discovery.Types() {
		if canRegister(t) {
			types = append(types, t)
		}
	}
	switch len(types) {
	case 0:
		return ""
	case 1:
		return "; use " + types[0]
	}
	return "; use " + strings.Join(types[:len(types)-1], ", ") + " or " + types[len(types)-1]
}

// unjoin splits an errors.Join result into its parts.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// registryNames lists the registries' names, quoted, for errors.
func registryNames(rs []Registry) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = strconv.Quote(r.Name)
	}
	return out
}

// isLoopback reports whether addr binds a loopback address only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHostPort checks a listen address: host:port with an IP, a host
// name or nothing as host and a port 0..65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil && !upstreamName.MatchString(host) {
		return fmt.Errorf("bad host %q", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("bad port %q; want 0..65535", port)
	}
	return nil
}

// ZoneEnv names Remora's own zone when the configuration does not.
const ZoneEnv = "REMORA_ZONE"

// warnSourceIP warns about an upstream that hashes the client's address
// when every listener that reaches it is on loopback: in a sidecar every
// request then comes from the application's own 127.0.0.1 and hashes to
// one node.
func (c *Config) warnSourceIP() {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		var fields []string
		if k, ok := u.Balancer.Builder.(hashkey.Keyed); ok && k.HashKey().SourceIP() {
			fields = append(fields, "balancer.hash_on.source_ip")
		}
		if u.Canary != nil && u.Canary.HashOn != nil && u.Canary.HashOn.SourceIP {
			fields = append(fields, "canary.hash_on.source_ip")
		}
		if len(fields) == 0 {
			continue
		}
		loopback := u.Listen == "" || isLoopback(u.Listen)
		if u.Protocol != "tcp" {
			for _, l := range c.Listeners {
				loopback = loopback && isLoopback(l.Address)
			}
		}
		if loopback {
			for _, f := range fields {
				c.Warnings = append(c.Warnings, fmt.Sprintf("upstreams[%d].%s: every listener that reaches %q is on loopback, so every request comes from the application's own address and hashes to one node; hash on a header (e.g. x-user-id) instead", i, f, u.Name))
			}
		}
	}
}
