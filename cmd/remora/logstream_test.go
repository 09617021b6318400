package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A log reader that goes away or stalls never stops Remora: with the
// access log on standard output, a pipe whose reader closed (a log
// shipper that restarted) used to end the process with SIGPIPE at the
// first request, and a pipe nobody reads (a stalled shipper) to block
// every request once its buffer was full. The requests are answered, and
// the process runs on.
func TestLogReaderGoneOrStalled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		closed bool // the reader closed its end at once; else it reads nothing
	}{{"reader gone", true}, {"reader stalled", false}} {
		t.Run(tc.name, func(t *testing.T) {
			users := startBackend(t, "users")
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if tc.closed {
				r.Close()
			} else {
				defer r.Close()
			}
			admin, outbound := freeAddr(t), freeAddr(t)
			path := filepath.Join(t.TempDir(), "remora.yaml")
			(&process{path: path}).write(t, fmt.Sprintf(`
admin: {address: %q}
access_log: {enabled: true}
listeners: [{name: outbound, address: %q}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams: [{name: users}]
`, admin, outbound, users.srv.Listener.Addr().String()))
			p := launchProcessTo(t, admin, path, w)
			p.waitReady(t)
			// 300 lines of over 1 KiB: four times what a pipe holds.
			long := "/" + strings.Repeat("x", 1024)
			c := &http.Client{Timeout: 5 * time.Second}
			for i := range 300 {
				req, _ := http.NewRequest(http.MethodGet, "http://"+outbound+long, nil)
				req.Host = "users"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, errors.Unwrap(err))
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %d", i, resp.StatusCode)
				}
			}
			if !p.running() {
				t.Fatalf("remora exited (%v):\n%s", p.err, p.logs.String())
			}
		})
	}
}
