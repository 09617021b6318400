package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// zoneBackend is a backend of a zone that answers 503 while failing.
type zoneBackend struct {
	addr    string
	failing atomic.Bool
}

func startZoneBackend(t *testing.T, name string) *zoneBackend {
	b := &zoneBackend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// Two zones of two nodes, Remora in zone a: zone a takes the traffic;
// with both its nodes failing, traffic moves to zone b without a failed
// request (GETs are retried, the failing nodes ejected); once they are
// back, traffic returns to zone a.
func TestLocalityThroughRemora(t *testing.T) {
	nodes := map[string]*zoneBackend{}
	var list strings.Builder
	for _, n := range []string{"a1", "a2", "b1", "b2"} {
		nodes[n] = startZoneBackend(t, n)
		fmt.Fprintf(&list, "          - {id: %s, address: %q, metadata: {zone: %s}}\n", n, nodes[n].addr, n[:1])
	}
	a := startRemora(t, `admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
zone: a
registries:
  - name: s
    type: static
    static:
      services:
        svc:
`+list.String()+`upstreams:
  - name: svc
    locality: {min_cluster_size: 1}
    retry: {max_attempts: 3}
    health: {passive: {consecutive_gateway_failure: 2, base_ejection_time: 1s, max_ejection_percent: 50, interval: 200ms}}
`)
	eventually(t, 5*time.Second, "four nodes", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 4 })
	send := func(n int) (map[string]int, int) {
		zones, failed := map[string]int{}, 0
		for range n {
			req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
			req.Host = "svc"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed++
				continue
			}
			zones[string(body[:1])]++
		}
		return zones, failed
	}
	if z, failed := send(1000); z["a"] < 990 || failed > 0 {
		t.Fatalf("all healthy: %v, %d failed; want at least 99%% in zone a", z, failed)
	}

	nodes["a1"].failing.Store(true)
	nodes["a2"].failing.Store(true)
	if _, failed := send(200); failed > 0 {
		t.Fatalf("zone a failing: %d requests failed; want every one retried elsewhere", failed)
	}
	eventually(t, 3*time.Second, "zone a ejected", func() bool { return a.Table().Lookup("svc").Snapshot().StableZone == nil })
	if z, failed := send(100); z["b"] != 100 || failed > 0 {
		t.Fatalf("zone a ejected: %v, %d failed; want every request in zone b", z, failed)
	}

	nodes["a1"].failing.Store(false)
	nodes["a2"].failing.Store(false)
	eventually(t, 10*time.Second, "zone a back", func() bool {
		z, _ := send(50)
		return z["a"] >= 49
	})
}
