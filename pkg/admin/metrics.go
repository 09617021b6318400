package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// MetricsOptions shape the /metrics output.
type MetricsOptions struct {
	// NodeLabels adds per-node series (label node); off bounds cardinality
	// to the number of upstreams.
	NodeLabels bool
	// Build is the binary's build, for remora_build_info (left out when
	// its Version is empty).
	Build Build
}

// Build says which binary runs.
type Build struct {
	Version, Revision, GoVersion string
}

// MetricsHandler serves Prometheus metrics for src. Every value is read at
// scrape time from the atomics the request path already keeps, so metrics
// add nothing to the request path.
func MetricsHandler(src Source, opts MetricsOptions) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&collector{src: src, opts: opts})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("remora_"+name, help, labels, nil)
}

var (
	descRequests       = desc("requests_total", "Requests by upstream, pool and status class (error: no node answered).", "upstream", "pool", "code")
	descDuration       = desc("request_duration_seconds", "Request duration, retries included.", "upstream", "pool")
	descActive         = desc("active_requests", "Requests in flight.", "upstream")
	descRetries        = desc("retries_total", "Attempts retried on another node, by cause (connect_failure, status, reset, grpc_status).", "upstream", "cause")
	descLocal          = desc("local_answers_total", "Requests (and tcp connections) no node answered, by reason: Remora's own answers and failures.", "upstream", "reason")
	descGRPC           = desc("grpc_responses_total", "gRPC calls by the grpc-status they ended with.", "upstream", "code")
	descZone           = desc("zone_requests_total", "Requests of an upstream with locality by where their first pick went (local, other).", "upstream", "zone")
	descMirrored       = desc("mirrored_requests_total", "Copies of the upstream's requests its mirror sent.", "upstream")
	descMirrorDropped  = desc("mirror_dropped_total", "Copies the mirror dropped over max_in_flight.", "upstream")
	descRouteRequests  = desc("route_requests_total", "Requests a listener route took.", "listener", "route", "upstream")
	descRouteLimited   = desc("route_rate_limited_total", "Requests a route's rate_limit refused (429).", "listener", "route", "upstream")
	descBuildInfo      = desc("build_info", "1, with the version and revision of the running binary and the Go it was built with.", "version", "revision", "go_version")
	descReloadOK       = desc("config_last_reload_successful", "1 if the last configuration reload (or the start) succeeded.")
	descReloadAt       = desc("config_last_reload_success_timestamp_seconds", "When the configuration was last applied successfully.")
	descClientClosed   = desc("client_closed_requests_total", "Requests whose client went away (logged as 499).", "upstream")
	descNodes          = desc("nodes", "Nodes by state.", "upstream", "state")
	descEjections      = desc("ejections_total", "Outlier ejections by detector.", "upstream", "reason")
	descUpdates        = desc("registry_updates_total", "Node sets delivered by the registry.", "upstream")
	descRegistryErrors = desc("registry_errors_total", "Failed registry reads; the last good nodes are kept.", "upstream")
	descLastUpdate     = desc("registry_last_update_timestamp_seconds", "When the registry last delivered a node set.", "upstream")
	descStale          = desc("registry_stale", "1 while the registry could not be read since its last set.", "upstream")
	descCanaryWeight   = desc("canary_weight_percent", "Effective canary weight.", "upstream")
	descRolledBack     = desc("canary_rolled_back", "1 while the canary is automatically rolled back.", "upstream")
	descNodeRequests   = desc("node_requests_total", "Attempts per node.", "upstream", "node")
	descNodeFailures   = desc("node_failures_total", "Failed attempts per node (the node's fault).", "upstream", "node")
	descNodeInFlight   = desc("node_in_flight_requests", "Attempts in flight per node.", "upstream", "node")
	descRegistrationUp = desc("registration_up", "1 while the registry holds the local application's registration (register:).", "registry", "service")
	descLogDropped     = desc("log_lines_dropped_total", "Log lines dropped because the log's reader did not keep up (standard output or error full).", "log")
	descReregistered   = desc("registration_reregistrations_total", "Times the registry had lost the registration and it was written again.", "registry", "service")
)

