package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
	"github.com/remora-mesh/remora/proxy/client"
	proxyserver "github.com/remora-mesh/remora/proxy/server"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// app is a running Remora: registries, upstream controllers, the proxy and
// its listeners, and the admin API.
//
// Concurrency: the request path sees only the proxy's routing table, swapped
// atomically. mu serialises reload and shutdown, which own every other
// field.
type app struct {
	limits config.Proxy // header limits of the listeners, fixed at start
	log    *logrus.Logger
	proxy  *proxy.Proxy
	// The access log (nil when off) and its sample, for the tcp servers.
	access       *logrus.Entry
	accessSample float64
	draining     atomic.Bool

	mu         sync.Mutex
	cfg        *config.Config
	registries map[string]*liveRegistry
	upstreams  map[string]*liveUpstream
	// agent registers the local application (nil without register:). It
	// is written with mu held and read without it (GET /register).
	agent atomic.Pointer[liveAgent]
	// rereg counts re-registrations by registry and service, across the
	// agents a reload replaces.
	rereg     map[string]*reregCounter
	servers   []*server          // admin and outbound listeners
	dedicated map[string]*server // upstream listen: ports, by upstream name
	serving   sync.WaitGroup
}

// liveRegistry is an open registry and the config it was opened from.
type liveRegistry struct {
	cfg config.Registry
	dir string
	reg discovery.Registry
}

// liveUpstream is an upstream whose controller runs.
type liveUpstream struct {
	cfg    config.Upstream
	u      *upstream.Upstream
	client client.Options // how its nodes are spoken to
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *liveUpstream) stop() {
	l.cancel()
	<-l.done
}

// server is one bound listener and what serves it: net/http for the admin
// API, proxy.Server for proxy listeners, tcp.Server for a tcp upstream.
type server struct {
	name string
	ln   net.Listener
	srv  serving
}

// serving is what *http.Server, *proxy.Server and *tcp.Server have in
// common.
type serving interface {
	Serve(net.Listener) error
	// Shutdown stops accepting and waits for open requests or connections
	// until ctx ends.
	Shutdown(ctx context.Context) error
	// Close stops at once.
	Close() error
}

// startApp opens the registries, starts one controller per upstream, binds
// every listener (failing before serving anything if one cannot be bound)
// and serves.
func startApp(cfg *config.Config, log *logrus.Logger) (_ *app, err error) {
	a := &app{
		limits:     cfg.Proxy,
		log:        log,
		registries: map[string]*liveRegistry{},
		upstreams:  map[string]*liveUpstream{},
		dedicated:  map[string]*server{},
		rereg:      map[string]*reregCounter{},
	}
	popts := proxy.Options{Log: log.WithField("component", "proxy")}
	if cfg.AccessLog.Enabled {
		popts.AccessLog, popts.AccessLogSample = newAccessLogger(accessLogOutput), *cfg.AccessLog.Sample
		a.access, a.accessSample = popts.AccessLog, popts.AccessLogSample
	}
	a.proxy = proxy.New(popts)
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.apply(cfg); err != nil {
		return nil, err
	}
	adminAPI := admin.Handler(a, admin.Options{Metrics: admin.MetricsOptions{NodeLabels: *cfg.Admin.Metrics.NodeLabels}, Config: a.effectiveConfig, Token: cfg.Admin.Token})
	s, err := a.bind("admin", cfg.Admin.Address, a.httpServer("admin", adminAPI))
	if err != nil {
		return nil, err
	}
	a.servers = append(a.servers, s)
	for _, lc := range cfg.Listeners {
		s, err := a.bind(lc.Name, lc.Address, a.proxyServer(lc.Name, a.proxy))
		if err != nil {
			return nil, err
		}
		a.servers = append(a.servers, s)
	}
	for _, s := range a.servers {
		a.serve(s)
	}
	if rc := cfg.Register; rc != nil {
		reg, err := registrar(a.registries, rc)
		if err != nil {
			return nil, err
		}
		a.startAgent(*rc, reg)
	}
	return a, nil
}

// registrar returns the registry that rc registers in.
func registrar(regs map[string]*liveRegistry, rc *register.Config) (discovery.Registrar, error) {
	lr := regs[rc.Registry]
	if lr == nil {
		return nil, fmt.Errorf("register.registry: unknown registry %q", rc.Registry)
	}
	reg, ok := lr.reg.(discovery.Registrar)
	if !ok {
		return nil, fmt.Errorf("register.registry: registry %q of type %s cannot register instances", rc.Registry, lr.cfg.Type)
	}
	return reg, nil
}

