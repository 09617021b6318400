// Package dns is the registry adapter for nodes named in DNS: SRV records,
// or the A and AAAA records of a name.
//
//	registries:
//	  - name: dns
//	    type: dns
//	    dns: {resolver: 127.0.0.1:53, min_refresh: 1s, max_refresh: 5m}
//	upstreams:
//	  - name: api
//	    service: _http._tcp.api.internal    # SRV
//	  - name: web
//	    service: web.internal:8080          # A/AAAA, one node per address
//
// A service that starts with an underscore is an SRV name: the records of
// the lowest priority are the nodes (the others are backups, RFC 2782),
// each target's A/AAAA addresses with the record's port and weight (0
// counts as 1), and metadata from the TXT records of the target name,
// "key=value" strings as in DNS-SD (RFC 6763; a bare "key" is "true"). Any
// other service is "name:port": one node per address. A node's ID is its
// address and port, after its target for an SRV node
// ("target/address:port"), so that per-node state (health, ejections,
// latency) stays with the backend at that address when a target's
// addresses change.
//
// A name's addresses are those of one family: its IPv4 addresses when it
// has any, else its IPv6 ones, as Envoy's V4_PREFERRED lookup family and
// the Kubernetes adapter (a dual-stack pod is reached at its IPv4
// address). A dual-stack host is one node, then, and an SRV target with
// A and AAAA records gets its record's weight once, as one with A records
// only. Each address of the family is a node with the record's weight, as
// Envoy's STRICT_DNS gives each address of a host its endpoint's weight.
//
// A name is asked again when its records' TTL runs out (the smallest of
// the SRV, address and TXT records' TTLs), within min_refresh and
// max_refresh: TTL 0, Consul DNS's default, means min_refresh. A failed
// lookup keeps the last set, marked stale, as every adapter does; an
// authoritative "no such name" is an empty set, published once a second
// lookup a second later agrees. A name whose A or AAAA question fails
// (SERVFAIL, no answer) while the other has addresses has those
// addresses, as with Go's resolver; when neither has any, the failure
// fails the lookup.
//
// Without resolver:, names are resolved as Go's resolver resolves them
// with /etc/resolv.conf: a name with a final dot is absolute; one with at
// least ndots dots (options ndots:N, default 1) is asked as written, then
// with each domain of the search list after it; one with fewer, with each
// search domain first and as written last (so that in Kubernetes
// "user-service.pay:80" is user-service.pay.svc.cluster.local). "No such
// name" or no records moves to the next name; a failure (SERVFAIL, no
// answer) is the lookup's error, not a move, since a later name could be
// another service's (Go's resolver with StrictErrors). With resolver:
// set, the search list is not used and a name is asked as written,
// absolute: that server (Consul's DNS, say) need not know the host's
// search domains, and a name in config is better complete. An SRV
// target is absolute either way. Unlike Go and glibc, a resolv.conf
// without a search or domain line has no search list (the domain of the
// host's name is not taken).
//
// A lookup that panics (an answer no test foresaw) is logged with its
// stack and fails as any other; the name is asked again a second later.
package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/retry"
)

// Type is the adapter's type name in config.
const Type = "dns"

func init() { discovery.Register(factory{}) }

type factory struct{}

func (factory) Type() string { return Type }

func (factory) Parse(decode func(any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Options configure a DNS registry.
type Options struct {
	// Resolver is the DNS server to ask, host:port; default the
	// nameservers of /etc/resolv.conf, port 53, in order (read again as
	// it changes; see Open), with its search list and ndots. Names asked
	// of an explicit resolver are absolute, as written.
	Resolver string `yaml:"resolver"`
	// Timeout bounds one lookup; default 2s.
	Timeout duration.Duration `yaml:"timeout"`
	// MinRefresh and MaxRefresh bound how often a name is asked again
	// (its records' TTL otherwise); defaults 1s and 5m.
	MinRefresh duration.Duration `yaml:"min_refresh"`
	MaxRefresh duration.Duration `yaml:"max_refresh"`
}

func (o *Options) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Resolver != "" {
		_, port, err := net.SplitHostPort(o.Resolver)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
			add("resolver: %q; want host:port with a port 1..65535, e.g. 127.0.0.1:53", o.Resolver)
		}
	}
	def := func(d *duration.Duration, v time.Duration) {
		if *d == 0 {
			*d = duration.Duration(v)
		}
	}
	def(&o.Timeout, 2*time.Second)
	def(&o.MinRefresh, time.Second)
	def(&o.MaxRefresh, 5*time.Minute)
	for _, d := range []struct {
		name string
		v    duration.Duration
	}{{"timeout", o.Timeout}, {"min_refresh", o.MinRefresh}, {"max_refresh", o.MaxRefresh}} {
		if d.v <= 0 {
			add("%s: %v; want a positive duration", d.name, d.v)
		}
	}
	if o.MinRefresh > o.MaxRefresh {
		add("min_refresh: %v is above max_refresh %v", o.MinRefresh, o.MaxRefresh)
	}
	return errors.Join(errs...)
}

