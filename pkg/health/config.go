// Package health decides which nodes may receive traffic beyond what the
// registry says: passive outlier detection (Observe on the request path,
// Ejector in the upstream controller) and active probes (Prober).
//
// A node's verdict is registry health ∧ active health ∧ not ejected. The
// state behind it lives in node.Health, keyed by instance ID like the other
// per-node stats, so it survives registry updates and config reloads.
package health

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/net/http/httpguts"
)

// Config is an upstream's `health:` block.
type Config struct {
	// Passive is outlier detection from live traffic; on by default.
	Passive Passive `yaml:"passive"`
	// Active probes each node; off unless configured.
	Active *Active `yaml:"active"`
	// PanicThreshold is a percentage: when fewer than this share of the
	// registry's available nodes pass health, traffic is balanced over all
	// of them rather than concentrated or failed. Default 50; 0 disables.
	PanicThreshold *int `yaml:"panic_threshold"`
}

// Passive configures outlier detection; names follow Envoy's.
type Passive struct {
	// Disabled turns outlier detection off.
	Disabled bool `yaml:"disabled"`
	// Consecutive5xx ejects after this many error responses (statuses in
	// ErrorStatuses, and gateway failures) in a row; default 0 (off),
	// because a 5xx passed through from a deeper hop says little about the
	// node itself.
	Consecutive5xx int `yaml:"consecutive_5xx"`
	// ConsecutiveGatewayFailure ejects after this many 502/503/504
	// responses, connect errors, resets or timeouts in a row; default 5.
	ConsecutiveGatewayFailure *int `yaml:"consecutive_gateway_failure"`
	// ConsecutiveLocalOriginFailure ejects after this many connect
	// failures (refused, timed out) in a row; default 5.
	ConsecutiveLocalOriginFailure *int `yaml:"consecutive_local_origin_failure"`
	// FailurePercentage ejects nodes whose error share over Interval
	// exceeds a threshold; off unless configured.
	FailurePercentage *FailurePercentage `yaml:"failure_percentage"`
	// Interval is the failure-percentage window, and how often a returned
	// node's ejection multiplier decays by one; default 10s.
	Interval time.Duration `yaml:"interval"`
	// BaseEjectionTime × times ejected is how long an ejection lasts;
	// default 30s.
	BaseEjectionTime time.Duration `yaml:"base_ejection_time"`
	// MaxEjectionTime caps an ejection; default 300s, or base_ejection_time
	// when that is longer.
	MaxEjectionTime time.Duration `yaml:"max_ejection_time"`
	// EjectionJitter adds a random 0..jitter to each ejection so nodes
	// ejected together do not return together; default 1s.
	EjectionJitter *time.Duration `yaml:"ejection_jitter"`
	// MaxEjectionPercent bounds the share of nodes ejected at once
	// (rounded down: a single-node upstream is never emptied by ejection
	// unless this is 100); default 50.
	MaxEjectionPercent *int `yaml:"max_ejection_percent"`
	// ErrorStatuses are the statuses that count as errors for
	// consecutive_5xx and failure_percentage, as ranges ("500-599",
	// "429"); default 500-599.
	ErrorStatuses []string `yaml:"error_statuses"`

	errorStatuses StatusSet
}

// FailurePercentage configures the failure-percentage detector.
type FailurePercentage struct {
	// Threshold ejects a node whose error share is at least this percent;
	// default 85.
	Threshold int `yaml:"threshold"`
	// RequestVolume is the minimum number of requests a node must have
	// seen in the interval to be judged; default 50.
	RequestVolume int `yaml:"request_volume"`
}