// startAgent starts registering the local application in reg, the
// registry rc names. a.mu is held.
func (a *app) startAgent(rc register.Config, reg discovery.Registrar) {
	key := rc.Registry + "\x00" + rc.Service
	c := a.rereg[key]
	if c == nil {
		c = newReregCounter()
		a.rereg[key] = c
	}
	ag := register.NewAgent(rc, c.counting(reg), a.log.WithField("component", "register"))
	a.agent.Store(&liveAgent{Agent: ag, registry: rc.Registry, rereg: c})
	go ag.Run(context.Background())
}

// replaceTimeout bounds the withdrawal of a registration that a reload
// replaces or removes (the registry may be unreachable: the registration
// then lapses with its lease or TTL).
const replaceTimeout = 5 * time.Second

// stopAgent withdraws the local application's registration, if any, and
// forgets the agent (which GET /register shows until then). a.mu is held.
func (a *app) stopAgent(timeout time.Duration) {
	la := a.agent.Load()
	if la == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	la.Deregister(ctx)
	a.agent.Store(nil)
}

// deregister withdraws the local application, if registered, and waits the
// deregistration delay so consumers stop sending: the first step of a
// shutdown.
func (a *app) deregister(ctx context.Context, delay time.Duration) {
	if ag := a.agent.Load(); ag != nil && ag.Deregister(ctx) {
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

// reload switches to cfg without dropping requests: registries and
// upstreams whose config is unchanged keep running; a changed upstream is
// rebuilt from its predecessor, keeping its nodes' stats and health. On
// error nothing changes. Admin and outbound listener addresses need a
// restart to change.
func (a *app) reload(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining.Load() {
		return errors.New("draining")
	}
	if cfg.Admin.Address != a.cfg.Admin.Address || !slices.EqualFunc(cfg.Listeners, a.cfg.Listeners, sameAddress) {
		a.log.Warn("admin and listener addresses change only on restart; keeping the current ones")
	}
	if err := a.apply(cfg); err != nil {
		return err
	}
	a.log.WithField("upstreams", len(cfg.Upstreams)).Info("configuration reloaded")
	return nil
}

// apply moves the registries, upstreams and dedicated listeners to cfg.
// Everything that can fail is done before anything running is touched.
func (a *app) apply(cfg *config.Config) (err error) {
	var opened []*liveRegistry
	var bound []*server
	defer func() {
		if err != nil {
			for _, s := range bound {
				s.ln.Close()
			}
			for _, r := range opened {
				r.reg.Close()
			}
		}
	}()

	// 1. Registries: reuse unchanged ones, open new or changed ones.
	regs := make(map[string]*liveRegistry, len(cfg.Registries))
	for _, rc := range cfg.Registries {
		if old := a.registries[rc.Name]; old != nil && old.dir == cfg.Dir && sameRegistry(old.cfg, rc) {
			regs[rc.Name] = old
			continue
		}
		reg, err := rc.Options.Open(discovery.Env{
			Name: rc.Name, BaseDir: cfg.Dir, DataDir: cfg.DataDir,
			Log: a.log.WithField("registry", rc.Name),
		})
		if err != nil {
			return fmt.Errorf("registry %q: %w", rc.Name, err)
		}
		r := &liveRegistry{cfg: rc, dir: cfg.Dir, reg: reg}
		opened = append(opened, r)
		regs[rc.Name] = r
	}

	// 2. Upstreams: keep unchanged ones, prepare watchers for the others.
	type pending struct {
		cfg  config.Upstream
		prev *liveUpstream
		w    discovery.Watcher
	}
	var todo []pending
	ups := make(map[string]*liveUpstream, len(cfg.Upstreams))
	for _, uc := range cfg.Upstreams {
		prev := a.upstreams[uc.Name]
		if prev != nil && regs[uc.Registry] == a.registries[uc.Registry] && sameUpstream(prev.cfg, uc) {
			ups[uc.Name] = prev
			continue
		}
		reg := regs[uc.Registry]
		if reg == nil {
			err = fmt.Errorf("upstream %q: unknown registry %q", uc.Name, uc.Registry)
		}
		var w discovery.Watcher
		if err == nil {
			w, err = watchUpstream(reg.reg, uc)
		}
		if err != nil {
			for _, p := range todo {
				p.w.Stop()
			}
			return fmt.Errorf("upstream %q: watching %q in registry %q: %w", uc.Name, uc.Service, uc.Registry, err)
		}
		todo = append(todo, pending{cfg: uc, prev: prev, w: w})
	}

	// 3. The registry the registration is to be made in (on a reload;
	// startApp registers last).
	var newReg discovery.Registrar
	if a.cfg != nil && cfg.Register != nil {
		if newReg, err = registrar(regs, cfg.Register); err != nil {
			for _, p := range todo {
				p.w.Stop()
			}
			return err
		}
	}

	// 4. Dedicated listeners for new or moved listen addresses.
	dedicated := map[string]*server{}
	for _, uc := range cfg.Upstreams {
		if uc.Listen == "" {
			continue
		}
		if old := a.dedicated[uc.Name]; old != nil && a.upstreams[uc.Name].cfg.Listen == uc.Listen && a.upstreams[uc.Name].cfg.Protocol == uc.Protocol {
			dedicated[uc.Name] = old
			continue
		}
		name := "upstream " + uc.Name
		var srv serving = a.proxyServer(name, a.proxy.ForUpstream(uc.Name))
		if uc.Protocol == "tcp" {
			srv = a.tcpServer(cfg, uc.Name)
		}
		s, err := a.bind(name, uc.Listen, srv)
		if err != nil {
			for _, p := range todo {
				p.w.Stop()
			}
			return err
		}
		bound = append(bound, s)
		dedicated[uc.Name] = s
	}

	// Nothing fails from here on. 5. Start the new controllers, each
	// taking over its predecessor's nodes.
	for _, p := range todo {
		var prevU *upstream.Upstream
		if p.prev != nil {
			p.prev.stop()
			if p.prev.cfg.Service == p.cfg.Service && p.prev.cfg.Registry == p.cfg.Registry {
				prevU = p.prev.u
			}
		}
		ups[p.cfg.Name] = a.startUpstream(cfg, p.cfg, p.w, prevU)
	}
	routes := make([]proxy.Route, 0, len(ups))
	for _, l := range ups {
		routes = append(routes, proxy.Route{Upstream: l.u, Client: l.client})
	}
	a.proxy.SetRoutes(routes...) // closes the idle connections of transports it drops

	// 6. The registration, before any registry it lives in is closed.
	if a.cfg != nil {
		a.applyRegister(cfg, regs, newReg)
	}

	// 7. Retire what the new config no longer has.
	for name, l := range a.upstreams {
		if ups[name] != l {
			if ups[name] == nil {
				l.stop()
			}
		}
	}
	for name, s := range a.dedicated {
		if dedicated[name] != s {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
				defer cancel()
				_ = s.srv.Shutdown(ctx)
			}()
		}
	}
	for name, r := range a.registries {
		if regs[name] != r {
			if err := r.reg.Close(); err != nil {
				a.log.WithError(err).WithField("registry", name).Warn("closing registry")
			}
		}
	}
	for _, s := range bound {
		a.serve(s)
	}
	a.cfg, a.registries, a.upstreams, a.dedicated = cfg, regs, ups, dedicated
	return nil
}

// applyRegister moves the registration from a.cfg's register: block to
// cfg's: a change the live registration can take (labels, weight, warm-up,
// deregister_delay, in the same registry, kept open) is applied in place;
// any other change (service, id, address, port, health, or another or
// reopened registry) withdraws the registration and registers anew in reg;
// a removed block withdraws it; an added one registers. regs are the
// registries of cfg; a.registries are still the previous ones, none closed
// yet. a.mu is held.
func (a *app) applyRegister(cfg *config.Config, regs map[string]*liveRegistry, reg discovery.Registrar) {
	old, want := a.cfg.Register, cfg.Register
	if ag := a.agent.Load(); ag != nil {
		if want != nil && want.Registry == old.Registry && regs[want.Registry] == a.registries[old.Registry] {
			err := ag.Reconfigure(*want)
			if err == nil {
				return
			}
			a.log.WithError(err).Info("register: registering the application anew")
		}
		a.stopAgent(replaceTimeout)
	}
	if want != nil {
		a.startAgent(*want, reg)
	}
}

// startUpstream builds an upstream (from prev's nodes when not nil) and runs
// its controller on w.
func (a *app) startUpstream(cfg *config.Config, uc config.Upstream, w discovery.Watcher, prev *upstream.Upstream) *liveUpstream {
	l := &liveUpstream{cfg: uc, done: make(chan struct{}), client: client.Options{
		ConnectTimeout:         cmp.Or(uc.Timeouts.Connect, cfg.Proxy.ConnectTimeout),
		IdleConnTimeout:        cmp.Or(uc.Timeouts.Idle, cfg.Proxy.IdleConnTimeout),
		MaxIdleConnsPerHost:    cfg.Proxy.MaxIdleConnsPerHost,
		ResponseHeaderTimeout:  uc.Timeouts.PerTry,
		MaxResponseHeaderBytes: cfg.Proxy.MaxResponseHeaderBytes,
		H2C:                    uc.Protocol == "h2c",
		TLS:                    uc.TLSConfig,
	}}
	l.u = upstream.New(upstream.Config{
		Name: uc.Name, Service: uc.Service, Balancer: uc.Balancer.Builder,
		Policy: &l.cfg.Policy, Health: &l.cfg.Health, Canary: uc.CanaryRule,
		Probe:              health.Transport{TLS: uc.TLSConfig, H2C: uc.Protocol == "h2c"},
		InitialSyncTimeout: uc.InitialSyncTimeout, Previous: prev, SnapshotFile: snapshotFile(cfg, uc.Name),
		Log: a.log.WithField("registry", uc.Registry),
	})
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() {
		defer close(l.done)
		l.u.Run(ctx, w)
	}()
	return l
}

// snapshotFile is where an upstream's last good node set is kept, or ""
// without a data_dir.
func snapshotFile(cfg *config.Config, upstream string) string {
	if cfg.DataDir == "" {
		return ""
	}
	dir := cfg.DataDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(cfg.Dir, dir)
	}
	return filepath.Join(dir, "snapshots", upstream+".json")
}

