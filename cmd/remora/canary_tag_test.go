package main

import (
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/pkg/admin"
)

// Canary by tagging alone: on an upstream without a canary: block, an
// instance tagged canary=true in the registry gets the share its
// canary-weight label gives, none without one, and its equal share again
// once the tag is removed; every step is a re-tag in etcd, with no change
// to Remora's config.
func TestCanaryByTaggingAlone(t *testing.T) {
	srv := etcdtest.Start(t)
	s1, s2, c := startBackend(t, "s1"), startBackend(t, "s2"), startBackend(t, "c")
	srv.Put("/services/user-service/s1", s1.value(""))
	srv.Put("/services/user-service/s2", s2.value(""))
	srv.Put("/services/user-service/c", c.value(`{"canary":"true","canary-weight":"10"}`))
	a := startRemora(t, etcdConfig(srv.Endpoint())) // no canary: block
	// split reads the published canary split; weight -1 without one.
	split := func() (weight float64, canaries, stable int) {
		s := a.Table().Lookup("user-service").Snapshot()
		if s.Canary == nil {
			return -1, 0, s.StableAvailable
		}
		return s.Canary.Weight, s.Canary.Available, s.StableAvailable
	}
	// The split is published with the nodes it splits.
	eventually(t, 5*time.Second, "three nodes", func() bool { return available(a) == 3 })

	t.Run("canary-weight 10: 10% of the requests", func(t *testing.T) {
		const n, p = 4000, 0.10
		counts := send(t, a, n)
		// The canary's count is binomial(n, p); 5 standard deviations
		// (±95 of 400) fail a correct split about once in 1.7 million runs.
		tol := 5 * math.Sqrt(n*p*(1-p))
		if got := float64(counts["c"]); math.Abs(got-n*p) > tol {
			t.Fatalf("the canary got %v of %d requests; want %v ± %.0f (%v)", got, n, n*p, tol, counts)
		}
		if counts["s1"]+counts["s2"]+counts["c"] != n {
			t.Fatalf("answers %v; want %d from s1, s2 and c", counts, n)
		}
		t.Logf("the canary got %d of %d requests", counts["c"], n)
	})

	t.Run("tagged without a weight: no traffic, but x-canary: always reaches it", func(t *testing.T) {
		srv.Put("/services/user-service/c", c.value(`{"canary":"true"}`))
		eventually(t, 2*time.Second, "canary weight 0", func() bool {
			w, canaries, _ := split()
			return w == 0 && canaries == 1
		})
		if counts := send(t, a, 400); counts["c"] != 0 || counts["s1"]+counts["s2"] != 400 {
			t.Fatalf("a canary without a weight got traffic: %v", counts)
		}
		for i := 0; i < 10; i++ {
			if got := sendAlways(t, a); got != "c" {
				t.Fatalf("x-canary: always went to %q; want the canary", got)
			}
		}
		var st admin.UpstreamStatus
		getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
		if st.Canary == nil || st.Canary.Weight != 0 || st.Canary.WeightFrom != "config" || st.Canary.Available != 1 || st.Nodes[0].ID != "c" || st.Nodes[0].Pool != "canary" {
			t.Fatalf("/upstreams: canary %+v, nodes %+v", st.Canary, st.Nodes)
		}
	})

	t.Run("untagged: an equal share at once", func(t *testing.T) {
		srv.Put("/services/user-service/c", c.value(""))
		eventually(t, 2*time.Second, "three stable nodes", func() bool {
			_, canaries, stable := split()
			return canaries == 0 && stable == 3
		})
		if counts := send(t, a, 300); counts["s1"] != 100 || counts["s2"] != 100 || counts["c"] != 100 {
			t.Fatalf("spread %v; want 100 each", counts)
		}
	})
}

// sendAlways makes one request for user-service with x-canary: always and
// returns the backend that answered.
func sendAlways(t *testing.T, a *app) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
	req.Host = "user-service"
	req.Header.Set("X-Canary", "always")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Backend")
}
