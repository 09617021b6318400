package proxy_test

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// An answer whose node breaks it off after the head (it closes with the
// body short) is the node's failure, on the direct path and on
// ReverseProxy's (a chunked body): the client sees it broken, the node's
// stats count a failure, outlier detection a gateway failure, and the
// metrics a failed request, not a 200. It used to count as a success.
func TestAnswerBrokenOffByTheNodeIsItsFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"direct", false}, {"reverse proxy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "users")
			b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
				if !tc.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(10000))
				}
				w.WriteHeader(200)
				_, _ = w.Write(make([]byte, 5000))
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
				panic(http.ErrAbortHandler) // the node's server closes the connection
			})
			f.reg.Set("users", b.instance())
			u := f.ups["users"]
			for u.Snapshot().Available == 0 {
				time.Sleep(time.Millisecond)
			}
			req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/x", nil)
			req.Host = "users"
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("the client read a broken answer as whole")
			}
			n := u.Snapshot().Nodes[0]
			deadline := time.Now().Add(5 * time.Second)
			for n.Stats.InFlight.Load() != 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			m := u.Metrics()
			if f := n.Stats.Failures.Load(); f != 1 {
				t.Errorf("node failures: %d; want 1", f)
			}
			if ok := m.Requests[0][2].Load(); ok != 0 {
				t.Errorf("%d requests counted 2xx; want the broken one counted as failed", ok)
			}
			if bad := m.Requests[0][5].Load(); bad != 1 {
				t.Errorf("%d requests counted 5xx; want 1", bad)
			}
		})
	}
}