// Active configures active probes.
type Active struct {
	// Type is http (default), tcp or grpc (grpc.health.v1).
	Type string `yaml:"type"`
	// Path is the HTTP path to GET; default /health. http only.
	Path string `yaml:"path"`
	// Host is the HTTP Host header, or a grpc probe's :authority; default
	// the node's address. A Host in Headers is refused: net/http would
	// not send it. TLS still verifies the upstream's server name.
	Host string `yaml:"host"`
	// Headers are added to HTTP probes, and sent as metadata by grpc
	// probes (a User-Agent there goes before gRPC's own).
	Headers map[string]string `yaml:"headers"`
	// ExpectedStatuses are the healthy HTTP statuses as ranges; default
	// 200-399. http only: a grpc probe passes on SERVING.
	ExpectedStatuses []string `yaml:"expected_statuses"`
	// Service is the gRPC health service name; default "" (the server).
	// grpc only.
	Service string `yaml:"service"`
	// Port probes this port of each node instead of the port it serves
	// traffic on (an admin or health port); 0 means the node's own.
	Port int `yaml:"port"`
	// Interval between probes of one node (±10% jitter); default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe; default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// HealthyThreshold successes in a row bring a node back; default 2.
	HealthyThreshold int `yaml:"healthy_threshold"`
	// UnhealthyThreshold failures in a row take it out; default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`

	expected StatusSet
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// Defaults.
const (
	DefaultPanicThreshold   = 50
	DefaultGatewayFailures  = 5
	DefaultLocalFailures    = 5
	DefaultInterval         = 10 * time.Second
	DefaultBaseEjectionTime = 30 * time.Second
	DefaultMaxEjectionTime  = 300 * time.Second
	DefaultEjectionJitter   = time.Second
	DefaultMaxEjectionPct   = 50
)

// Validate fills defaults and checks the block; errors name fields relative
// to it ("passive.max_ejection_percent: ...").
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.PanicThreshold == nil {
		v := DefaultPanicThreshold
		c.PanicThreshold = &v
	}
	if p := *c.PanicThreshold; p < 0 || p > 100 {
		add("panic_threshold: %d; want a percentage 0..100", p)
	}
	p := &c.Passive
	for _, f := range []struct {
		name string
		ptr  **int
		def  int
	}{{"consecutive_gateway_failure", &p.ConsecutiveGatewayFailure, DefaultGatewayFailures}, {"consecutive_local_origin_failure", &p.ConsecutiveLocalOriginFailure, DefaultLocalFailures}, {"max_ejection_percent", &p.MaxEjectionPercent, DefaultMaxEjectionPct}} {
		if *f.ptr == nil {
			v := f.def
			*f.ptr = &v
		}
		if **f.ptr < 0 {
			add("passive.%s: %d is negative", f.name, **f.ptr)
		}
	}
	if p.Consecutive5xx < 0 {
		add("passive.consecutive_5xx: %d is negative", p.Consecutive5xx)
	}
	if *p.MaxEjectionPercent > 100 {
		add("passive.max_ejection_percent: %d; want 0..100", *p.MaxEjectionPercent)
	}
	defDur(&p.Interval, DefaultInterval)
	defDur(&p.BaseEjectionTime, DefaultBaseEjectionTime)
	defDur(&p.MaxEjectionTime, max(DefaultMaxEjectionTime, p.BaseEjectionTime))
	if p.EjectionJitter == nil {
		v := DefaultEjectionJitter
		p.EjectionJitter = &v
	}
	for name, d := range map[string]time.Duration{"interval": p.Interval, "base_ejection_time": p.BaseEjectionTime, "max_ejection_time": p.MaxEjectionTime, "ejection_jitter": *p.EjectionJitter} {
		if d < 0 {
			add("passive.%s: %v is negative", name, d)
		}
	}
	if p.MaxEjectionTime < p.BaseEjectionTime {
		add("passive.max_ejection_time: %v is less than base_ejection_time %v", p.MaxEjectionTime, p.BaseEjectionTime)
	}
	if fp := p.FailurePercentage; fp != nil {
		if fp.Threshold == 0 {
			fp.Threshold = 85
		}
		if fp.RequestVolume == 0 {
			fp.RequestVolume = 50
		}
		if fp.Threshold < 1 || fp.Threshold > 100 {
			add("passive.failure_percentage.threshold: %d; want 1..100", fp.Threshold)
		}
		if fp.RequestVolume < 1 {
			add("passive.failure_percentage.request_volume: %d; want at least 1", fp.RequestVolume)
		}
	}
	if len(p.ErrorStatuses) == 0 {
		p.ErrorStatuses = []string{"500-599"}
	}
	set, err := parseStatuses(p.ErrorStatuses)
	if err != nil {
		add("passive.error_statuses: %v", err)
	}
	p.errorStatuses = set

	if a := c.Active; a != nil {
		if a.Type == "" {
			a.Type = "http"
		}
		switch a.Type {
		case "http", "tcp", "grpc":
			a.checkFields(add) // what was set, before the defaults
		default:
			add("active.type: unknown probe type %q; known: http, tcp, grpc", a.Type)
		}
		if a.Type == "http" {
			if a.Path == "" {
				a.Path = "/health"
			}
			if !strings.HasPrefix(a.Path, "/") {
				add("active.path: %q must start with /", a.Path)
			}
			if len(a.ExpectedStatuses) == 0 {
				a.ExpectedStatuses = []string{"200-399"}
			}
			set, err := parseStatuses(a.ExpectedStatuses)
			if err != nil {
				add("active.expected_statuses: %v", err)
			}
			a.expected = set
		}
		if a.Port < 0 || a.Port > 65535 {
			add("active.port: %d; want 1..65535, or 0 for the node's own port", a.Port)
		}
		defDur(&a.Interval, 5*time.Second)
		defDur(&a.Timeout, time.Second)
		if a.Interval <= 0 {
			add("active.interval: %v; want a positive duration", a.Interval)
		}
		if a.Timeout <= 0 {
			add("active.timeout: %v; want a positive duration", a.Timeout)
		}
		if a.HealthyThreshold == 0 {
			a.HealthyThreshold = 2
		}
		if a.UnhealthyThreshold == 0 {
			a.UnhealthyThreshold = 3
		}
		if a.HealthyThreshold < 1 || a.UnhealthyThreshold < 1 {
			add("active.healthy_threshold/unhealthy_threshold: want at least 1")
		}
	}
	return errors.Join(errs...)
}

