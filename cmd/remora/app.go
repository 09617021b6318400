package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// app is a running Remora: registries, upstream controllers, the proxy and
// its listeners, and the admin API.
type app struct {
	cfg        *config.Config
	log        *logrus.Logger
	registries map[string]discovery.Registry
	transports []*http.Transport // one per upstream
	table      *upstream.Table
	proxy      *proxy.Proxy
	draining   atomic.Bool

	servers []*server
	cancel  context.CancelFunc
	wg      sync.WaitGroup // controllers and servers
}

// server is one bound listener and what serves it.
type server struct {
	name string
	ln   net.Listener
	http *http.Server
}

// startApp opens the registries, starts one controller per upstream, binds
// every listener (failing before serving anything if one cannot be bound)
// and serves.
func startApp(cfg *config.Config, log *logrus.Logger) (_ *app, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{cfg: cfg, log: log, registries: map[string]discovery.Registry{}, cancel: cancel}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	for _, rc := range cfg.Registries {
		reg, err := rc.Options.Open(discovery.Env{
			Name: rc.Name, BaseDir: cfg.Dir, DataDir: cfg.DataDir,
			Log: log.WithField("registry", rc.Name),
		})
		if err != nil {
			return nil, fmt.Errorf("registry %q: %w", rc.Name, err)
		}
		a.registries[rc.Name] = reg
	}
	ups := make([]*upstream.Upstream, 0, len(cfg.Upstreams))
	for i := range cfg.Upstreams {
		uc := &cfg.Upstreams[i]
		transport := proxy.NewTransport(proxy.Options{
			ConnectTimeout:        cmp.Or(uc.Timeouts.Connect, cfg.Proxy.ConnectTimeout),
			IdleConnTimeout:       cmp.Or(uc.Timeouts.Idle, cfg.Proxy.IdleConnTimeout),
			MaxIdleConnsPerHost:   cfg.Proxy.MaxIdleConnsPerHost,
			ResponseHeaderTimeout: uc.Timeouts.PerTry,
		})
		a.transports = append(a.transports, transport)
		u := upstream.New(upstream.Config{
			Name: uc.Name, Service: uc.Service, Balancer: uc.Balancer.Builder,
			Policy: &uc.Policy, Transport: transport, Health: &uc.Health,
			InitialSyncTimeout: uc.InitialSyncTimeout, Log: log.WithField("registry", uc.Registry),
		})
		w, err := a.registries[uc.Registry].Watch(ctx, uc.Service)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: watching %q in registry %q: %w", uc.Name, uc.Service, uc.Registry, err)
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			u.Run(ctx, w)
		}()
		ups = append(ups, u)
	}
	a.table = upstream.NewTable(ups...)
	a.proxy = proxy.New(proxy.Options{
		ConnectTimeout: cfg.Proxy.ConnectTimeout, IdleConnTimeout: cfg.Proxy.IdleConnTimeout,
		MaxIdleConnsPerHost: cfg.Proxy.MaxIdleConnsPerHost, Log: log.WithField("component", "proxy"),
	})
	a.proxy.SetTable(a.table)

	if err := a.listen("admin", cfg.Admin.Address, admin.Handler(a)); err != nil {
		return nil, err
	}
	for _, lc := range cfg.Listeners {
		if err := a.listen(lc.Name, lc.Address, a.proxy); err != nil {
			return nil, err
		}
	}
	for _, uc := range cfg.Upstreams {
		if uc.Listen != "" {
			if err := a.listen("upstream "+uc.Name, uc.Listen, a.proxy.ForUpstream(uc.Name)); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range a.servers {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.WithError(err).WithField("listener", s.name).Error("listener failed")
			}
		}()
		log.WithFields(logrus.Fields{"listener": s.name, "address": s.ln.Addr().String()}).Info("listening")
	}
	return a, nil
}

func (a *app) listen(name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listener %s: %w", name, err)
	}
	a.servers = append(a.servers, &server{name: name, ln: ln, http: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          newStdLogger(a.log.WithField("listener", name)),
	}})
	return nil
}

// Table implements admin.Source.
func (a *app) Table() *upstream.Table { return a.table }

// Draining implements admin.Source.
func (a *app) Draining() bool { return a.draining.Load() }

// addr returns the bound address of the named listener ("admin", a
// listener's name, or "upstream NAME").
func (a *app) addr(name string) string {
	for _, s := range a.servers {
		if s.name == name {
			return s.ln.Addr().String()
		}
	}
	return ""
}

// shutdown turns readiness off, stops accepting, waits for in-flight
// requests until ctx ends, then stops the controllers and registries.
func (a *app) shutdown(ctx context.Context) error {
	a.draining.Store(true)
	a.log.Info("draining: no new connections; waiting for in-flight requests")
	errs := make([]error, len(a.servers))
	var wg sync.WaitGroup
	for i, s := range a.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("listener %s: %w", s.name, err)
				_ = s.http.Close()
			}
		}()
	}
	wg.Wait()
	a.close()
	return errors.Join(errs...)
}

// close stops everything without waiting for requests.
func (a *app) close() {
	for _, s := range a.servers {
		_ = s.http.Close()
	}
	a.cancel()
	a.wg.Wait()
	for name, reg := range a.registries {
		if err := reg.Close(); err != nil {
			a.log.WithError(err).WithField("registry", name).Warn("closing registry")
		}
	}
	if a.proxy != nil {
		a.proxy.Close()
	}
	for _, t := range a.transports {
		t.CloseIdleConnections()
	}
}