// resolvConf is the file that names the system's nameservers (asked on
// resolvPort) and search list; tests change them.
var resolvConf, resolvPort = "/etc/resolv.conf", "53"

// Open implements discovery.Options; it does not touch the network and
// does not fail. Without a resolver, the nameservers of /etc/resolv.conf
// are asked, in order, with its search list and ndots, as the system's
// resolver does (see the package doc): a file that cannot be read or
// names no nameserver is logged here and is every lookup's error (each
// watcher's Next returns it) until a later lookup finds one; the file is
// read again at most every few seconds, as the Go resolver does, so a
// change is seen.
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	log := env.Logger()
	explicit := resolvConfig{servers: []string{o.Resolver}}
	resolver := func() (resolvConfig, error) { return explicit, nil }
	if o.Resolver == "" {
		sys := &systemResolver{path: resolvConf, port: resolvPort, now: time.Now}
		if _, err := sys.get(); err != nil {
			log.WithError(err).Warn("dns: lookups fail until the system's resolver can be read; set resolver: host:port to name one")
		}
		resolver = sys.get
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{resolver: resolver, opts: *o, log: log, ctx: ctx, cancel: cancel}, nil
}

// systemResolver is the configuration that a resolv.conf file holds
// (nameservers, search list, ndots), read again when the last good reading
// is older than resolvConfMaxAge. A reading that fails is not kept: the
// next lookup tries again, and a failure after a good reading keeps the
// good one (the file may be being rewritten). Its get may be called from
// any goroutine.
type systemResolver struct {
	path string
	port string
	now  func() time.Time

	mu   sync.Mutex
	conf resolvConfig // no servers until a reading succeeds
	at   time.Time
}

// resolvConfMaxAge is how long a good reading of resolv.conf is used.
const resolvConfMaxAge = 5 * time.Second

func (s *systemResolver) get() (resolvConfig, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conf.servers != nil && s.now().Sub(s.at) < resolvConfMaxAge {
		return s.conf, nil
	}
	conf, err := readResolvConf(s.path, s.port)
	switch {
	case err == nil:
		s.conf, s.at = conf, s.now()
	case s.conf.servers == nil:
		return resolvConfig{}, fmt.Errorf("no resolver set, and %w", err)
	}
	return s.conf, nil
}

// Registry asks one DNS server. Watch and Close may be called from any
// goroutine.
type Registry struct {
	resolver func() (resolvConfig, error) // the DNS servers to ask, and the names a name is asked as
	opts     Options
	log      *logrus.Entry
	ctx      context.Context
	cancel   context.CancelFunc
}

var _ discovery.Registry = (*Registry)(nil)

// Watch implements discovery.Registry: a goroutine asks for service's
// records as their TTL says and publishes the set.
func (r *Registry) Watch(ctx context.Context, service string) (discovery.Watcher, error) {
	q, err := parseService(service)
	if err != nil {
		return nil, fmt.Errorf("dns: service %q: %v", service, err)
	}
	l := discovery.NewLatest()
	wctx, cancel := context.WithCancel(r.ctx)
	go func() {
		<-l.Done()
		cancel()
	}()
	go r.run(wctx, q, l)
	return l, nil
}

// run is a watcher's producer goroutine: follow, started again after a
// panic (the lookup of an answer no test foresaw), which is logged with
// its stack and returned by Next as an error (the set is kept, marked
// stale). The loop's state survives: an empty answer after the restart is
// still confirmed before it empties the set.
func (r *Registry) run(ctx context.Context, q question, l *discovery.Latest) {
	var st followState
	discovery.Rerun(r.log.WithField("service", q.name), func(err error) { l.Fail(fmt.Errorf("dns: %s: %w", q.name, err)) },
		func() bool { return retry.Sleep(ctx, discovery.PanicPause) }, func() { r.follow(ctx, q, l, &st) })
}

// followState is follow's, kept across a restart.
type followState struct {
	failures   int
	nonEmpty   bool // the last set published had nodes
	confirming bool // an empty one awaits confirmation
}

// Close implements discovery.Registry: every watch ends.
func (r *Registry) Close() error {
	r.cancel()
	return nil
}

