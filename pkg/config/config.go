// Package config defines Remora's YAML configuration: the schema, its
// defaults, and validation whose errors name the file, the field path and the
// bad value.
//
// Registry and balancer options are parsed by the adapter or policy that owns
// them (discovery.Factory, balancer.Factory), so this package imports no
// registry SDK; the caller must have imported the adapters and policies it
// wants to accept (cmd/remora imports them all).
package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Defaults.
const (
	DefaultAdminAddress        = "127.0.0.1:15000"
	DefaultOutboundAddress     = "127.0.0.1:15001"
	DefaultBalancer            = "round_robin"
	DefaultInitialSyncTimeout  = 10 * time.Second
	DefaultDrainTimeout        = 15 * time.Second
	DefaultConnectTimeout      = 2 * time.Second
	DefaultIdleConnTimeout     = 90 * time.Second
	DefaultMaxIdleConnsPerHost = 256
)

// Config is the whole configuration file.
type Config struct {
	// Admin is the admin API listener.
	Admin Admin `yaml:"admin"`
	// Listeners accept the application's outbound HTTP calls and route them
	// by Host header. Default: one named "outbound" on 127.0.0.1:15001.
	Listeners []Listener `yaml:"listeners"`
	// Registries are the service registries upstreams are fed from.
	Registries []Registry `yaml:"registries"`
	// Upstreams are the named groups of nodes requests go to.
	Upstreams []Upstream `yaml:"upstreams"`
	// Proxy tunes forwarding.
	Proxy Proxy `yaml:"proxy"`
	// DrainDelay is how long shutdown keeps serving after /readyz turned
	// false, so that load balancers and Kubernetes stop sending first;
	// default 0.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Register announces the local application in a registry.
	Register *register.Config `yaml:"register"`
	// AccessLog logs one JSON line per proxied request.
	AccessLog AccessLog `yaml:"access_log"`
	// DataDir is where registries may keep state (caches); optional.
	DataDir string `yaml:"data_dir"`

	// Dir is the directory of the config file; relative paths in the
	// config are resolved against it. Not part of the YAML.
	Dir string `yaml:"-" json:"-"`
}

// Admin is the admin listener.
type Admin struct {
	// Address is host:port; default 127.0.0.1:15000.
	Address string `yaml:"address"`
	// Metrics shapes GET /metrics.
	Metrics AdminMetrics `yaml:"metrics"`
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every admin endpoint but /healthz and /readyz. Required when the
	// admin address is not loopback. Never logged.
	Token string `yaml:"token" json:"-"`
	// TokenFile reads the token from a file instead.
	TokenFile string `yaml:"token_file"`
}

// AdminMetrics shapes the Prometheus metrics.
type AdminMetrics struct {
	// NodeLabels adds per-node series; default true. Turn it off to bound
	// label cardinality by the number of upstreams.
	NodeLabels *bool `yaml:"node_labels"`
}

// AccessLog configures the per-request log.
type AccessLog struct {
	// Enabled turns it on; off by default.
	Enabled bool `yaml:"enabled"`
	// Sample is the share of requests logged, 0..1; default 1.
	Sample *float64 `yaml:"sample"`
}

// Listener is an outbound HTTP listener.
type Listener struct {
	// Name identifies the listener in logs.
	Name string `yaml:"name"`
	// Address is host:port.
	Address string `yaml:"address"`
}

// Registry is one service registry.
type Registry struct {
	// Name is referenced by upstreams.
	Name string `yaml:"name"`
	// Type selects the adapter: static, etcd, consul, nacos.
	Type string `yaml:"type"`

	// Options are the adapter's parsed options, set by Validate.
	Options discovery.Options `yaml:"-" json:"-"`

	blocks map[string]*yaml.Node // type-named option blocks, by key
}