type collector struct {
	src  Source
	opts MetricsOptions
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if b := c.opts.Build; b.Version != "" {
		gauge(descBuildInfo, 1, b.Version, b.Revision, b.GoVersion)
	}
	if rl, ok := c.src.(ReloadSource); ok {
		okv, at := rl.LastReload()
		v := 0.0
		if okv {
			v = 1
		}
		gauge(descReloadOK, v)
		if !at.IsZero() {
			gauge(descReloadAt, float64(at.UnixNano())/1e9)
		}
	}
	if ls, ok := c.src.(LogSource); ok {
		for name, n := range ls.LogLinesDropped() {
			counter(descLogDropped, n, name)
		}
	}
	if rs, ok := c.src.(RouteSource); ok {
		for _, r := range rs.Routes() {
			counter(descRouteRequests, r.Requests, r.Listener, r.Name, r.Upstream)
			counter(descRouteLimited, r.RateLimited, r.Listener, r.Name, r.Upstream)
		}
	}
	if rs, ok := c.src.(RegistrationSource); ok {
		if r, ok := rs.Registration(); ok {
			up := 0.0
			if r.up() {
				up = 1
			}
			gauge(descRegistrationUp, up, r.Registry, r.Status.Service)
			counter(descReregistered, r.Reregistrations, r.Registry, r.Status.Service)
		}
	}
	for _, u := range c.src.Table().All() {
		name, m, s := u.Name(), u.Metrics(), u.Snapshot()
		for _, p := range []canary.Pool{canary.Stable, canary.Canary} {
			for class, cname := range upstream.ClassNames {
				if v := m.Requests[p][class].Load(); v > 0 || p == canary.Stable {
					counter(descRequests, v, name, p.String(), cname)
				}
			}
			h := &m.Durations[p]
			buckets := make(map[float64]uint64, len(upstream.DurationBuckets))
			var total uint64
			for i, ub := range upstream.DurationBuckets {
				total += h.Counts[i].Load()
				buckets[ub] = total
			}
			total += h.Counts[len(upstream.DurationBuckets)].Load()
			if total > 0 || p == canary.Stable {
				ch <- prometheus.MustNewConstHistogram(descDuration, total, float64(h.SumNs.Load())/1e9, buckets, name, p.String())
			}
		}
		gauge(descActive, float64(u.Active()), name)
		for _, cause := range upstream.RetryCauses() {
			counter(descRetries, m.RetriesBy[cause].Load(), name, cause.String())
		}
		for _, r := range upstream.Reasons() {
			counter(descLocal, m.Local[r].Load(), name, r.String())
		}
		for code := range m.GRPC {
			if v := m.GRPC[code].Load(); v > 0 {
				counter(descGRPC, v, name, upstream.GRPCCodeName(code))
			}
		}
		if s.StableZone != nil || m.Zone[upstream.ZoneLocal].Load()+m.Zone[upstream.ZoneOther].Load() > 0 {
			counter(descZone, m.Zone[upstream.ZoneLocal].Load(), name, "local")
			counter(descZone, m.Zone[upstream.ZoneOther].Load(), name, "other")
		}
		if v, d := m.Mirrored.Load(), m.MirrorDropped.Load(); v+d > 0 {
			counter(descMirrored, v, name)
			counter(descMirrorDropped, d, name)
		}
		counter(descClientClosed, m.ClientClosed.Load(), name)
		for r := node.Consecutive5xx; r <= node.FailurePercentage; r++ {
			counter(descEjections, m.Ejections[r].Load(), name, r.String())
		}
		states := map[string]int{"available": 0, "unhealthy": 0, "draining": 0, "ejected": 0, "failing_active_check": 0}
		for _, n := range s.Nodes {
			states[state(n)]++
			if c.opts.NodeLabels {
				counter(descNodeRequests, n.Stats.Requests.Load(), name, n.ID)
				counter(descNodeFailures, n.Stats.Failures.Load(), name, n.ID)
				gauge(descNodeInFlight, float64(n.Stats.InFlight.Load()), name, n.ID)
			}
		}
		for st, v := range states {
			gauge(descNodes, float64(v), name, st)
		}
		counter(descUpdates, s.Version, name)
		counter(descRegistryErrors, m.RegistryErrors.Load(), name)
		if !s.UpdatedAt.IsZero() {
			gauge(descLastUpdate, float64(s.UpdatedAt.UnixNano())/1e9, name)
		}
		stale := 0.0
		if s.Stale() {
			stale = 1
		}
		gauge(descStale, stale, name)
		if s.Canary != nil {
			gauge(descCanaryWeight, s.Canary.Weight, name)
			rb := 0.0
			if reason, _ := u.RolledBack(); reason != "" {
				rb = 1
			}
			gauge(descRolledBack, rb, name)
		}
	}
}