// question is what a service asks for: an SRV name, or a name and port.
// ValidateService implements discovery.ServiceValidator.
func (o *Options) ValidateService(service string) error {
	if _, err := parseService(service); err != nil {
		return fmt.Errorf("service %q: %v", service, err)
	}
	return nil
}

type question struct {
	name string
	srv  bool
	port int
}

func parseService(s string) (question, error) {
	if strings.HasPrefix(s, "_") {
		return question{name: s, srv: true}, nil
	}
	host, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p < 1 || p > 65535 || host == "" {
		return question{}, errors.New("want an SRV name (_service._proto.name) or name:port")
	}
	return question{name: host, port: p}, nil
}

// follow asks for q until ctx ends: again when the answer's TTL runs out
// (within the refresh bounds), sooner with backoff after a failure.
//
// An answer with no records that would empty a set published before is
// published only when the lookup emptyConfirmDelay later agrees: a server
// that restarts, or answers from a catalog it is still loading, can say
// "no such name" for a moment, and one such answer must not empty the
// upstream.
func (r *Registry) follow(ctx context.Context, q question, l *discovery.Latest, st *followState) {
	for {
		set, ttl, err := r.lookup(ctx, q)
		if ctx.Err() != nil {
			return
		}
		wait := min(max(ttl, time.Duration(r.opts.MinRefresh)), time.Duration(r.opts.MaxRefresh))
		switch {
		case err != nil:
			st.failures++
			l.Fail(fmt.Errorf("dns: %v", err))
			wait = retry.Backoff(st.failures, 250*time.Millisecond, time.Duration(r.opts.MinRefresh)+time.Second, rand.Float64)
		case len(set) == 0 && st.nonEmpty && !st.confirming:
			st.failures, st.confirming, wait = 0, true, emptyConfirmDelay
			r.log.WithField("name", q.name).Debug("no records: asking again before emptying the set")
		default:
			st.failures, st.confirming, st.nonEmpty = 0, false, len(set) > 0
			l.Publish(set)
		}
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

// emptyConfirmDelay is how long after an answer with no records follow
// asks again before it publishes the empty set.
const emptyConfirmDelay = time.Second

// lookup resolves q into a set, and the smallest TTL of the record sets
// it took (see smallestTTL): 0 when one has TTL 0 or when it took none,
// which follow turns into min_refresh.
//
// q's name is asked as each of the names the resolver configuration makes
// of it, in turn (see resolvConfig.names), until one has records: a name
// with no such name or no records moves to the next, and one whose
// question fails is the lookup's error, since a later name could be
// another service's (as Go's resolver with StrictErrors). An SRV target
// is absolute and asked as it is.
func (r *Registry) lookup(ctx context.Context, q question) ([]discovery.Instance, time.Duration, error) {
	conf, err := r.resolver()
	if err != nil {
		return nil, 0, err
	}
	c := &client{servers: conf.servers, timeout: time.Duration(r.opts.Timeout)}
	names := conf.names(q.name)
	if !q.srv {
		if _, err := netip.ParseAddr(q.name); err == nil {
			names = []string{q.name} // an address is itself
		}
		for _, name := range names {
			addrs, ttl, err := addresses(ctx, c, name)
			if err != nil {
				return nil, 0, err
			}
			if len(addrs) == 0 {
				continue
			}
			set := make([]discovery.Instance, 0, len(addrs))
			for _, a := range addrs {
				set = append(set, discovery.Instance{ID: net.JoinHostPort(a, strconv.Itoa(q.port)), Address: a, Port: q.port, Weight: 1, Healthy: true})
			}
			return set, ttl.d, nil
		}
		return nil, 0, nil
	}
	var ans answer
	for _, name := range names {
		ans, err = c.query(ctx, name, dnsmessage.TypeSRV)
		if errors.Is(err, errNoSuchName) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		if len(ans.rrs) > 0 {
			break
		}
	}
	if len(ans.rrs) == 0 {
		return nil, 0, nil
	}
	var ttl smallestTTL
	ttl.take(ans)
	var srvs []*dnsmessage.SRVResource
	for _, rr := range ans.rrs {
		if s, ok := rr.Body.(*dnsmessage.SRVResource); ok {
			srvs = append(srvs, s)
		}
	}
	if len(srvs) > 0 { // RFC 2782: the lowest priority; the rest are backups
		lowest := slices.MinFunc(srvs, func(a, b *dnsmessage.SRVResource) int { return int(a.Priority) - int(b.Priority) }).Priority
		srvs = slices.DeleteFunc(srvs, func(s *dnsmessage.SRVResource) bool { return s.Priority != lowest })
	}
	var set []discovery.Instance
	for _, s := range srvs {
		target := s.Target.String() // absolute
		if target == "." {          // the service is decidedly not available
			continue
		}
		addrs, attl, err := addresses(ctx, c, target)
		if err != nil {
			return nil, 0, err
		}
		meta, mttl, err := metadata(ctx, c, target)
		if err != nil {
			return nil, 0, err
		}
		ttl.merge(attl)
		ttl.merge(mttl)
		w := uint32(max(s.Weight, 1))
		for _, a := range addrs {
			set = append(set, discovery.Instance{ID: srvNodeID(strings.TrimSuffix(target, "."), a, int(s.Port)), Address: a, Port: int(s.Port), Weight: w, Healthy: true, Metadata: meta})
		}
	}
	return set, ttl.d, nil
}

// srvNodeID is the ID of an SRV target's node at address and port,
// "target/address:port": it stays with the backend at that address
// whatever else the target's addresses become (per-node state is kept by
// ID), and two targets that share an address are two nodes, as they are
// two SRV records with weights of their own.
func srvNodeID(target, address string, port int) string {
	return target + "/" + net.JoinHostPort(address, strconv.Itoa(port))
}

// addresses are name's addresses of one family, sorted: its IPv4 ones
// when it has any, else its IPv6 ones (Envoy's V4_PREFERRED), so a
// dual-stack host is one node; AAAA is asked only when A has no records.
// A name that is an address is itself. A name error for one type means no
// records of that type: some servers answer AAAA with NXDOMAIN for a name
// that has only A records (RFC 4074, section 4.2), and that must not hide
// the A records. A type whose question fails (SERVFAIL, no answer) is left
// out when the other type has addresses, as Go's resolver does; without
// addresses, the failure is the error, since an empty answer for one type
// does not show that the name has no addresses.
func addresses(ctx context.Context, c *client, name string) ([]string, smallestTTL, error) {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(name, ".")); err == nil {
		return []string{ip.String()}, smallestTTL{}, nil
	}
	var failures []error
	for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		ans, err := c.query(ctx, name, qt)
		if errors.Is(err, errNoSuchName) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, smallestTTL{}, err
			}
			failures = append(failures, err)
			continue
		}
		var out []string
		for _, rr := range ans.rrs {
			switch b := rr.Body.(type) {
			case *dnsmessage.AResource:
				out = append(out, netip.AddrFrom4(b.A).String())
			case *dnsmessage.AAAAResource:
				out = append(out, netip.AddrFrom16(b.AAAA).String())
			}
		}
		if len(out) > 0 {
			var ttl smallestTTL
			ttl.take(ans)
			slices.Sort(out)
			return out, ttl, nil
		}
	}
	if len(failures) > 0 {
		return nil, smallestTTL{}, errors.Join(failures...)
	}
	return nil, smallestTTL{}, nil
}

