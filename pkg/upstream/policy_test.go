package upstream_test

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/upstream"
)

// TestRetryStatuses: every status 200..599 may be listed, to the last.
func TestRetryStatuses(t *testing.T) {
	p := &upstream.Policy{Retry: upstream.Retry{Statuses: []int{200, 429, 503, 599}}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]bool{199: false, 200: true, 429: true, 502: false, 503: true, 598: false, 599: true, 600: false} {
		if got := p.RetryableStatus(code); got != want {
			t.Errorf("RetryableStatus(%d) = %v; want %v", code, got, want)
		}
	}
}
