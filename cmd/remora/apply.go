package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/remora-mesh/remora/cmd/remora/internal/reconcile"
	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// apply moves the registries, upstreams, dedicated listeners and the
// registration from a.cfg (nil at start) to cfg, as reconcile.Diff plans
// it, and returns the plan. On error nothing running has changed. a.mu is
// held.
func (a *app) apply(cfg *config.Config) (reconcile.Plan, error) {
	// A registry whose files (a password, a token, certificates) were
	// rewritten since it opened is reopened to read them again.
	var reopen map[string]bool
	for i := range cfg.Registries {
		rc := &cfg.Registries[i]
		if r := a.registries[rc.Name]; r != nil && r.files != registryFiles(cfg, rc) {
			if reopen == nil {
				reopen = map[string]bool{}
			}
			reopen[rc.Name] = true
		}
	}
	p := reconcile.DiffReopening(a.cfg, cfg, reopen)
	return p, a.execute(cfg, p)
}

// pendingUpstream is an upstream to start (prev nil) or restart, with its
// watch open.
type pendingUpstream struct {
	cfg        config.Upstream
	prev       *liveUpstream
	carryNodes bool
	w          discovery.Watcher
}

// execute carries p out in two phases. The first does everything that can
// fail — open the registries, start the watches, check the registry to
// register in, bind the ports — and undoes it all on an error. From the
// point of no return nothing fails: the new controllers replace the old
// ones and the routes are switched; then the registration moves (before
// any registry it lives in is closed); then what the new config no longer
// has is retired (controllers stopped, ports drained, registries closed);
// then the new ports serve. a.mu is held.
func (a *app) execute(cfg *config.Config, p reconcile.Plan) (err error) {
	var (
		opened  []*liveRegistry
		bound   []*server
		made    []string // listener handlers made for ports bound here
		pending []pendingUpstream
	)
	defer func() {
		if err == nil {
			return
		}
		for _, s := range bound {
			s.ln.Close()
		}
		for _, name := range made {
			a.proxy.ForgetListener(name)
		}
		for _, u := range pending {
			u.w.Stop()
		}
		for _, r := range opened {
			r.reg.Close()
		}
	}()

	// 1. Registries: keep, or open (a reopened one's predecessor is
	// closed in step 7).
	regs := make(map[string]*liveRegistry, len(cfg.Registries))
	for _, st := range p.Registries {
		switch st.Action {
		case reconcile.Keep:
			regs[st.Name] = a.registries[st.Name]
		case reconcile.Open, reconcile.Reopen:
			rc := cfg.Registry(st.Name)
			files := registryFiles(cfg, rc) // before Open reads them
			reg, err := rc.Options.Open(discovery.Env{
				Name: rc.Name, BaseDir: cfg.Dir, DataDir: cfg.DataDir,
				Log: a.log.WithField("registry", rc.Name),
			})
			if err != nil {
				return fmt.Errorf("registry %q: %w", rc.Name, err)
			}
			r := &liveRegistry{cfg: *rc, reg: reg, files: files}
			opened = append(opened, r)
			regs[rc.Name] = r
		}
	}

	// 2. Upstreams: keep, or open the watch of each to start or restart.
	ups := make(map[string]*liveUpstream, len(cfg.Upstreams))
	for _, st := range p.Upstreams {
		switch st.Action {
		case reconcile.Keep:
			ups[st.Name] = a.upstreams[st.Name]
		case reconcile.Start, reconcile.Restart:
			uc := upstreamConfig(cfg, st.Name)
			reg := regs[uc.Registry]
			var w discovery.Watcher
			if reg == nil {
				err = fmt.Errorf("unknown registry %q", uc.Registry)
			} else {
				w, err = watchUpstream(reg.reg, uc)
			}
			if err != nil {
				return fmt.Errorf("upstream %q: watching %q in registry %q: %w", uc.Name, uc.Service, uc.Registry, err)
			}
			pending = append(pending, pendingUpstream{cfg: uc, prev: a.upstreams[st.Name], carryNodes: st.CarryNodes, w: w})
		}
	}

	// 3. The registry a new registration is made in.
	var registerIn discovery.Registrar
	switch p.Register {
	case reconcile.Start, reconcile.Replace, reconcile.Reconfigure:
		// Reconfigure too: the agent may refuse, and be replaced.
		if registerIn, err = registrar(regs, cfg.Register); err != nil {
			return err
		}
	}

	// 4. Dedicated ports: keep, or bind.
	dedicated := map[string]*server{}
	for _, st := range p.Listeners {
		switch st.Action {
		case reconcile.Keep:
			dedicated[st.Name] = a.dedicated[st.Name]
		case reconcile.Bind:
			uc := upstreamConfig(cfg, st.Name)
			name := "upstream " + uc.Name
			var srv serving
			if uc.Protocol == "tcp" {
				srv = a.tcpServer(cfg, uc.Name)
			} else {
				// The handler only: the options of a listener that
				// serves already change in step 5, once nothing can fail.
				h, isNew := a.proxy.ListenerHandler(name, dedicatedOptions(uc))
				if isNew {
					made = append(made, name)
				}
				srv = a.proxyServer(name, h)
			}
			var s *server
			if held := a.drainedAt(p, uc.Listen); held != nil {
				s, err = takeOver(name, held, srv)
			} else {
				s, err = a.bind(name, uc.Listen, srv)
			}
			if err != nil {
				return err
			}
			bound = append(bound, s)
			dedicated[uc.Name] = s
		}
	}

	// The point of no return: nothing fails from here on.
	// 5. The new controllers, each taking over its predecessor's nodes
	// when it carries them, and the routes to them.
	for _, u := range pending {
		var prev *upstream.Upstream
		if u.prev != nil {
			u.prev.stop()
			if u.carryNodes {
				prev = u.prev.u
			}
		}
		ups[u.cfg.Name] = a.startUpstream(cfg, u.cfg, u.w, prev)
	}
	pending = nil
	routes := make([]proxy.Route, 0, len(ups))
	for _, l := range ups {
		routes = append(routes, proxy.Route{Upstream: l.u, Client: l.client, Mirror: l.cfg.Mirror, TCP: l.cfg.Protocol == "tcp",
			RequestHeaders: headerRules(l.cfg.RequestHeaders), ResponseHeaders: headerRules(l.cfg.ResponseHeaders)})
	}
	a.proxy.SetRoutes(routes...) // closes the idle connections of transports it drops
	// The listeners' routes, and the dedicated ports': they name upstreams
	// the table now has.
	for _, lc := range cfg.Listeners {
		a.proxy.Listener(lc.Name, listenerOptions(lc))
	}
	for _, uc := range cfg.Upstreams {
		if uc.Listen != "" && uc.Protocol != "tcp" {
			a.proxy.Listener("upstream "+uc.Name, dedicatedOptions(uc))
		}
	}

	// 6. The registration, while every registry it may live in is open.
	a.moveRegistration(p.Register, cfg.Register, registerIn)

	// 7. Retire what the new config no longer has.
	for _, st := range p.Upstreams {
		if st.Action == reconcile.Stop {
			a.upstreams[st.Name].stop()
		}
	}
	for _, st := range p.Listeners {
		if st.Action == reconcile.Drain {
			a.retire(a.dedicated[st.Name], cfg.DrainTimeout)
		}
	}
	for _, st := range p.Registries {
		if st.Action == reconcile.Close || st.Action == reconcile.Reopen {
			if err := a.registries[st.Name].reg.Close(); err != nil {
				a.log.WithError(err).WithField("registry", st.Name).Warn("closing registry")
			}
		}
	}

	// 8. The new ports serve: one that takes a socket over once its old
	// listener stopped accepting (its Shutdown closes it first thing), so
	// that no connection made after the reload goes to the old one, whose
	// shutdown would drop its request, as net/http's does.
	for _, s := range bound {
		if s.after != nil {
			<-s.after
		}
		a.serve(s)
	}
	a.cfg, a.registries, a.upstreams, a.dedicated = cfg, regs, ups, dedicated
	return nil
}