// metadata is the key=value strings of name's TXT records (DNS-SD's form),
// or nil.
func metadata(ctx context.Context, c *client, name string) (map[string]string, smallestTTL, error) {
	var ttl smallestTTL
	ans, err := c.query(ctx, name, dnsmessage.TypeTXT)
	if errors.Is(err, errNoSuchName) {
		return nil, ttl, nil
	}
	if err != nil {
		return nil, ttl, err
	}
	ttl.take(ans)
	var meta map[string]string
	for _, rr := range ans.rrs {
		t, ok := rr.Body.(*dnsmessage.TXTResource)
		if !ok {
			continue
		}
		for _, kv := range t.TXT {
			k, v, found := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			if !found {
				v = "true"
			}
			if meta == nil {
				meta = map[string]string{}
			}
			meta[k] = v
		}
	}
	return meta, ttl, nil
}

// smallestTTL is the smallest TTL of the record sets a lookup took, which
// says when to ask again. TTL 0 counts ("do not keep": Consul DNS answers
// with it by default; it means min_refresh); a record set without records
// (an empty answer, an address literal) has no TTL and does not count.
// The zero value took none.
type smallestTTL struct {
	d     time.Duration // 0 while none was taken
	taken bool
}

// take counts the TTL of a's records, if it has any.
func (t *smallestTTL) take(a answer) {
	if len(a.rrs) > 0 {
		t.add(a.ttl)
	}
}

// merge counts the TTL that o took, if any.
func (t *smallestTTL) merge(o smallestTTL) {
	if o.taken {
		t.add(o.d)
	}
}

func (t *smallestTTL) add(d time.Duration) {
	if !t.taken || d < t.d {
		t.d, t.taken = d, true
	}
}
