package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/upstream"
)

type source struct {
	table    *upstream.Table
	draining atomic.Bool
}

func (s *source) Table() *upstream.Table { return s.table }
func (s *source) Draining() bool         { return s.draining.Load() }
func (s *source) Drain()                 { s.draining.Store(true) }

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:15000"+path, nil))
	return rec.Code, rec.Body.String()
}

func TestAdmin(t *testing.T) {
	reg := discoverytest.NewRegistry()
	users := upstream.New(upstream.Config{Name: "users", Service: "user-service", InitialSyncTimeout: time.Hour})
	orders := upstream.New(upstream.Config{Name: "orders", InitialSyncTimeout: time.Hour})
	src := &source{table: upstream.NewTable(users, orders)}
	h := admin.Handler(src, admin.Options{})

	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, `"orders"`) || !strings.Contains(body, `"users"`) {
		t.Fatalf("readyz before sync: %d %s", code, body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drained := discovery.Instance{ID: "b", Address: "10.0.0.2", Port: 80, Weight: 0, Healthy: true}
	reg.Set("user-service",
		discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 3, Healthy: true, Metadata: map[string]string{"canary": "true"}},
		drained,
		discovery.Instance{ID: "c", Address: "10.0.0.3", Port: 80, Weight: 1, Healthy: false},
	)
	for _, u := range []*upstream.Upstream{users, orders} {
		w, _ := reg.Watch(ctx, u.Service())
		go u.Run(ctx, w)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !src.table.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not synced")
		}
		time.Sleep(time.Millisecond)
	}
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("readyz after sync: %d", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://127.0.0.1:15000/drain", nil))
	if rec.Code != 200 {
		t.Fatalf("POST /drain: %d", rec.Code)
	}
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, `"draining": true`) {
		t.Fatalf("readyz while draining: %d %s", code, body)
	}

	code, body := get(t, h, "/upstreams/users")
	var st admin.UpstreamStatus
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("%d %v %s", code, err, body)
	}
	if st.Service != "user-service" || !st.Synced || st.Available != 1 || len(st.Nodes) != 3 {
		t.Fatalf("status %+v", st)
	}
	want := map[string]string{"a": "available", "b": "draining", "c": "unhealthy"}
	for _, n := range st.Nodes {
		if n.State != want[n.ID] {
			t.Errorf("node %s state %q; want %q", n.ID, n.State, want[n.ID])
		}
	}
	if st.Nodes[0].Metadata["canary"] != "true" || st.Nodes[0].Weight != 3 {
		t.Fatalf("node a: %+v", st.Nodes[0])
	}

	code, body = get(t, h, "/upstreams")
	var all []admin.UpstreamStatus
	if err := json.Unmarshal([]byte(body), &all); code != 200 || err != nil || len(all) != 2 || all[0].Name != "orders" {
		t.Fatalf("%d %v %s", code, err, body)
	}
	if code, body := get(t, h, "/upstreams/nope"); code != 404 || !strings.Contains(body, "orders") {
		t.Fatalf("unknown upstream: %d %s", code, body)
	}
}

// TestStatusShowsCanaryLabelError: /upstreams shows, in the canary
// block, a canary instance's weight label that is not a percentage (and
// so is ignored).
func TestStatusShowsCanaryLabelError(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc", discovery.Instance{ID: "c1", Address: "127.0.0.1", Port: 1, Weight: 1, Healthy: true,
		Metadata: map[string]string{"canary": "true", "canary-weight": "abc"}})
	u := upstream.New(upstream.Config{Name: "svc", Canary: canary.DefaultRule()})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := reg.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for u.Snapshot().Version == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	c := admin.Status(u).Canary
	if c == nil || !strings.Contains(c.LabelError, `canary-weight: "abc"`) || !strings.Contains(c.LabelError, "c1") {
		t.Fatalf("canary status %+v; want a label_error naming c1 and canary-weight \"abc\"", c)
	}
	body, err := json.Marshal(c)
	if err != nil || !strings.Contains(string(body), `"label_error":`) {
		t.Fatalf("canary block %s (%v); want label_error in it", body, err)
	}
}
