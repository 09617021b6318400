// Package admin serves Remora's admin API: liveness, readiness and the live
// state of every upstream as JSON, and a page that shows it.
//
//	GET /                 the admin UI (static files embedded in the binary)
//	GET /healthz          200 while the process runs
//	GET /readyz           200 once every upstream has its first node set (or
//	                      gave up waiting) and the process is not draining
//	GET /upstreams        every upstream with its nodes (?format=text: one
//	                      line per node, for terminals)
//	GET /upstreams/NAME   one upstream (?format=text as well)
//	GET /register         the local application's registration (register:)
//	GET /status           readiness, every upstream and the registration in
//	                      one answer, 200 whatever the state (the UI's poll)
//	GET /ui/auth          whether the API needs the token (open, for the UI)
//	GET /routes           the listeners' routes with their counters
//	GET /config           the effective configuration (Options.Config)
//	GET /metrics          Prometheus metrics
//	POST /drain           readiness off, serving on
//	POST /undrain         readiness back on after POST /drain
//	POST /upstreams/NAME/canary/resume  lift an automatic canary rollback
//
// With a token (Options.Token) every endpoint but /healthz, /readyz and
// the UI's static files needs "Authorization: Bearer TOKEN"; the page asks
// for the token and sends it with each of its calls.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Options configure the admin API.
type Options struct {
	Metrics MetricsOptions
	// Token returns the token that must come as "Authorization: Bearer
	// TOKEN" on every endpoint but /healthz and /readyz; "" (or a nil
	// Token) leaves them open. It is called on every request, from any
	// goroutine, so a reload can change the token.
	Token func() string
	// Config renders the effective configuration with secrets redacted
	// in format ("yaml" or "json"), for GET /config (?format=json; YAML
	// by default); nil leaves the endpoint out.
	Config func(format string) ([]byte, error)
}

// RouteSource is a Source with listener routes.
type RouteSource interface {
	// Routes returns every listener's routes with their counters.
	Routes() []RouteStatus
}

// RouteStatus is the JSON form of a listener route.
type RouteStatus struct {
	Listener    string `json:"listener"`
	Name        string `json:"name"`
	Upstream    string `json:"upstream"`
	Requests    uint64 `json:"requests"`
	RateLimited uint64 `json:"rate_limited"`
}

// ReloadSource is a Source that reloads its configuration.
type ReloadSource interface {
	// LastReload reports whether the last reload (or the start)
	// succeeded, and when the configuration was last applied.
	LastReload() (ok bool, at time.Time)
}

// LogSource is a Source whose logs drop lines rather than wait for a
// stalled reader.
type LogSource interface {
	// LogLinesDropped reports how many lines each log (by name: access,
	// process) dropped.
	LogLinesDropped() map[string]uint64
}

// Source is what the admin API reports on. Its methods are called
// concurrently from request goroutines. A Source may also be a
// RegistrationSource, a RouteSource, a ReloadSource and a LogSource.
type Source interface {
	// Table returns the current upstreams.
	Table() *upstream.Table
	// Draining reports whether the process is shutting down.
	Draining() bool
	// Drain turns readiness off while Remora keeps serving (a pre-stop
	// hook, or an operator taking the pod out of rotation).
	Drain()
}

// StartTracker is a Source that tells when its start is over: every
// upstream it began with had nodes to serve once. From then on readiness
// waits for no upstream (waiting_for still lists those without nodes): one
// that a reload adds, or restarts without its nodes, warms up without
// taking the pod out of its Services, as a cluster added after Envoy's
// start does. Without it, readiness waits for every upstream, always.
type StartTracker interface {
	Started() bool
}

// Undrainer is a Source that can take back a Drain (POST /undrain).
type Undrainer interface {
	// Undrain turns readiness back on after Drain. It fails when the
	// process is shutting down, which no undrain reverses.
	Undrain() error
}

