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
	descRetries        = desc("retries_total", "Attempts retried on another node.", "upstream")
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
		counter(descRetries, m.Retries.Load(), name)
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
