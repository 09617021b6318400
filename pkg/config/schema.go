package config

import (
	"bytes"
	"crypto/tls"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
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
	// Zone is Remora's own zone, for upstreams with a locality block;
	// default $REMORA_ZONE.
	Zone string `yaml:"zone"`

	// Dir is the directory of the config file; relative paths in the
	// config are resolved against it. Not part of the YAML.
	Dir string `yaml:"-" json:"-"`

	// Warnings are what Validate found questionable but not wrong; the
	// commands print them.
	Warnings []string `yaml:"-" json:"-"`

	// defaultAdmin and defaultListener tell that admin.address and the
	// listeners are the defaults, not written in the file.
	defaultAdmin, defaultListener bool
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
	// Routes send requests to upstreams by host, path, method and
	// headers, in order; without them (or when none matches) the Host
	// header names the upstream.
	Routes []Route `yaml:"routes"`
	// Forwarded is what happens to the application's X-Forwarded-For,
	// -Host, -Proto and Forwarded headers: keep (default: the application
	// is the trusted local caller), append (add this hop, as a reverse
	// proxy would) or drop.
	Forwarded string `yaml:"forwarded"`
	// RequestID gives every request an X-Request-Id when it has none
	// (passed on as is when it has one, and logged); default true.
	RequestID *bool `yaml:"request_id"`
}

// Registry is one service registry.
type Registry struct {
	// Name is referenced by upstreams.
	Name string `yaml:"name"`
	// Type selects the adapter: static, etcd, consul, nacos.
	Type string `yaml:"type"`

	// Options are the adapter's parsed options, set by Validate.
	Options discovery.Options `yaml:"-" json:"-"`

	blocks map[string]*yaml.Node // option blocks by key: the type's own and misplaced ones
	keys   map[string]*yaml.Node // the blocks' key nodes, for their positions
}

// Upstream is one named group of backend nodes.
type Upstream struct {
	// Name is matched against the Host header of outbound requests.
	Name string `yaml:"name"`
	// Registry names the registry to watch; optional when there is one.
	Registry string `yaml:"registry"`
	// Service is the name in the registry; defaults to Name.
	Service string `yaml:"service"`
	// serviceFromName: Service was not set and is Name.
	serviceFromName bool
	// Listen is an optional dedicated host:port for this upstream only.
	Listen string `yaml:"listen"`
	// Routes on the dedicated port send some of its requests to other
	// upstreams (see Listener.Routes); the rest come to this one.
	Routes []Route `yaml:"routes"`
	// RequestHeaders and ResponseHeaders change headers of every request
	// to this upstream (after a route's own rules).
	RequestHeaders  *HeaderRules `yaml:"request_headers"`
	ResponseHeaders *HeaderRules `yaml:"response_headers"`
	// Balancer is the load-balancing policy, by name or with options.
	Balancer Balancer `yaml:"balancer"`
	// InitialSyncTimeout is how long the registry's first node set is
	// waited for before the set saved under data_dir is served (and
	// /readyz counts it); default 10s.
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
	// Locality keeps traffic in Remora's own zone while enough of it is
	// healthy (zone-aware routing); off unless set.
	Locality *upstream.Locality `yaml:"locality"`
	// Mirror copies a share of the upstream's requests to another upstream
	// or to its canary pool, and drops the answers; off unless set.
	Mirror *upstream.Mirror `yaml:"mirror"`
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

	options   *yaml.Node // the mapping's keys but policy; nil without options
	policyKey bool       // policy was written as a key of a mapping
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

// Registry returns the registry named name, or nil.
func (c *Config) Registry(name string) *Registry {
	for i := range c.Registries {
		if c.Registries[i].Name == name {
			return &c.Registries[i]
		}
	}
	return nil
}
