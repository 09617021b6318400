// Package reconcile computes what moving a running Remora from one
// configuration to another takes: which registries to open, keep, reopen
// or close, which upstreams to start, keep, restart (and whether the new
// controller takes over its predecessor's nodes) or stop, which dedicated
// listen: ports to bind, keep or drain, and what becomes of the
// registration of the local application. Diff is a pure function of the
// two configurations; cmd/remora carries the plan out, in an order that
// makes every step that can fail before anything running changes.
package reconcile

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/register"
)

// Action is what happens to one registry, upstream, listener or the
// registration. Each kind uses some of them (see Plan).
type Action uint8

const (
	// Keep: it stays as it runs (for the registration, also: there is
	// none before or after).
	Keep Action = iota
	// Open: a registry the old configuration did not have.
	Open
	// Reopen: a registry whose options (or whose config file's
	// directory) changed: a new one is opened, and the old one closed
	// once nothing uses it.
	Reopen
	// Close: a registry the new configuration does not have.
	Close
	// Start: an upstream the old configuration did not have; a
	// register: block added.
	Start
	// Restart: an upstream whose config or registry changed: a new
	// controller replaces the old one (see Step.CarryNodes).
	Restart
	// Stop: an upstream the new configuration does not have; a register:
	// block removed (the registration is withdrawn).
	Stop
	// Bind: a dedicated listen: port that is new, moved, or whose
	// protocol changed.
	Bind
	// Drain: a dedicated port no longer wanted: it stops accepting and
	// its open requests get the drain timeout.
	Drain
	// Reconfigure: the registration takes the new register: block in
	// place (labels, weight, warm-up, deregister_delay changed).
	Reconfigure
	// Replace: the registration is withdrawn and made anew (its service,
	// id, address, port or health changed, or its registry is another
	// one or was reopened).
	Replace
)