// watchUpstream opens the upstream's watch: its service, merged with the
// canary's own service when the canary rule names one.
func watchUpstream(reg discovery.Registry, uc config.Upstream) (discovery.Watcher, error) {
	w, err := reg.Watch(context.Background(), uc.Service)
	if err != nil || uc.CanaryRule == nil || uc.CanaryRule.Service() == "" {
		return w, err
	}
	cw, err := reg.Watch(context.Background(), uc.CanaryRule.Service())
	if err != nil {
		w.Stop()
		return nil, err
	}
	return discovery.Union(discovery.Part{Watcher: w}, discovery.Part{Watcher: cw, Relabel: uc.CanaryRule.Relabel}), nil
}

// sameRegistry reports whether two registry configs open the same registry.
func sameRegistry(a, b config.Registry) bool {
	return a.Name == b.Name && a.Type == b.Type && reflect.DeepEqual(a.Options, b.Options)
}

// sameUpstream reports whether an upstream's config is unchanged.
// The balancer is compared by meaning (its options are YAML nodes that
// carry their position in the file); the rest is plain values.
func sameUpstream(a, b config.Upstream) bool {
	if !a.Balancer.SameAs(b.Balancer) {
		return false
	}
	a.Balancer, b.Balancer = config.Balancer{}, config.Balancer{}
	return reflect.DeepEqual(a, b)
}