// retire drains s, a dedicated port the new config no longer has: its
// requests and connections may go on for drain_timeout, then they are
// closed. Until then s is among a.retiring, which shutdown waits for.
// a.mu is held.
func (a *app) retire(s *server, drainTimeout time.Duration) {
	done := make(chan struct{})
	a.retiring[s] = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
		a.mu.Lock()
		delete(a.retiring, s)
		a.mu.Unlock()
	}()
}

// upstreamConfig returns the config of the upstream name, which cfg has.
// drainedAt returns the dedicated port of the running config that listens
// on addr and that plan p drains (its upstream changed protocol, or is
// gone and another takes its address), or nil. A port 0 is never shared:
// each bind picks its own.
func (a *app) drainedAt(p reconcile.Plan, addr string) *server {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		return nil
	}
	for _, st := range p.Listeners {
		if st.Action == reconcile.Drain && upstreamConfig(a.cfg, st.Name).Listen == addr {
			return a.dedicated[st.Name]
		}
	}
	return nil
}

// takeOver returns a server for srv on the socket that held listens on,
// which stays open: held keeps accepting until it is shut down, then the
// connections that arrive wait in the socket's queue for srv. No client
// is refused while one listener hands the address to the other.
func takeOver(name string, held *server, srv serving) (*server, error) {
	var inner net.Listener = held.ln
	if nl, ok := inner.(*notifyingListener); ok {
		inner = nl.Listener
	}
	tl, ok := inner.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("listener %s: cannot take %s over from %s", name, held.ln.Addr(), held.name)
	}
	f, err := tl.File() // a duplicate of the socket's descriptor
	if err != nil {
		return nil, fmt.Errorf("listener %s: taking %s over from %s: %w", name, held.ln.Addr(), held.name, err)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener %s: taking %s over from %s: %w", name, held.ln.Addr(), held.name, err)
	}
	s := newServer(name, ln, srv)
	s.after = held.ln.(*notifyingListener).closed
	return s, nil
}

func upstreamConfig(cfg *config.Config, name string) config.Upstream {
	for _, u := range cfg.Upstreams {
		if u.Name == name {
			return u
		}
	}
	panic("reconcile: plan names upstream " + name + ", which the config does not have")
}

// moveRegistration carries out the registration's part of a plan: want is
// the new register: block, reg the registry it names. Reconfigure updates
// the live registration in place (falling back to Replace if the agent
// refuses); Replace and Stop withdraw it first. a.mu is held.
func (a *app) moveRegistration(action reconcile.Action, want *register.Config, reg discovery.Registrar) {
	switch action {
	case reconcile.Keep:
		return
	case reconcile.Reconfigure:
		err := a.agent.Load().Reconfigure(*want)
		if err == nil {
			a.log.Info("register: the live registration updated in place")
			return
		}
		if !errors.Is(err, register.ErrReplace) {
			a.log.WithError(err).Warn("register: updating the registration in place failed")
		}
		a.log.WithError(err).Info("register: registering the application anew")
	case reconcile.Replace:
		a.log.Info("register: registering the application anew")
	}
	a.stopAgent(replaceTimeout)
	if want != nil {
		a.startAgent(*want, reg)
	}
}
