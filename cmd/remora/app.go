package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/health"
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
// field; agent is also read without it.
type app struct {
	limits config.Proxy // header limits of the listeners, fixed at start
	// adminToken is the admin API's token ("" for none), read on every
	// admin request and replaced by a reload.
	adminToken atomic.Pointer[string]
	// The last reload's outcome, for /metrics: whether it succeeded, and
	// when a configuration was last applied (Unix ns).
	reloadOK atomic.Bool
	reloadAt atomic.Int64
	log      *logrus.Logger
	proxy    *proxy.Proxy
	// starting ends the start-up's wait for a busy listen address (see
	// listen); nil once started: a reload does not wait.
	starting context.Context
	// The access log (nil when off) and its sample, for the tcp servers.
	access       *logrus.Entry
	accessSample float64
	draining     atomic.Bool
	drainMu      sync.Mutex    // orders stop, Drain, Undrain and a new agent
	stopping     bool          // set by stop, under drainMu; never cleared
	stopped      chan struct{} // closed when stopping is set (nil in some tests' apps)

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
	// retiring are the dedicated ports a reload took away, each until its
	// connections ended (closed then): shutdown waits for them as for the
	// ports that serve.
	retiring map[*server]chan struct{}
	serving  sync.WaitGroup
	started  atomic.Bool // see Started
}