// Upstream is one named group of backend nodes.
type Upstream struct {
	// Name is matched against the Host header of outbound requests.
	Name string `yaml:"name"`
	// Registry names the registry to watch; optional when there is one.
	Registry string `yaml:"registry"`
	// Service is the name in the registry; defaults to Name.
	Service string `yaml:"service"`
	// Listen is an optional dedicated host:port for this upstream only.
	Listen string `yaml:"listen"`
	// Balancer is the load-balancing policy, by name or with options.
	Balancer Balancer `yaml:"balancer"`
	// InitialSyncTimeout bounds how long /readyz waits for the first node
	// set; default 10s.
	InitialSyncTimeout time.Duration `yaml:"initial_sync_timeout"`
	// Health is outlier detection, active probes and the panic threshold.
	Health health.Config `yaml:"health"`
	// Protocol is how nodes are spoken to: http (HTTP/1.1, default), h2c
	// (HTTP/2 without TLS, for gRPC), h2 (HTTP/2 over TLS; needs tls), or
	// tcp (raw TCP on the listen port; needs listen).
	Protocol string `yaml:"protocol"`
	// TLS speaks TLS to the nodes (mTLS with cert_file and key_file).
	// server_name defaults to the service name.
	TLS *tlsfiles.Options `yaml:"tls"`
	// Canary overrides the canary rule every upstream has (instances
	// tagged canary=true get the share their canary-weight label gives,
	// none without one); `canary: {disabled: true}` turns it off.
	Canary *canary.Config `yaml:"canary"`
	// Policy holds retry, timeouts and circuit_breaker.
	upstream.Policy `yaml:",inline"`

	// TLSConfig is the loaded TLS, set by Validate.
	TLSConfig *tls.Config `yaml:"-" json:"-"`
	// CanaryRule is the compiled Canary, or canary.DefaultRule without a
	// canary block; nil when the block disables it. Set by Validate.
	CanaryRule *canary.Rule `yaml:"-" json:"-"`
}

// Balancer names a policy and holds its options: either a scalar
// (`balancer: round_robin`) or a mapping with `policy` and the policy's own
// options (`balancer: {policy: least_request, choice_count: 2}`).
type Balancer struct {
	// Policy is the policy's name; default round_robin.
	Policy string `yaml:"policy"`

	// Builder is the parsed policy, set by Validate.
	Builder balancer.Builder `yaml:"-" json:"-"`

	options *yaml.Node
}

// SameAs reports whether b and o configure the same policy with the same
// options, wherever in the file they were written.
func (b Balancer) SameAs(o Balancer) bool {
	if b.Policy != o.Policy || (b.options == nil) != (o.options == nil) {
		return false
	}
	if b.options == nil {
		return true
	}
	x, errX := yaml.Marshal(b.options)
	y, errY := yaml.Marshal(o.options)
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// Proxy tunes upstream connections.
type Proxy struct {
	// ConnectTimeout bounds dialing a node; default 2s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// IdleConnTimeout closes idle upstream connections; default 90s.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
	// MaxIdleConnsPerHost is the keep-alive pool size per node; default 256.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
	// MaxHeaderBytes bounds a request's header size; larger requests get
	// 431. Default 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ReadHeaderTimeout bounds reading a request's headers (slow clients);
	// default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// MaxResponseHeaderBytes bounds a node's answer head; a larger one is
	// answered 502. Default 64 KiB.
	MaxResponseHeaderBytes int64 `yaml:"max_response_header_bytes"`
}

// UnmarshalYAML takes name and type, and keeps the other keys as option
// blocks for the adapter.
func (r *Registry) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a registry must be a mapping with name and type", n.Line)
	}
	r.blocks = map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			if err := v.Decode(&r.Name); err != nil {
				return err
			}
		case "type":
			if err := v.Decode(&r.Type); err != nil {
				return err
			}
		default:
			r.blocks[k.Value] = v
		}
	}
	return nil
}

// UnmarshalYAML accepts a policy name or a mapping with policy and options.
func (b *Balancer) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&b.Policy)
	case yaml.MappingNode:
		opts := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "policy" {
				if err := n.Content[i+1].Decode(&b.Policy); err != nil {
					return err
				}
				continue
			}
			opts.Content = append(opts.Content, n.Content[i], n.Content[i+1])
		}
		if len(opts.Content) > 0 {
			b.options = opts
		}
		return nil
	}
	return fmt.Errorf("line %d: balancer must be a policy name or a mapping with policy", n.Line)
}

// MarshalYAML writes the policy name (options are not echoed).
func (b Balancer) MarshalYAML() (any, error) { return b.Policy, nil }

// Load reads, defaults and validates the file at path. The error lists
// every problem found, each prefixed with the file name.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	cfg, err := Parse(data, dir)
	if err != nil {
		return nil, prefixLines(filepath.Base(path), err)
	}
	return cfg, nil
}

