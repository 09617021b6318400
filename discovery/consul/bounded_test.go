package consul

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
)

// An agent's answer is bounded: one instance with a huge Meta value (a
// bug, a hostile registration) was read whole, at every change, until
// the sidecar ran out of memory. Over the bound the watch reports an
// error naming it, as for an unreachable agent (the upstream keeps its
// nodes, stale); at the bound, and under it, the set comes through,
// with or without a Content-Length.
func TestAgentAnswerIsBounded(t *testing.T) {
	defer func(old int64) { maxAnswerBytes = old }(maxAnswerBytes)
	maxAnswerBytes = 4 << 10
	entry := func(meta string) string {
		return fmt.Sprintf(`[{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"ID":"a","Service":"svc","Address":"127.0.0.1","Port":8080,"Meta":{"k":%q}},"Checks":[]}]`, meta)
	}
	size := len(entry(""))
	for _, tc := range []struct {
		name    string
		meta    int // bytes of the Meta value
		chunked bool
		wantErr bool
	}{
		{"small", 10, false, false},
		{"at the bound", int(maxAnswerBytes) - size, false, false},
		{"at the bound, chunked", int(maxAnswerBytes) - size, true, false},
		{"over the bound", int(maxAnswerBytes) - size + 1, false, true},
		{"over the bound, chunked", int(maxAnswerBytes) - size + 1, true, true},
		{"far over the bound, chunked", 1 << 20, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := entry(strings.Repeat("x", tc.meta))
			agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Consul-Index", "10")
				w.Header().Set("X-Consul-Knownleader", "true")
				w.Header().Set("Content-Type", "application/json")
				if tc.chunked {
					w.(http.Flusher).Flush() // no Content-Length
				}
				w.Write([]byte(body))
			}))
			defer agent.Close()
			o, err := parseYAML(t, "address: "+strings.TrimPrefix(agent.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			reg, err := o.Open(discovery.Env{Name: "c"})
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			w, err := reg.Watch(context.Background(), "svc")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			set, err := w.Next(ctx)
			switch {
			case tc.wantErr && (err == nil || !strings.Contains(err.Error(), "larger than 4096 bytes")):
				t.Fatalf("%d bytes: Next = %d instances, %v; want the error naming the bound", len(body), len(set), err)
			case !tc.wantErr && (err != nil || len(set) != 1):
				t.Fatalf("%d bytes: Next = %v, %v; want the instance", len(body), set, err)
			}
		})
	}
}
