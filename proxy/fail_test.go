package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"

	"github.com/remora-mesh/remora/pkg/upstream"
)

// What a failure is answered with: Remora's own shortage of descriptors,
// ports or memory is 503 (the service is unavailable here, no node
// failed), as the access log's local_resources says; a node's refusal 502.
func TestFailStatus(t *testing.T) {
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)}
	}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: %w", upstream.ErrLocalResources, dial(syscall.EMFILE)), http.StatusServiceUnavailable},
		{dial(syscall.ECONNREFUSED), http.StatusBadGateway},
		{upstream.ErrNotSynced, http.StatusServiceUnavailable},
	} {
		p := New(Options{})
		w := httptest.NewRecorder()
		p.fail(w, httptest.NewRequest(http.MethodGet, "/", nil), nil, tc.err)
		if w.Code != tc.want {
			t.Errorf("%v: %d; want %d", tc.err, w.Code, tc.want)
		}
		p.Close()
	}
}
