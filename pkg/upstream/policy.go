package upstream

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/pkg/health"
)

// Policy is an upstream's traffic policy: retries, timeouts, circuit
// breaking and rate limiting. It is immutable once the upstream is built.
type Policy struct {
	Retry          Retry          `yaml:"retry"`
	Timeouts       Timeouts       `yaml:"timeouts"`
	CircuitBreaker CircuitBreaker `yaml:"circuit_breaker"`
	// RateLimit refuses what comes faster (HTTP: 429 with Retry-After; a
	// tcp upstream closes the connection); none unless set.
	RateLimit *RateLimit `yaml:"rate_limit"`

	retryStatus health.StatusSet // statuses worth a retry
	retryGRPC   uint32           // bit per gRPC code worth a retry
}

// Retry configures retries.
type Retry struct {
	// MaxAttempts is the most attempts per request, the first included;
	// default 2. A connect error is retried on another node whatever the
	// method; a retryable status or a reset only for idempotent methods
	// or bodies small enough to replay.
	MaxAttempts int `yaml:"max_attempts"`
	// Statuses that are retried on another node; default 502, 503, 504.
	Statuses []int `yaml:"statuses"`
	// MaxBodyBytes is the largest request body buffered so it can be
	// replayed; default 64 KiB; larger bodies are not retried once sent.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// BudgetPercent caps retries in flight at this share of requests in
	// flight, so retries cannot multiply an outage; default 20.
	BudgetPercent *int `yaml:"budget_percent"`
	// MinRetries are always allowed whatever the budget; default 3.
	MinRetries *int `yaml:"min_retries"`
	// GRPCStatuses are the gRPC codes (names such as UNAVAILABLE, or
	// numbers) retried on another node when a call ends with one before
	// anything of its answer went to the client (a trailers-only answer);
	// default [UNAVAILABLE].
	GRPCStatuses []string `yaml:"grpc_statuses"`
}

// Timeouts bound each request; 0 means none unless a default is stated.
type Timeouts struct {
	// Connect bounds dialing a node; default: the proxy's connect_timeout.
	Connect time.Duration `yaml:"connect"`
	// PerTry bounds each attempt until the response headers arrive.
	PerTry time.Duration `yaml:"per_try"`
	// Total bounds the whole request, retries and body included.
	Total time.Duration `yaml:"total"`
	// Idle closes keep-alive connections to nodes idle this long; default:
	// the proxy's idle_conn_timeout.
	Idle time.Duration `yaml:"idle"`
}

// CircuitBreaker limits concurrency; 0 means unlimited.
type CircuitBreaker struct {
	// MaxRequests bounds requests in flight to the upstream.
	MaxRequests int `yaml:"max_requests"`
	// MaxRequestsPerNode bounds requests in flight to one node.
	MaxRequestsPerNode int `yaml:"max_requests_per_node"`
}

// Validate fills defaults and checks the policy; errors name fields.
func (p *Policy) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	r := &p.Retry
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 2
	}
	if r.MaxAttempts < 1 || r.MaxAttempts > 10 {
		add("retry.max_attempts: %d; want 1..10", r.MaxAttempts)
	}
	if r.Statuses == nil {
		r.Statuses = []int{502, 503, 504}
	}
	for i, s := range r.Statuses {
		if s < 200 || s > 599 {
			add("retry.statuses[%d]: %d; want a status 200..599", i, s)
			continue
		}
		p.retryStatus.Add(s)
	}
	if r.MaxBodyBytes == 0 {
		r.MaxBodyBytes = 64 << 10
	}
	if r.MaxBodyBytes < 0 {
		add("retry.max_body_bytes: %d is negative", r.MaxBodyBytes)
	}
	if r.BudgetPercent == nil {
		v := 20
		r.BudgetPercent = &v
	}
	if r.MinRetries == nil {
		v := 3
		r.MinRetries = &v
	}
	if *r.BudgetPercent < 0 || *r.BudgetPercent > 100 {
		add("retry.budget_percent: %d; want 0..100", *r.BudgetPercent)
	}
	if *r.MinRetries < 0 {
		add("retry.min_retries: %d is negative", *r.MinRetries)
	}
	if r.GRPCStatuses == nil {
		r.GRPCStatuses = []string{"UNAVAILABLE"}
	}
	for i, name := range r.GRPCStatuses {
		code, ok := GRPCCode(name)
		if !ok {
			add("retry.grpc_statuses[%d]: %q is not a gRPC code; want a name such as UNAVAILABLE or RESOURCE_EXHAUSTED, or 0..16", i, name)
			continue
		}
		p.retryGRPC |= 1 << code
	}
	if rl := p.RateLimit; rl != nil {
		switch {
		case rl.RequestsPerSecond <= 0 || math.IsInf(rl.RequestsPerSecond, 0) || math.IsNaN(rl.RequestsPerSecond):
			add("rate_limit.requests_per_second: %v; want a positive rate", rl.RequestsPerSecond)
		case rl.Burst < 0:
			add("rate_limit.burst: %d is negative", rl.Burst)
		case rl.Burst == 0:
			rl.Burst = max(1, int(math.Ceil(rl.RequestsPerSecond)))
		}
	}
	t := p.Timeouts
	for name, d := range map[string]time.Duration{"connect": t.Connect, "per_try": t.PerTry, "total": t.Total, "idle": t.Idle} {
		if d < 0 {
			add("timeouts.%s: %v is negative", name, d)
		}
	}
	if p.CircuitBreaker.MaxRequests < 0 || p.CircuitBreaker.MaxRequestsPerNode < 0 {
		add("circuit_breaker: limits must not be negative")
	}
	return errors.Join(errs...)
}

// RetryableStatus reports whether a response status is worth a retry.
func (p *Policy) RetryableStatus(code int) bool {
	return p.retryStatus.Has(code)
}

// RetryableGRPC reports whether a gRPC code is worth a retry.
func (p *Policy) RetryableGRPC(code int) bool {
	return code >= 0 && code < 32 && p.retryGRPC&(1<<code) != 0
}

// grpcCodes are the gRPC status codes by number (google.golang.org/grpc/codes).
var grpcCodes = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// GRPCCode parses a gRPC code by name (UNAVAILABLE, any case) or number.
func GRPCCode(s string) (int, bool) {
	for i, name := range grpcCodes {
		if strings.EqualFold(s, name) {
			return i, true
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0 && n < len(grpcCodes)
}

// GRPCCodeName names a gRPC code ("UNAVAILABLE"), or gives its number.
func GRPCCodeName(code int) string {
	if code >= 0 && code < len(grpcCodes) {
		return grpcCodes[code]
	}
	return strconv.Itoa(code)
}