// Parse decodes, defaults and validates a configuration; dir resolves
// relative paths.
func Parse(data []byte, dir string) (*Config, error) {
	cfg := &Config{Dir: dir}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, withPaths(data, cleanYAMLError(err))
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) applyDefaults() {
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	if c.Admin.Metrics.NodeLabels == nil {
		on := true
		c.Admin.Metrics.NodeLabels = &on
	}
	if c.AccessLog.Sample == nil {
		one := 1.0
		c.AccessLog.Sample = &one
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Name: "outbound", Address: DefaultOutboundAddress}}
	}
	for i := range c.Listeners {
		if c.Listeners[i].Name == "" {
			c.Listeners[i].Name = "listener-" + strconv.Itoa(i)
		}
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Proxy.ConnectTimeout == 0 {
		c.Proxy.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Proxy.IdleConnTimeout == 0 {
		c.Proxy.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.Proxy.MaxIdleConnsPerHost == 0 {
		c.Proxy.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.Proxy.MaxHeaderBytes == 0 {
		c.Proxy.MaxHeaderBytes = 64 << 10
	}
	if c.Proxy.ReadHeaderTimeout == 0 {
		c.Proxy.ReadHeaderTimeout = 10 * time.Second
	}
	if c.Proxy.MaxResponseHeaderBytes == 0 {
		c.Proxy.MaxResponseHeaderBytes = 64 << 10
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Service == "" {
			u.Service = u.Name
		}
		if u.Registry == "" && len(c.Registries) == 1 {
			u.Registry = c.Registries[0].Name
		}
		if u.Balancer.Policy == "" {
			u.Balancer.Policy = DefaultBalancer
		}
		if u.InitialSyncTimeout == 0 {
			u.InitialSyncTimeout = DefaultInitialSyncTimeout
		}
	}
}

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
	for i, l := range c.Listeners {
		path := fmt.Sprintf("listeners[%d]", i)
		if names[l.Name] {
			add("%s.name: duplicate listener name %q", path, l.Name)
		}
		names[l.Name] = true
		bind(path+".address", l.Address)
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
		{"budget_percent", r.BudgetPercent != nil}, {"min_retries", r.MinRetries != nil},
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

// Registry returns the registry named name, or nil.
func (c *Config) Registry(name string) *Registry {
	for i := range c.Registries {
		if c.Registries[i].Name == name {
			return &c.Registries[i]
		}
	}
	return nil
}

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

// strictDecoder decodes an options block into a struct, rejecting unknown
// fields. A missing block decodes to nothing.
func strictDecoder(n *yaml.Node) func(any) error {
	return func(v any) error {
		if n == nil {
			return nil
		}
		data, err := yaml.Marshal(n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("(line %d) %s", n.Line, strings.ReplaceAll(cleanYAMLError(err).Error(), "\n", "; "))
		}
		return nil
	}
}

// withPaths adds the field path to yaml.v3's "line N: ..." messages, which
// name only the line.
func withPaths(data []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	paths := map[int][]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			if n.Style&yaml.FlowStyle != 0 {
				paths[n.Line] = append(paths[n.Line], path)
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			if n.Style&yaml.FlowStyle != 0 {
				paths[n.Line] = append(paths[n.Line], path)
			}
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		default:
			paths[n.Line] = append(paths[n.Line], path)
		}
	}
	walk(&root, "")
	parts := strings.Split(err.Error(), "\n")
	for i, part := range parts {
		var line int
		if _, scanErr := fmt.Sscanf(part, "line %d:", &line); scanErr != nil || len(paths[line]) == 0 {
			continue
		}
		prefix := commonPrefix(paths[line])
		if m := unknownField.FindStringSubmatch(part); m != nil {
			part = fmt.Sprintf("line %d: unknown field %q (check its spelling and indentation)", line, m[1])
		}
		if strings.HasSuffix(part, "into time.Duration") {
			part += " (want a duration such as 5s or 250ms)"
		}
		rest := strings.TrimPrefix(part, fmt.Sprintf("line %d:", line))
		parts[i] = fmt.Sprintf("line %d: %s:%s", line, prefix, rest)
	}
	return errors.New(strings.Join(parts, "\n"))
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type`)

// commonPrefix returns the longest path that prefixes every path.
func commonPrefix(paths []string) string {
	p := paths[0]
	for _, q := range paths[1:] {
		for !strings.HasPrefix(q, p) {
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				return "(document)"
			}
			p = p[:i]
		}
	}
	return p
}

// cleanYAMLError flattens yaml.v3's multi-line TypeError.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "\n"))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// prefixLines prefixes every line of err's message with prefix.
func prefixLines(prefix string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = prefix + ": " + l
	}
	return errors.New(strings.Join(lines, "\n"))
}