// Handler returns the admin API over src.
func Handler(src Source, opts Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", MetricsHandler(src, opts.Metrics))
	mux.Handle("GET /{$}", uiHandler())
	mux.Handle("GET /ui/", uiHandler())
	if opts.Config != nil {
		mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
			serveConfig(w, r, opts.Config)
		})
	}
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, _ *http.Request) {
		routes := []RouteStatus{}
		if rs, ok := src.(RouteSource); ok {
			routes = append(routes, rs.Routes()...)
		}
		writeJSON(w, http.StatusOK, routes)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, waiting := readiness(src)
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"ready": ready, "draining": src.Draining(), "waiting_for": waiting})
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, _ *http.Request) {
		src.Drain()
		writeJSON(w, http.StatusOK, map[string]any{"draining": true})
	})
	mux.HandleFunc("POST /undrain", func(w http.ResponseWriter, _ *http.Request) {
		u, ok := src.(Undrainer)
		if !ok {
			writeJSON(w, http.StatusNotImplemented, map[string]any{"error": "this process cannot undrain"})
			return
		}
		if err := u.Undrain(); err != nil {
			writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "draining": src.Draining()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"draining": src.Draining()})
	})
	mux.HandleFunc("GET /register", func(w http.ResponseWriter, _ *http.Request) {
		serveRegister(src, w)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeCompactJSON(w, http.StatusOK, View(src))
	})
	mux.HandleFunc("GET /ui/auth", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"token_required": opts.Token != nil && opts.Token() != ""})
	})
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		ups := src.Table().All()
		out := make([]UpstreamStatus, len(ups))
		for i, u := range ups {
			out[i] = Status(u)
		}
		writeUpstreams(w, r, out, out)
	})
	mux.HandleFunc("POST /upstreams/{name}/canary/resume", func(w http.ResponseWriter, r *http.Request) {
		u := src.Table().Lookup(r.PathValue("name"))
		if u == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "no upstream named " + r.PathValue("name"), "known": src.Table().Names()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"upstream": u.Name(), "was_rolled_back": u.ResumeCanary()})
	})
	mux.HandleFunc("GET /upstreams/{name}", func(w http.ResponseWriter, r *http.Request) {
		u := src.Table().Lookup(r.PathValue("name"))
		if u == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{
				"error": "no upstream named " + r.PathValue("name"), "known": src.Table().Names(),
			})
			return
		}
		st := Status(u)
		writeUpstreams(w, r, st, []UpstreamStatus{st})
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := ""
		if opts.Token != nil {
			token = opts.Token()
		}
		switch {
		case open(r):
		case token != "":
			if subtle.ConstantTimeCompare([]byte(bearerToken(r)), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="remora admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin token required: Authorization: Bearer <admin.token>"})
				return
			}
		case !addressedLocally(r.Host):
			writeJSON(w, http.StatusForbidden, map[string]string{
				"error": fmt.Sprintf("Host %q refused: without admin.token the admin API answers only requests addressed to an IP address or localhost (a page of another site could reach it through a name it resolves to 127.0.0.1); set admin.token to call it by name", r.Host),
			})
			return
		}
		mux.ServeHTTP(w, r)
	})
	return secured(h)
}