var actionNames = [...]string{"keep", "open", "reopen", "close", "start", "restart", "stop", "bind", "drain", "reconfigure", "replace"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Step is the action for one named registry, upstream or listener (named
// by its upstream).
type Step struct {
	Name   string
	Action Action
	// CarryNodes, on an upstream's Restart: the new controller starts from
	// its predecessor's nodes, with their stats and health, because it
	// watches the same service in the same registry.
	CarryNodes bool
}

func (s Step) String() string {
	if s.CarryNodes {
		return s.Action.String() + " " + s.Name + " (with its nodes)"
	}
	return s.Action.String() + " " + s.Name
}

// Plan is the difference between two configurations.
//
// Registries are in the new configuration's order (Keep, Open, Reopen),
// then those it dropped in the old one's (Close); likewise Upstreams
// (Keep, Start, Restart, then Stop) and Listeners (Keep, Bind, then
// Drain), which are named by their upstream. Register is Keep, Start,
// Reconfigure, Replace or Stop.
type Plan struct {
	Registries []Step
	Upstreams  []Step
	Listeners  []Step
	Register   Action
}

// Changed reports whether the plan changes anything.
func (p Plan) Changed() bool {
	for _, steps := range [][]Step{p.Registries, p.Upstreams, p.Listeners} {
		for _, s := range steps {
			if s.Action != Keep {
				return true
			}
		}
	}
	return p.Register != Keep
}

// String lists what changes, for logs: "registries: reopen main;
// upstreams: restart users (with its nodes); register: reconfigure".
func (p Plan) String() string {
	var parts []string
	for _, kind := range []struct {
		name  string
		steps []Step
	}{{"registries", p.Registries}, {"upstreams", p.Upstreams}, {"listeners", p.Listeners}} {
		var changes []string
		for _, s := range kind.steps {
			if s.Action != Keep {
				changes = append(changes, s.String())
			}
		}
		if len(changes) > 0 {
			parts = append(parts, kind.name+": "+strings.Join(changes, ", "))
		}
	}
	if p.Register != Keep {
		parts = append(parts, "register: "+p.Register.String())
	}
	if len(parts) == 0 {
		return "no change"
	}
	return strings.Join(parts, "; ")
}

// Diff returns the plan that moves a Remora running on old (nil: nothing
// runs yet) to cfg. Both are validated configurations; neither is
// modified.
func Diff(old, cfg *config.Config) Plan {
	return DiffReopening(old, cfg, nil)
}

// DiffReopening is Diff, with the registries that reopen names reopened
// even when their options did not change: the files they read (a
// password, a token, certificates) did.
func DiffReopening(old, cfg *config.Config, reopen map[string]bool) Plan {
	if old == nil {
		old = &config.Config{Dir: cfg.Dir}
	}
	var p Plan

	oldRegs := make(map[string]config.Registry, len(old.Registries))
	for _, r := range old.Registries {
		oldRegs[r.Name] = r
	}
	kept := map[string]bool{} // registries kept as they run
	// Where the files live: relative paths resolve against the config's
	// directory, and data_dir holds the upstreams' snapshots and the
	// registries' caches. When it moves, every registry reopens and every
	// upstream restarts (taking over its nodes) to use the new place.
	samePlace := old.Dir == cfg.Dir && old.DataDir == cfg.DataDir
	newRegs := map[string]bool{}
	for _, r := range cfg.Registries {
		newRegs[r.Name] = true
		o, had := oldRegs[r.Name]
		switch {
		case !had:
			p.Registries = append(p.Registries, Step{Name: r.Name, Action: Open})
		case samePlace && SameRegistry(o, r) && !reopen[r.Name]:
			kept[r.Name] = true
			p.Registries = append(p.Registries, Step{Name: r.Name, Action: Keep})
		default:
			p.Registries = append(p.Registries, Step{Name: r.Name, Action: Reopen})
		}
	}
	for _, r := range old.Registries {
		if !newRegs[r.Name] {
			p.Registries = append(p.Registries, Step{Name: r.Name, Action: Close})
		}
	}

	oldUps := make(map[string]config.Upstream, len(old.Upstreams))
	for _, u := range old.Upstreams {
		oldUps[u.Name] = u
	}
	newUps := map[string]config.Upstream{}
	sameClient := SameClientSettings(old.Proxy, cfg.Proxy)
	for _, u := range cfg.Upstreams {
		newUps[u.Name] = u
		o, had := oldUps[u.Name]
		switch {
		case !had:
			p.Upstreams = append(p.Upstreams, Step{Name: u.Name, Action: Start})
		case kept[u.Registry] && sameClient && SameUpstream(o, u):
			p.Upstreams = append(p.Upstreams, Step{Name: u.Name, Action: Keep})
		default:
			p.Upstreams = append(p.Upstreams, Step{Name: u.Name, Action: Restart,
				CarryNodes: o.Service == u.Service && o.Registry == u.Registry})
		}
	}
	for _, u := range old.Upstreams {
		if _, ok := newUps[u.Name]; !ok {
			p.Upstreams = append(p.Upstreams, Step{Name: u.Name, Action: Stop})
		}
	}

	keptPort := map[string]bool{}
	for _, u := range cfg.Upstreams {
		if u.Listen == "" {
			continue
		}
		if o, had := oldUps[u.Name]; had && o.Listen == u.Listen && o.Protocol == u.Protocol {
			keptPort[u.Name] = true
			p.Listeners = append(p.Listeners, Step{Name: u.Name, Action: Keep})
		} else {
			p.Listeners = append(p.Listeners, Step{Name: u.Name, Action: Bind})
		}
	}
	for _, u := range old.Upstreams {
		if u.Listen != "" && !keptPort[u.Name] {
			p.Listeners = append(p.Listeners, Step{Name: u.Name, Action: Drain})
		}
	}

	p.Register = registerAction(old.Register, cfg.Register, kept)
	return p
}

// registerAction is what becomes of the registration made from old when
// the register: block is want; kept are the registries kept as they run.
func registerAction(old, want *register.Config, kept map[string]bool) Action {
	switch {
	case old == nil && want == nil:
		return Keep
	case old == nil:
		return Start
	case want == nil:
		return Stop
	case old.Registry != want.Registry || !kept[want.Registry] || !InPlace(*old, *want):
		return Replace
	case reflect.DeepEqual(*old, *want):
		return Keep
	}
	return Reconfigure
}

// InPlace reports whether a registration made from old can take want in
// place, as register.Agent.Reconfigure does: the same registry, service,
// id, address, port and health check.
func InPlace(old, want register.Config) bool {
	return old.Registry == want.Registry && old.Service == want.Service && old.ID == want.ID &&
		old.Address == want.Address && old.Port == want.Port && reflect.DeepEqual(old.Health, want.Health)
}

// SameRegistry reports whether two registry configs open the same
// registry.
func SameRegistry(a, b config.Registry) bool {
	return a.Name == b.Name && a.Type == b.Type && reflect.DeepEqual(a.Options, b.Options)
}

// SameClientSettings reports whether the proxy settings every upstream's
// connections are made with (connect and idle timeouts, pool size, answer
// head limit) are unchanged; when they are not, every upstream restarts
// (taking over its nodes) to use them.
func SameClientSettings(a, b config.Proxy) bool {
	return a.ConnectTimeout == b.ConnectTimeout && a.IdleConnTimeout == b.IdleConnTimeout &&
		a.MaxIdleConnsPerHost == b.MaxIdleConnsPerHost && a.MaxResponseHeaderBytes == b.MaxResponseHeaderBytes
}

// SameUpstream reports whether an upstream's config is unchanged. The
// balancer is compared by meaning (its options are YAML nodes that carry
// their position in the file), the loaded TLS by what its files hold; the
// rest is plain values.
func SameUpstream(a, b config.Upstream) bool {
	if !a.Balancer.SameAs(b.Balancer) {
		return false
	}
	if !tlsfiles.Same(a.TLSConfig, b.TLSConfig) {
		return false
	}
	a.Balancer, b.Balancer = config.Balancer{}, config.Balancer{}
	a.TLSConfig, b.TLSConfig = nil, nil
	return reflect.DeepEqual(a, b)
}