// bind listens on addr for srv.
func (a *app) bind(name, addr string, srv serving) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	return &server{name: name, ln: ln, srv: srv}, nil
}

// httpServer is net/http's server for h (the admin API), with the
// listeners' limits on header size and header read time.
func (a *app) httpServer(name string, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: a.limits.ReadHeaderTimeout,
		MaxHeaderBytes:    a.limits.MaxHeaderBytes,
		IdleTimeout:       listenerIdleTimeout,
		ErrorLog:          newStdLogger(a.log.WithField("listener", name)),
	}
}

// proxyServer serves a proxy listener: plain HTTP/1.1 requests on the
// server's direct path, everything else (h2c included) by net/http.
func (a *app) proxyServer(name string, h http.Handler) *proxyserver.Server {
	return proxyserver.New(proxyserver.Options{
		ReadHeaderTimeout: a.limits.ReadHeaderTimeout,
		MaxHeaderBytes:    a.limits.MaxHeaderBytes,
		IdleTimeout:       listenerIdleTimeout,
		ErrorLog:          newStdLogger(a.log.WithField("listener", name)),
	}, h)
}

// listenerIdleTimeout is how long a listener keeps an idle client
// connection.
const listenerIdleTimeout = 2 * time.Minute

// tcpServer relays the connections of a tcp upstream's listener.
func (a *app) tcpServer(cfg *config.Config, name string) *tcp.Server {
	return &tcp.Server{
		Lookup:          func() *upstream.Upstream { return a.proxy.Table().Lookup(name) },
		ConnectTimeout:  cfg.Proxy.ConnectTimeout,
		Log:             a.log.WithField("listener", "upstream "+name),
		AccessLog:       a.access,
		AccessLogSample: a.accessSample,
	}
}