// addressedLocally reports whether host (a request's Host, with or
// without a port) is an IP address, localhost or a name under .localhost:
// names a web page cannot make resolve to this machine (DNS rebinding).
func addressedLocally(host string) bool {
	if host == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// secured sets the headers every answer carries and refuses cross-origin
// requests that change something.
//
// Every answer: not to be sniffed as another type, framed or followed by
// a referrer. The API's answers (everything but the UI's files, which set
// their own policy) are live and may be authenticated: never stored by a
// cache, and a browser that opens one as a page runs nothing in it.
//
// POST /drain, /undrain and .../canary/resume are refused (403) when a
// browser says they come from another origin (Sec-Fetch-Site, or an Origin
// that is not the admin's host): without a token, on the default
// 127.0.0.1 address, any page the operator visits could otherwise drain
// Remora with a form or a no-cors fetch. Clients that are not browsers
// (curl, a pre-stop hook) send neither header and pass.
func secured(h http.Handler) http.Handler {
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusForbidden, map[string]string{
			"error": "cross-origin request refused: " + r.Method + " " + r.URL.Path + " is only accepted from the admin UI's own page or from clients that are not browsers",
		})
	}))
	h = csrf.Handler(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
		hdr.Set("Content-Security-Policy", apiCSP)
		hdr.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// apiCSP is the content security policy of the API's answers: nothing
// runs, loads or frames them.
const apiCSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

// open reports whether r may come without the token: liveness,
// readiness, and the UI's static files and /ui/auth (they hold no data;
// the page asks for the token before it calls the API).
func open(r *http.Request) bool {
	p := r.URL.Path
	return p == "/healthz" || p == "/readyz" ||
		(r.Method == http.MethodGet || r.Method == http.MethodHead) && (p == "/" || strings.HasPrefix(p, "/ui/"))
}

// StatusView is GET /status: everything the admin UI shows, read at once,
// in one answer that is 200 whatever the state (the readiness is in the
// body, where /readyz answers 503), so that the page's every-second poll
// is one request that fails only when something is wrong.
type StatusView struct {
	Ready      bool             `json:"ready"`
	Draining   bool             `json:"draining"`
	WaitingFor []string         `json:"waiting_for"`
	Upstreams  []UpstreamStatus `json:"upstreams"`
	// Register is GET /register's answer, null without register:.
	Register *RegisterStatus `json:"register"`
}

// View renders src for GET /status.
func View(src Source) StatusView {
	ready, waiting := readiness(src)
	ups := src.Table().All()
	out := StatusView{Ready: ready, Draining: src.Draining(), WaitingFor: waiting, Upstreams: make([]UpstreamStatus, len(ups))}
	for i, u := range ups {
		out.Upstreams[i] = Status(u)
	}
	if rs, ok := src.(RegistrationSource); ok {
		if r, ok := rs.Registration(); ok {
			v := RegisterView(r)
			out.Register = &v
		}
	}
	return out
}

func readiness(src Source) (bool, []string) {
	waiting := []string{}
	for _, u := range src.Table().All() {
		if !u.Ready() {
			waiting = append(waiting, u.Name())
		}
	}
	ready := len(waiting) == 0
	if st, ok := src.(StartTracker); ok && st.Started() {
		ready = true
	}
	return ready && !src.Draining(), waiting
}

// UpstreamStatus is the JSON form of an upstream.
type UpstreamStatus struct {
	Name      string     `json:"name"`
	Service   string     `json:"service"`
	Synced    bool       `json:"synced"`
	Version   uint64     `json:"version"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	Stale     bool       `json:"stale"`
	Error     string     `json:"error,omitempty"`
	ErrorAt   *time.Time `json:"error_at,omitempty"`
	Available int        `json:"available"`
	// Panic is true while too few nodes pass health and traffic is
	// balanced over every available node (panic_threshold).
	Panic  bool          `json:"panic"`
	Canary *CanaryStatus `json:"canary,omitempty"`
	// Locality is the stable pool's zone split, when zones apply.
	Locality *LocalityStatus `json:"locality,omitempty"`
	Nodes    []NodeStatus    `json:"nodes"`
}

// LocalityStatus is the JSON form of a pool's zone split.
type LocalityStatus struct {
	Zone string `json:"zone"`
	// Share is the share of first picks kept in the zone, 0..1.
	Share          float64 `json:"share"`
	LocalAvailable int     `json:"local_available"`
	ZoneAvailable  int     `json:"zone_available"`
}

// CanaryStatus is the JSON form of an upstream's canary split.
type CanaryStatus struct {
	// Default: the rule every upstream has (no canary: block); tagging
	// instances canary=true with a canary-weight label is all it takes.
	Default  bool              `json:"default"`
	Selector map[string]string `json:"selector"`
	// Weight is the effective percentage; WeightFrom is "config",
	// "registry" or "rollback".
	Weight     float64 `json:"weight"`
	WeightFrom string  `json:"weight_from"`
	// LabelError names a canary instance's weight label that is not a
	// percentage and so is ignored (and how many more there are).
	LabelError     string     `json:"label_error,omitempty"`
	Available      int        `json:"available"`
	RolledBack     bool       `json:"rolled_back"`
	RollbackReason string     `json:"rollback_reason,omitempty"`
	RolledBackAt   *time.Time `json:"rolled_back_at,omitempty"`
	// Requests and errors by pool since start.
	Requests map[string]uint64 `json:"requests"`
	Errors   map[string]uint64 `json:"errors"`
}

// NodeStatus is the JSON form of a node.
type NodeStatus struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Port     int               `json:"port"`
	Weight   uint32            `json:"weight"`
	Metadata map[string]string `json:"metadata"`
	// State is the node's verdict: "available", "unhealthy" (the
	// registry says so), "draining" (weight 0), "ejected" (outlier
	// detection) or "failing_active_check".
	State    string `json:"state"`
	InFlight int64  `json:"in_flight"`
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// LatencyMs is the node's peak-EWMA latency in milliseconds (0
	// before its first answer).
	LatencyMs float64 `json:"latency_ms"`
	// Ejection: the detector that acted, until when, and the back-off
	// multiplier.
	EjectReason  string     `json:"eject_reason,omitempty"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	Ejections    uint32     `json:"ejections"`
	// Pool is "canary" for nodes the canary selector matches, else
	// "stable".
	Pool string `json:"pool"`
	// ActiveHealthy is the active probes' verdict (true without probes).
	ActiveHealthy  bool   `json:"active_healthy"`
	LastProbeError string `json:"last_probe_error,omitempty"`
}

// Status renders an upstream's current snapshot.
func Status(u *upstream.Upstream) UpstreamStatus {
	s := u.Snapshot()
	out := UpstreamStatus{
		Name: u.Name(), Service: u.Service(), Synced: s.Synced, Version: s.Version,
		Stale: s.Stale(), Available: s.Available, Panic: s.Panic, Nodes: make([]NodeStatus, len(s.Nodes)),
	}
	if !s.UpdatedAt.IsZero() {
		out.UpdatedAt = &s.UpdatedAt
	}
	if s.Err != nil {
		out.Error, out.ErrorAt = s.Err.Error(), &s.ErrAt
	}
	if sp := s.Canary; sp != nil {
		cs := &CanaryStatus{
			Default:  sp.Rule.IsDefault(),
			Selector: sp.Rule.Config().Selector, Weight: sp.Weight, WeightFrom: sp.WeightFrom, LabelError: sp.LabelError, Available: sp.Available,
			Requests: map[string]uint64{}, Errors: map[string]uint64{},
		}
		if reason, at := u.RolledBack(); reason != "" {
			cs.RolledBack, cs.RollbackReason, cs.RolledBackAt = true, reason, &at
		}
		for _, p := range []canary.Pool{canary.Stable, canary.Canary} {
			ps := &u.CanaryStats().Pools[p]
			cs.Requests[p.String()], cs.Errors[p.String()] = ps.Requests.Load(), ps.Errors.Load()
		}
		out.Canary = cs
	}
	if z := s.StableZone; z != nil {
		out.Locality = &LocalityStatus{Zone: z.Zone, Share: z.Share, LocalAvailable: z.LocalAvailable, ZoneAvailable: z.ZoneAvailable}
	}
	now := time.Now()
	for i, n := range s.Nodes {
		meta := n.Metadata
		if meta == nil {
			meta = map[string]string{}
		}
		h := &n.Stats.Health
		ns := NodeStatus{
			ID: n.ID, Address: n.Address, Port: n.Port, Weight: n.Weight, Metadata: meta,
			State: state(n), InFlight: n.Stats.InFlight.Load(), Requests: n.Stats.Requests.Load(), Failures: n.Stats.Failures.Load(),
			Ejections: h.Ejections(), ActiveHealthy: h.ActiveHealthy(), LastProbeError: h.LastProbeError(),
			Pool:      canary.Stable.String(),
			LatencyMs: math.Round(float64(n.Stats.Latency(now))/1e3) / 1e3,
		}
		if s.Canary != nil && s.Canary.Rule.IsCanary(n) {
			ns.Pool = canary.Canary.String()
		}
		if until := h.EjectedUntil(); !until.IsZero() {
			ns.EjectedUntil, ns.EjectReason = &until, h.EjectReason().String()
		}
		out.Nodes[i] = ns
	}
	return out
}

func state(n *node.Node) string {
	switch {
	case !n.Healthy:
		return "unhealthy"
	case n.Weight == 0:
		return "draining"
	case n.Stats.Health.Ejected():
		return "ejected"
	case !n.Stats.Health.ActiveHealthy():
		return "failing_active_check"
	}
	return "available"
}

// writeCompactJSON writes v without indentation: GET /status, which the
// UI reads every second and which is large with many nodes.
func writeCompactJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// bearerToken is the token of r's "Authorization: Bearer TOKEN" header, or
// "". The scheme's name is case-insensitive (RFC 9110 11.1), so "bearer"
// and "BEARER" are Bearer too.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimLeft(token, " ")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