// liveRegistry is an open registry, the config it was opened from and
// the digest of the files that config names (see registryFiles).
type liveRegistry struct {
	cfg   config.Registry
	reg   discovery.Registry
	files string
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
	ln   net.Listener // a *notifyingListener
	srv  serving
	// after, for a server that took its socket over from another
	// (takeOver), is closed once that one stopped accepting.
	after <-chan struct{}
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

// startApp binds the admin and outbound listeners, then applies cfg as a
// reload does (opens the registries, starts one controller per upstream,
// binds the dedicated ports, starts registering), then serves. It fails
// before serving anything if a listener cannot be bound or a registry
// cannot be opened; an address in use is waited for (see listen) until
// ctx ends.
func startApp(ctx context.Context, cfg *config.Config, log *logrus.Logger) (_ *app, err error) {
	a := &app{
		starting:   ctx,
		limits:     cfg.Proxy,
		log:        log,
		registries: map[string]*liveRegistry{},
		upstreams:  map[string]*liveUpstream{},
		dedicated:  map[string]*server{},
		retiring:   map[*server]chan struct{}{},
		stopped:    make(chan struct{}),
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
	a.adminToken.Store(&cfg.Admin.Token)
	adminAPI := admin.Handler(a, admin.Options{Metrics: admin.MetricsOptions{NodeLabels: *cfg.Admin.Metrics.NodeLabels, Build: buildInfo()},
		Config: a.effectiveConfig, Token: func() string { return *a.adminToken.Load() }})
	adminSrv := a.httpServer("admin", adminAPI)
	s, err := a.bind("admin", cfg.Admin.Address, adminSrv)
	switch {
	case err == nil:
		a.servers = append(a.servers, s)
	case notYetBindable(err) && ctx.Err() == nil:
		// The admin API is no traffic: the proxy serves without it, and
		// it is served once the address can be bound.
		a.log.WithError(err).Error("the admin API is not served (no /readyz, /metrics): its address cannot be bound; serving the proxy, and trying the address again every second")
		go a.serveAdminLater(cfg.Admin.Address, adminSrv, adminRetryEvery)
	default:
		return nil, err
	}
	for _, lc := range cfg.Listeners {
		s, err := a.bind(lc.Name, lc.Address, a.proxyServer(lc.Name, a.proxy.Listener(lc.Name, listenerOptions(lc))))
		if err != nil {
			return nil, err
		}
		a.servers = append(a.servers, s)
	}
	if _, err := a.apply(cfg); err != nil {
		return nil, err
	}
	a.reloaded(true)
	a.starting = nil
	for _, s := range a.servers {
		a.serve(s)
	}
	go a.watchStart()
	return a, nil
}

// startCheck is how often watchStart looks whether the start is over.
const startCheck = 50 * time.Millisecond

// watchStart records the end of the start (see Started) once every
// upstream has nodes to serve, or gives up when the process stops.
func (a *app) watchStart() {
	t := time.NewTicker(startCheck)
	defer t.Stop()
	for range t.C {
		if a.isStopping() {
			return
		}
		if !slices.ContainsFunc(a.Table().All(), func(u *upstream.Upstream) bool { return !u.Ready() }) {
			a.started.Store(true)
			return
		}
	}
}

// Started implements admin.StartTracker: the start is over once every
// upstream had nodes to serve; from then on a reload's new upstreams do
// not turn /readyz off.
func (a *app) Started() bool { return a.started.Load() }

// reloaded records a reload's (or the start's) outcome.
func (a *app) reloaded(ok bool) {
	a.reloadOK.Store(ok)
	if ok {
		a.reloadAt.Store(time.Now().UnixNano())
	}
}

// LastReload implements admin.ReloadSource.
func (a *app) LastReload() (bool, time.Time) {
	at := a.reloadAt.Load()
	if at == 0 {
		return a.reloadOK.Load(), time.Time{}
	}
	return a.reloadOK.Load(), time.Unix(0, at)
}

// Routes implements admin.RouteSource.
func (a *app) Routes() []admin.RouteStatus {
	stats := a.proxy.RouteStats()
	out := make([]admin.RouteStatus, len(stats))
	for i, r := range stats {
		out[i] = admin.RouteStatus{Listener: r.Listener, Name: r.Name, Upstream: r.Upstream, Requests: r.Requests, RateLimited: r.RateLimited}
	}
	return out
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

// reload switches to cfg without dropping requests (see apply):
// registries and upstreams whose config is unchanged keep running; a
// changed upstream is rebuilt from its predecessor, keeping its nodes'
// stats and health; the registration takes a changed register: block. On
// error nothing changes. Admin and outbound listener addresses need a
// restart to change.
func (a *app) reload(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.isStopping() {
		// (A drain asked for on the admin API is no shutdown: a reload
		// then applies, so that an undrain serves the current config.)
		return errors.New("shutting down")
	}
	if cfg.Admin.Address != a.cfg.Admin.Address || !slices.EqualFunc(cfg.Listeners, a.cfg.Listeners, sameAddress) {
		a.log.Warn("admin and listener addresses change only on restart; keeping the current ones")
	}
	if fixed := restartOnly(a.cfg, cfg); len(fixed) > 0 {
		a.log.WithField("settings", strings.Join(fixed, ", ")).Warn("these settings change only on restart; keeping the current ones")
	}
	p, err := a.apply(cfg)
	a.reloaded(err == nil)
	if err != nil {
		return err
	}
	a.adminToken.Store(&cfg.Admin.Token)
	a.log.WithFields(logrus.Fields{"upstreams": len(cfg.Upstreams), "changes": p.String()}).Info("configuration reloaded")
	return nil
}

// restartOnly names the settings that differ between old and cfg and
// that a reload does not apply: the listeners' header limits, the access
// log, the shape of the metrics, and the connect timeout of tcp ports
// already bound. (Addresses are reported apart.)
func restartOnly(old, cfg *config.Config) []string {
	var out []string
	for _, s := range []struct {
		name    string
		changed bool
	}{
		{"proxy.read_header_timeout", old.Proxy.ReadHeaderTimeout != cfg.Proxy.ReadHeaderTimeout},
		{"proxy.max_header_bytes", old.Proxy.MaxHeaderBytes != cfg.Proxy.MaxHeaderBytes},
		{"proxy.connect_timeout (for tcp ports already bound)", old.Proxy.ConnectTimeout != cfg.Proxy.ConnectTimeout && hasTCP(cfg)},
		{"access_log", old.AccessLog.Enabled != cfg.AccessLog.Enabled || *old.AccessLog.Sample != *cfg.AccessLog.Sample},
		{"admin.metrics", *old.Admin.Metrics.NodeLabels != *cfg.Admin.Metrics.NodeLabels},
	} {
		if s.changed {
			out = append(out, s.name)
		}
	}
	return out
}

// hasTCP reports whether cfg has a tcp upstream.
func hasTCP(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Upstreams, func(u config.Upstream) bool { return u.Protocol == "tcp" })
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
		Policy: &l.cfg.Policy, Health: &l.cfg.Health, Canary: uc.CanaryRule, Locality: uc.Locality,
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

// bind listens on addr for srv.
func (a *app) bind(name, addr string, srv serving) (*server, error) {
	ln, err := a.listen(name, addr)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	return newServer(name, ln, srv), nil
}

// startBindWait bounds how long the start waits for a listen address that
// another process holds (the previous Remora on the host, draining, as a
// new one starts), trying it again every bindRetryEvery, as nginx does.
// A variable for tests.
var startBindWait = 10 * time.Second

const bindRetryEvery = 100 * time.Millisecond

// listen binds addr. At start, an address in use is tried again until
// startBindWait passes or the start is stopped; a reload never waits (it
// is refused, and the running config stays).
func (a *app) listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil || a.starting == nil || !notYetBindable(err) {
		return ln, err
	}
	a.log.WithError(err).WithFields(logrus.Fields{"listener": name, "address": addr}).Warnf("address not available; trying again for up to %v", startBindWait)
	deadline := time.NewTimer(startBindWait)
	defer deadline.Stop()
	tick := time.NewTicker(bindRetryEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.starting.Done():
			return nil, fmt.Errorf("%w (stopped while waiting for it)", err)
		case <-deadline.C:
			return nil, fmt.Errorf("%w (still, after %v)", err, startBindWait)
		case <-tick.C:
			if ln, err = net.Listen("tcp", addr); err == nil || !notYetBindable(err) {
				return ln, err
			}
		}
	}
}

// notYetBindable reports whether a listen error may pass without a change
// of config: the address is in use (another process still holds it), not
// on the host yet (EADDRNOTAVAIL: an interface or an address coming up),
// or its name did not resolve (the resolver failing, or /etc/hosts not
// written yet).
func notYetBindable(err error) bool {
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.As(err, &dnsErr)
}

func newServer(name string, ln net.Listener, srv serving) *server {
	return &server{name: name, ln: &notifyingListener{Listener: ln, closed: make(chan struct{})}, srv: srv}
}

// patientListener is a listener whose Accept waits out every error but
// its closing (see tcp.Acceptor). Accept is called by one goroutine.
type patientListener struct {
	net.Listener
	a tcp.Acceptor
}

func (l *patientListener) Accept() (net.Conn, error) { return l.a.Accept(l.Listener) }

// notifyingListener is a listener whose Close is seen on closed: a
// reload that hands its socket to a new listener waits for it (see
// takeOver).
type notifyingListener struct {
	net.Listener
	closed chan struct{}
	once   sync.Once
}

func (l *notifyingListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
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

// adminRetryEvery is how often serveAdminLater tries the admin address. A
// variable for tests.
var adminRetryEvery = time.Second

// serveAdminLater binds the admin address, which could not be bound at
// start (see notYetBindable), once it can, trying every retryEvery (read
// by the caller: a test may change adminRetryEvery back once its app
// stopped, before this goroutine ran), and serves srv on it; it gives up
// when the app stops, or on another error.
func (a *app) serveAdminLater(addr string, srv serving, retryEvery time.Duration) {
	tick := time.NewTicker(retryEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.stopped:
			return
		case <-tick.C:
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil && notYetBindable(err) {
			continue
		}
		if err != nil {
			a.log.WithError(err).Error("the admin API is not served: binding its address failed")
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.isStopping() { // close holds mu while it waits for the servers
			_ = ln.Close()
			return
		}
		s := newServer("admin", ln, srv)
		a.servers = append(a.servers, s)
		a.serve(s)
		return
	}
}

// isStopping reports whether the app is shutting down.
func (a *app) isStopping() bool {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	return a.stopping
}

func (a *app) serve(s *server) {
	a.serving.Add(1)
	ln := s.ln
	if _, ok := s.srv.(*http.Server); ok {
		// net/http's Serve ends on an accept error it does not take for
		// temporary (ENOMEM, a firewall's EPERM); the proxy's servers wait
		// every one out, and so does the admin API.
		ln = &patientListener{Listener: ln, a: tcp.Acceptor{Report: func(err error, skipped int) {
			a.log.WithError(err).WithFields(logrus.Fields{"listener": s.name, "skipped": skipped}).Warn("accepting a connection failed; trying again")
		}}}
	}
	go func() {
		defer a.serving.Done()
		err := s.srv.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).WithField("listener", s.name).Error("listener failed")
		}
	}()
	a.log.WithFields(logrus.Fields{"listener": s.name, "address": s.ln.Addr().String()}).Info("listening")
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

// Drain implements admin.Source: readiness off and the registration
// withdrawn, serving on.
func (a *app) Drain() {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	if a.draining.Swap(true) {
		return
	}
	if la := a.agent.Load(); la != nil {
		la.SetWithdrawn(true)
		a.log.Info("drain requested on the admin API: not ready, registration withdrawn; still serving")
		return
	}
	a.log.Info("drain requested on the admin API: not ready; still serving")
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
	a.markStopping()
	a.log.Info("draining: no new connections; waiting for in-flight requests")
	a.mu.Lock()
	servers := a.allServers()
	retiring := maps.Clone(a.retiring)
	a.mu.Unlock()
	errs := make([]error, len(servers)+len(retiring))
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
	i := len(servers)
	for s, done := range retiring {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			select {
			case <-done:
			case <-ctx.Done():
				errs[i] = fmt.Errorf("listener %s (retired by a reload): %w", s.name, ctx.Err())
				_ = s.srv.Close()
			}
		}(i)
		i++
	}
	wg.Wait()
	a.close()
	return errors.Join(errs...)
}

// close stops everything without waiting for requests.
func (a *app) close() {
	a.markStopping()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopAgent(2 * time.Second) // before the registries close
	for _, s := range a.allServers() {
		_ = s.srv.Close()
		_ = s.ln.Close() // if it never served
	}
	for s := range a.retiring {
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