// checkFields refuses the fields of a that its type does not use, and
// headers that its type would not send as written. It looks at what was
// set, so it runs before the defaults are filled in.
func (a *Active) checkFields(add func(format string, args ...any)) {
	if a.Type != "grpc" && a.Service != "" {
		add("active.service: the grpc.health.v1 service name is for grpc probes")
	}
	switch a.Type {
	case "tcp":
		const only = "a tcp probe only connects; "
		if a.Path != "" {
			add("active.path: %spath is for http probes", only)
		}
		if a.Host != "" {
			add("active.host: %shost is for http probes (Host) and grpc probes (:authority)", only)
		}
		if len(a.Headers) > 0 {
			add("active.headers: %sheaders are for http probes and grpc probes (metadata)", only)
		}
		if len(a.ExpectedStatuses) > 0 {
			add("active.expected_statuses: %sexpected_statuses is for http probes", only)
		}
		return
	case "grpc":
		if a.Path != "" {
			add("active.path: a grpc probe calls grpc.health.v1.Health/Check; path is for http probes (name the service with service:)")
		}
		if len(a.ExpectedStatuses) > 0 {
			add("active.expected_statuses: a grpc probe passes on SERVING only; expected_statuses is for http probes")
		}
	}
	seen := map[string]string{} // lower case → as written
	for _, k := range slices.Sorted(maps.Keys(a.Headers)) {
		v, lk := a.Headers[k], strings.ToLower(k)
		at := "active.headers." + k
		if strings.ContainsFunc(k, func(r rune) bool { return !isMetadataRune(unicode.ToLower(r)) }) {
			at = fmt.Sprintf("active.headers: %q", k) // a key that cannot be a field path
		}
		first, dup := seen[lk]
		seen[lk] = k
		switch {
		case dup:
			// An HTTP probe would send one of them, by map order.
			add("%s: the same header as %s; write it once", at, first)
		case lk == "host":
			// net/http sends req.Host and never a Host in the header
			// map, so one there would be dropped: host: is the one way
			// to say it.
			add("%s: a probe's Host is set by host:, not headers; write host: %q", at, v)
		case slices.Contains(connectionHeaders, http.CanonicalHeaderKey(k)):
			add("%s: %s belongs to the connection, not the probe's request; it cannot be set", at, http.CanonicalHeaderKey(k))
		case a.Type == "http" && !httpguts.ValidHeaderFieldName(k):
			add("%s: not a header name", at) // net/http would fail every probe
		case a.Type == "http" && !httpguts.ValidHeaderFieldValue(v):
			add("%s: the value has a control character", at)
		case a.Type != "grpc":
		case lk == ":authority":
			add("%s: a grpc probe's :authority is set by host:, not headers; write host: %q", at, v)
		case strings.HasPrefix(lk, ":"):
			add("%s: gRPC sets its pseudo-headers itself", at)
		case !isMetadataKey(lk):
			add("%s: %q is not a gRPC metadata key (0-9, a-z, -, _ and . only)", at, lk)
		case lk == "content-type":
			add("%s: gRPC sets content-type itself", at)
		case strings.HasPrefix(lk, "grpc-"):
			add("%s: names that begin with grpc- are gRPC's own", at)
		case !strings.HasSuffix(lk, "-bin") && strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }):
			add("%s: gRPC metadata values are printable ASCII (or name the key -bin for binary)", at)
		}
	}
}

// connectionHeaders are the headers a probe cannot set: net/http drops
// Content-Length, Trailer and Transfer-Encoding, sends Connection,
// Keep-Alive and Proxy-Connection over HTTP/1.1 only and fails an HTTP/2
// probe with an Upgrade; an HTTP/2 node refuses a Te but "trailers". As
// gRPC metadata they are HTTP/2 headers, where the connection's are
// malformed (RFC 9113 8.2.2: a grpc-go node resets a probe that sends
// Connection), and gRPC drops a Te.
var connectionHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

// isMetadataKey reports whether k, lower case, is a gRPC metadata key
// that gRPC sends as it is.
func isMetadataKey(k string) bool {
	return k != "" && !strings.ContainsFunc(k, func(r rune) bool { return !isMetadataRune(r) })
}

// isMetadataRune reports whether r may be in a gRPC metadata key.
func isMetadataRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

func defDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// StatusSet is a set of HTTP statuses 100..599 as a bitmap; the zero value
// is empty. Has does not allocate.
type StatusSet [(600 - 100 + 63) / 64]uint64

// Add adds code, which must be 100..599.
func (s *StatusSet) Add(code int) {
	code -= 100
	s[code/64] |= 1 << (code % 64)
}

// Has reports whether code is in the set.
func (s *StatusSet) Has(code int) bool {
	code -= 100
	return code >= 0 && code < 500 && s[code/64]&(1<<(code%64)) != 0
}

// parseStatuses parses ranges such as "500-599" and "429".
func parseStatuses(specs []string) (StatusSet, error) {
	var set StatusSet
	for i, spec := range specs {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(spec), "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return set, fmt.Errorf("[%d]: %q; want a status 100..599 or a range like 500-599", i, spec)
		}
		for c := a; c <= b; c++ {
			set.Add(c)
		}
	}
	return set, nil
}