func (a *app) serve(s *server) {
	a.serving.Add(1)
	go func() {
		defer a.serving.Done()
		err := s.srv.Serve(s.ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).WithField("listener", s.name).Error("listener failed")
		}
	}()
	a.log.WithFields(logrus.Fields{"listener": s.name, "address": s.ln.Addr().String()}).Info("listening")
}

// effectiveConfig is the running configuration for GET /config, with
// secrets (passwords, tokens, keys) redacted.
func (a *app) effectiveConfig() any {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	type registry struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Options any    `json:"options"`
	}
	regs := make([]registry, len(cfg.Registries))
	for i, r := range cfg.Registries {
		regs[i] = registry{Name: r.Name, Type: r.Type, Options: r.Options}
	}
	view := map[string]any{
		"admin": cfg.Admin, "listeners": cfg.Listeners, "registries": regs, "upstreams": cfg.Upstreams,
		"proxy": cfg.Proxy, "drain_timeout": cfg.DrainTimeout.String(), "access_log": cfg.AccessLog, "data_dir": cfg.DataDir,
	}
	data, err := json.Marshal(view)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	var generic any
	_ = json.Unmarshal(data, &generic)
	return redact(generic)
}

// redact replaces the values of secret-looking keys, at any depth.
func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			lk := strings.ToLower(k)
			if val != "" && (strings.Contains(lk, "password") || strings.Contains(lk, "token") && !strings.Contains(lk, "file") ||
				strings.Contains(lk, "secret") || strings.Contains(lk, "accesskey") || strings.Contains(lk, "access_key")) {
				t[k] = "[redacted]"
				continue
			}
			t[k] = redact(val)
		}
	case []any:
		for i := range t {
			t[i] = redact(t[i])
		}
	}
	return v
}

// config returns the configuration applied last.
func (a *app) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Table implements admin.Source.
func (a *app) Table() *upstream.Table { return a.proxy.Table() }

// Draining implements admin.Source.
func (a *app) Draining() bool { return a.draining.Load() }

// Drain implements admin.Source: readiness off, serving on.
func (a *app) Drain() {
	if !a.draining.Swap(true) {
		a.log.Info("drain requested on the admin API: not ready; still serving")
	}
}

// addr returns the bound address of the named listener ("admin", a
// listener's name, or "upstream NAME").
func (a *app) addr(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.allServers() {
		if s.name == name {
			return s.ln.Addr().String()
		}
	}
	return ""
}

func (a *app) allServers() []*server {
	all := slices.Clone(a.servers)
	for _, s := range a.dedicated {
		all = append(all, s)
	}
	return all
}

// shutdown turns readiness off, stops accepting, waits for in-flight
// requests until ctx ends, then stops the controllers and registries.
func (a *app) shutdown(ctx context.Context) error {
	a.draining.Store(true)
	a.log.Info("draining: no new connections; waiting for in-flight requests")
	a.mu.Lock()
	servers := a.allServers()
	a.mu.Unlock()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("listener %s: %w", s.name, err)
				_ = s.srv.Close()
			}
		}()
	}
	wg.Wait()
	a.close()
	return errors.Join(errs...)
}

// close stops everything without waiting for requests.
func (a *app) close() {
	a.draining.Store(true)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopAgent(2 * time.Second) // before the registries close
	for _, s := range a.allServers() {
		_ = s.srv.Close()
	}
	a.serving.Wait()
	for _, l := range a.upstreams {
		l.stop()
	}
	for name, r := range a.registries {
		if err := r.reg.Close(); err != nil {
			a.log.WithError(err).WithField("registry", name).Warn("closing registry")
		}
	}
	a.proxy.Close()
}

// sameAddress reports whether two listeners are the same name on the same
// address.
func sameAddress(a, b config.Listener) bool { return a.Name == b.Name && a.Address == b.Address }
