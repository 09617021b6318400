package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/register"
)

// upstreamName is what a Host header can carry: a lower-case DNS name.
var upstreamName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,251}[a-z0-9])?$`)

// Validate checks the whole configuration and parses registry and balancer
// options. It reports every problem, not just the first, as Errors (without
// positions: Parse adds them).
func (c *Config) Validate() error {
	d := strictyaml.NewDecoder()
	c.validate(d)
	return d.Err()
}

// validate checks the configuration, decoding the option blocks with d,
// and records every problem in d.
func (c *Config) validate(d *strictyaml.Decoder) {
	add := func(format string, args ...any) { d.Add("", fmt.Errorf(format, args...)) }
	at := func(path, format string, args ...any) { d.AddAt(path, fmt.Sprintf(format, args...)) }

	binds := &binder{add: add}
	binds.bind("admin.address", c.Admin.Address, c.defaultAdmin)
	if c.Admin.TokenFile != "" {
		if c.Admin.Token != "" {
			add("admin.token_file: set either token or token_file")
		}
		// An empty file is an error, not "no token": on a loopback
		// address that would open the admin API to every container of
		// the pod.
		token, err := secret.ReadFile("admin.token_file", tlsfiles.Resolve(c.Dir, c.Admin.TokenFile), "the token")
		if err != nil {
			add("%v", err)
		}
		c.Admin.Token = token
	}
	if c.Admin.Token == "" && !isLoopback(c.Admin.Address) && checkHostPort(c.Admin.Address) == nil {
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
		binds.bind(path+".address", l.Address, c.defaultListener)
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
	switch v := *c.AccessLog.Sample; {
	case v == 0:
		add("access_log.sample: 0 would log nothing; set access_log.enabled: false for that, or a share above 0 up to 1")
	case v < 0 || v > 1 || v != v:
		add("access_log.sample: %v; want a share above 0 up to 1", v)
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
		switch {
		case !ok && r.Type == "":
			add("%s.type: missing; known: %s", path, strings.Join(discovery.Types(), ", "))
			continue
		case !ok:
			add("%s.type: unknown registry type %q; known: %s", path, r.Type, strings.Join(discovery.Types(), ", "))
			continue
		}
		bpath := path + "." + r.Type
		opts, err := strictyaml.ParseBlock(d, r.keys[r.Type], r.blocks[r.Type], bpath, f.Parse)
		d.Add(bpath, err)
		if err == nil {
			r.Options = opts
			if fc, ok := opts.(discovery.Checker); ok {
				d.Add(bpath, fc.Check(c.Dir)) // the files it names, as Open reads them
			}
		}
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
		if err := r.Validate(); err != nil {
			d.Add("register", err)
		} else {
			validateRegistration(d, c, r)
		}
	}
	upstreams, tcp := map[string]bool{}, map[string]bool{}
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
		if u.Protocol == "tcp" {
			tcp[u.Name] = true
		}
		switch {
		case u.Registry == "" && len(c.Registries) == 0:
			add("%s.registry: missing, and no registries are configured", path)
		case u.Registry == "":
			add("%s.registry: missing; there are %d registries, name one", path, len(c.Registries))
		case !registries[u.Registry]:
			add("%s.registry: unknown registry %q; known: %s", path, u.Registry, strings.Join(registryNames(c.Registries), ", "))
		}
		if u.Listen != "" {
			binds.bind(path+".listen", u.Listen, false)
		}
		if u.InitialSyncTimeout < 0 {
			add("%s.initial_sync_timeout: %v is negative", path, u.InitialSyncTimeout)
		}
		if u.Protocol == "tcp" {
			d.Add(path, errors.Join(tcpRefuses(u)...))
		}
		d.Add(path+".health", u.Health.Validate())
		d.Add(path, u.Policy.Validate())
		if l := u.Locality; l != nil {
			if l.Zone == "" {
				l.Zone = cmp.Or(c.Zone, os.Getenv(ZoneEnv))
			}
			d.Add(path+".locality", l.Validate())
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
			d.Add(path+".tls", err)
			if tc != nil && u.Protocol == "h2" {
				tc.NextProtos = []string{"h2"}
			}
			u.TLSConfig = tc
		}
		if u.Canary != nil {
			rule, err := u.Canary.Validate()
			d.Add(path+".canary", err)
			u.CanaryRule = rule // nil when disabled
		} else {
			u.CanaryRule = canary.DefaultRule()
		}
		validateServices(d, c, u, path)
		f, ok := balancer.Lookup(u.Balancer.Policy)
		if !ok {
			at := path + ".balancer"
			if u.Balancer.policyKey {
				at += ".policy"
			}
			add("%s: unknown policy %q; known: %s", at, u.Balancer.Policy, strings.Join(balancer.Names(), ", "))
			continue
		}
		b, err := strictyaml.ParseBlock(d, nil, u.Balancer.options, path+".balancer", f.Parse)
		if err != nil {
			d.Add(path+".balancer", err)
			continue
		}
		u.Balancer.Builder = b
		if k, ok := b.(hashkey.Keyed); ok && u.Protocol == "tcp" && k.HashKey().FromRequest() {
			add("%s.balancer.hash_on: a tcp connection has no request to hash; use source_ip", path)
		}
	}
	for i := range c.Listeners {
		validateRoutes(fmt.Sprintf("listeners[%d]", i), c.Listeners[i].Routes, upstreams, tcp, add, at)
	}
	c.warnSourceIP()
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		path := fmt.Sprintf("upstreams[%d]", i)
		if len(u.Routes) > 0 && (u.Listen == "" || u.Protocol == "tcp") {
			add("%s.routes: routes need the upstream's own http listen port", path)
		}
		validateRoutes(path, u.Routes, upstreams, tcp, add, at)
		validateHeaderRules(path+".request_headers", u.RequestHeaders, at)
		validateHeaderRules(path+".response_headers", u.ResponseHeaders, at)
		if m := u.Mirror; m != nil {
			d.Add(path+".mirror", m.Validate())
			switch {
			case u.Protocol == "tcp":
				add("%s.mirror: a tcp upstream relays one connection; nothing can be copied", path)
			case m.Canary && u.Canary != nil && u.Canary.Disabled:
				add("%s.mirror.canary: upstream %q has canary.disabled: true, so it has no canary pool and every copy would be dropped; mirror to another upstream (mirror.upstream), or remove canary.disabled", path, u.Name)
			case m.Upstream == u.Name && u.Canary != nil && u.Canary.Disabled:
				add("%s.mirror.upstream: %q is this upstream; mirror to another upstream (its canary pool is disabled)", path, m.Upstream)
			case m.Upstream == u.Name:
				add("%s.mirror.upstream: %q is this upstream; mirror to another, or to its canary pool (canary: true)", path, m.Upstream)
			case m.Upstream != "" && !upstreams[m.Upstream]:
				add("%s.mirror.upstream: unknown upstream %q", path, m.Upstream)
			case tcp[m.Upstream]:
				add("%s.mirror.upstream: %q is a tcp upstream, which relays raw connections; a copy is an HTTP request", path, m.Upstream)
			}
		}
	}
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
	if u.RequestHeaders != nil {
		add("request_headers", "a tcp connection has no headers")
	}
	if u.ResponseHeaders != nil {
		add("response_headers", "a tcp connection has no headers")
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
		if c.Rollback != nil && c.Rollback.LatencyP99Margin != 0 {
			add("canary.rollback.latency_p99_margin", "a tcp connection has no answer to time (its latency is its connect's); roll back on error_rate_margin (connect failures)")
		}
	}
	return errs
}

// canRegister reports whether a registry of type typ can announce the
// local application (register:): its factory says so.
func canRegister(typ string) bool {
	f, ok := discovery.Lookup(typ)
	_, registers := f.(discovery.RegistrarFactory)
	return ok && registers
}

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

// binder checks the addresses Remora listens on (admin, listeners,
// dedicated ports) and that no two of them would clash: the same address
// however written (localhost is 127.0.0.1, [::ffff:127.0.0.1] too), or a
// wildcard (0.0.0.0, [::], or no host, all of which take the port on every
// address) and any other address on the same port. Port 0 never clashes.
type binder struct {
	add   func(format string, args ...any)
	bound []binding
}

// binding is one address bound, parsed.
type binding struct {
	path, addr string
	defaulted  bool       // not written in the file
	wildcard   bool       // every address
	ip         netip.Addr // a specific IP, when the host is one
	host       string     // a host name, lower case, when it is not
	port       int
}

// bind checks addr, at path (defaulted: a default, not in the file), and
// reports a clash with an address bound before.
func (b *binder) bind(path, addr string, defaulted bool) {
	if err := checkHostPort(addr); err != nil {
		b.add("%s: %q: %v", path, addr, err)
		return
	}
	host, port, _ := net.SplitHostPort(addr)
	nb := binding{path: path, addr: addr, defaulted: defaulted}
	nb.port, _ = strconv.Atoi(port)
	if nb.port == 0 {
		return // an ephemeral port never clashes
	}
	switch ip, err := netip.ParseAddr(host); {
	case host == "":
		nb.wildcard = true
	case strings.EqualFold(host, "localhost"):
		nb.ip = netip.AddrFrom4([4]byte{127, 0, 0, 1}) // Go listens on its IPv4 address
	case err == nil:
		nb.ip = ip.Unmap().WithZone(ip.Zone())
		nb.wildcard = nb.ip.IsUnspecified()
	default:
		nb.host = strings.ToLower(strings.TrimSuffix(host, "."))
	}
	for _, ob := range b.bound {
		if ob.port != nb.port {
			continue
		}
		// Report at the address written in the file, the later one if
		// both are.
		at, other := nb, ob
		if nb.defaulted && !ob.defaulted {
			at, other = ob, nb
		}
		otherName := other.path
		if other.defaulted {
			otherName += " (the default)"
		}
		switch {
		case nb.addr == ob.addr:
			b.add("%s: address %q is already used by %s", at.path, at.addr, otherName)
		case at.wildcard || other.wildcard:
			if at.wildcard {
				b.add("%s: %q takes port %d on every address, so it clashes with %s, %q", at.path, at.addr, at.port, otherName, other.addr)
			} else {
				b.add("%s: %q clashes with %s, %q, which takes port %d on every address", at.path, at.addr, otherName, other.addr, at.port)
			}
		case nb.ip.IsValid() && nb.ip == ob.ip, nb.host != "" && nb.host == ob.host:
			b.add("%s: %q is the same address as %s, %q", at.path, at.addr, otherName, other.addr)
		default:
			continue
		}
		return
	}
	b.bound = append(b.bound, nb)
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

// validateRegistration checks the register: block, its defaults filled,
// with its registry's rules for what it takes (discovery.
// RegistrationValidator), when it has any.
func validateRegistration(d *strictyaml.Decoder, c *Config, r *register.Config) {
	reg := c.Registry(r.Registry)
	if reg == nil {
		return
	}
	rv, ok := reg.Options.(discovery.RegistrationValidator)
	if !ok {
		return
	}
	if err := rv.ValidateRegistration(r.Service, r.Instance()); err != nil {
		d.Add("register", err)
	}
}

// validateServices checks u's service names, and its canary's, with its
// registry's syntax for them (discovery.ServiceValidator), when it has one.
func validateServices(d *strictyaml.Decoder, c *Config, u *Upstream, path string) {
	reg := c.Registry(u.Registry)
	if reg == nil {
		return
	}
	sv, ok := reg.Options.(discovery.ServiceValidator)
	if !ok {
		return
	}
	if err := sv.ValidateService(u.Service); err != nil {
		if u.serviceFromName {
			d.Add(path+".name", fmt.Errorf("the upstream's name is also its service (service: is not set), and registry %q does not take it: %w", reg.Name, err))
		} else {
			d.Add(path+".service", err)
		}
	}
	if u.Canary != nil && u.Canary.Service != "" {
		if err := sv.ValidateService(u.Canary.Service); err != nil {
			d.Add(path+".canary.service", err)
		}
	}
}
