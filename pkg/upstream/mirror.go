package upstream

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Mirror copies a share of an upstream's requests to another upstream, or
// to its own canary pool, and drops the answers: shadow traffic that
// never delays or fails the primary request.
type Mirror struct {
	// Upstream names the upstream the copies go to; Canary sends them to
	// this upstream's canary pool instead. Exactly one.
	Upstream string `yaml:"upstream"`
	Canary   bool   `yaml:"canary"`
	// Percent of requests copied, 0..100, fractions allowed.
	Percent float64 `yaml:"percent"`
	// MaxBodyBytes: a request with a longer body (or one of unknown
	// length) is not copied; default 64 KiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInFlight bounds the copies in flight; over it a copy is dropped
	// (and counted); default 64.
	MaxInFlight int `yaml:"max_in_flight"`
	// Timeout bounds each copy; default 10 s.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate fills defaults and checks the block; errors name fields
// relative to it.
func (m *Mirror) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if (m.Upstream == "") == !m.Canary {
		add("upstream: set either upstream (another upstream's name) or canary: true")
	}
	if m.Percent <= 0 || m.Percent > 100 || math.IsNaN(m.Percent) {
		add("percent: %v; want a share above 0, at most 100", m.Percent)
	}
	if m.MaxBodyBytes == 0 {
		m.MaxBodyBytes = 64 << 10
	}
	if m.MaxBodyBytes < 0 {
		add("max_body_bytes: %d is negative", m.MaxBodyBytes)
	}
	if m.MaxInFlight == 0 {
		m.MaxInFlight = 64
	}
	if m.MaxInFlight < 0 {
		add("max_in_flight: %d is negative", m.MaxInFlight)
	}
	if m.Timeout == 0 {
		m.Timeout = 10 * time.Second
	}
	if m.Timeout < 0 {
		add("timeout: %v is negative", m.Timeout)
	}
	return errors.Join(errs...)
}
