package admin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// undrainSource can take back a drain, unless it is shutting down.
type undrainSource struct {
	source
	stopping bool
}

func (s *undrainSource) Undrain() error {
	if s.stopping {
		return errors.New("shutting down")
	}
	s.draining.Store(false)
	return nil
}

func do(t *testing.T, h http.Handler, method, path, token string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:15000"+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.String()
}

// POST /undrain takes back POST /drain; it is refused while shutting
// down, and where the source cannot undrain.
func TestUndrain(t *testing.T) {
	for _, tc := range []struct {
		name         string
		src          admin.Source
		code         int
		wantDraining bool
	}{
		{"after drain", &undrainSource{}, 200, false},
		{"shutting down", &undrainSource{stopping: true}, 409, true},
		{"not supported", &source{}, 501, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch s := tc.src.(type) {
			case *undrainSource:
				s.table = upstream.NewTable()
			case *source:
				s.table = upstream.NewTable()
			}
			h := admin.Handler(tc.src, admin.Options{})
			if code, _, body := do(t, h, "POST", "/drain", ""); code != 200 || !tc.src.Draining() {
				t.Fatalf("drain: %d %s", code, body)
			}
			code, _, body := do(t, h, "POST", "/undrain", "")
			if code != tc.code || tc.src.Draining() != tc.wantDraining {
				t.Fatalf("undrain: %d %s, draining %v; want %d, draining %v", code, body, tc.src.Draining(), tc.code, tc.wantDraining)
			}
			want := 200
			if tc.wantDraining {
				want = 503
			}
			if code, _, body := do(t, h, "GET", "/readyz", ""); code != want {
				t.Fatalf("readyz: %d %s; want %d", code, body, want)
			}
		})
	}
}

// ?format=text: one line per node (and one for an upstream without
// nodes), columns split by blanks.
func TestUpstreamsText(t *testing.T) {
	reg := discoverytest.NewRegistry()
	users := upstream.New(upstream.Config{Name: "users", Service: "user-service", InitialSyncTimeout: time.Hour})
	empty := upstream.New(upstream.Config{Name: "empty", InitialSyncTimeout: time.Hour})
	waiting := upstream.New(upstream.Config{Name: "waiting", InitialSyncTimeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg.Set("user-service",
		discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true},
		discovery.Instance{ID: "b b", Address: "fd00::2", Port: 8080, Weight: 0, Healthy: true},
	)
	reg.Set("empty")
	for _, u := range []*upstream.Upstream{users, empty} {
		w, _ := reg.Watch(ctx, u.Service())
		go u.Run(ctx, w)
	}
	for users.Snapshot().Version == 0 || empty.Snapshot().Version == 0 {
		time.Sleep(time.Millisecond)
	}
	users.Snapshot().Nodes[0].Stats.Requests.Add(12)
	users.Snapshot().Nodes[0].Stats.Failures.Add(3)
	users.Snapshot().Nodes[0].Stats.Health.Eject(node.Consecutive5xx, time.Now().Add(90*time.Minute))
	h := admin.Handler(&source{table: upstream.NewTable(users, empty, waiting)}, admin.Options{})

	for _, tc := range []struct {
		path  string
		code  int
		lines [][]string // fields of each line after the header
	}{
		{"/upstreams?format=text", 200, [][]string{
			{"empty", "-", "-", "-", "no_nodes", "0", "0", "0", "-", "-", "synced"},
			{"users", "a", "10.0.0.1:80", "stable", "ejected", "0", "12", "3", "0.000", "~consecutive_5xx,1h", "synced"},
			{"users", "b_b", "[fd00::2]:8080", "stable", "draining", "0", "0", "0", "0.000", "-", "synced"},
			{"waiting", "-", "-", "-", "not_synced", "0", "0", "0", "-", "-", "waiting"},
		}},
		{"/upstreams/users?format=text", 200, [][]string{
			{"users", "a", "10.0.0.1:80", "stable", "ejected", "0", "12", "3", "0.000", "~consecutive_5xx,1h", "synced"},
			{"users", "b_b", "[fd00::2]:8080", "stable", "draining", "0", "0", "0", "0.000", "-", "synced"},
		}},
		{"/upstreams?format=xml", 400, nil},
	} {
		code, hdr, body := do(t, h, "GET", tc.path, "")
		if code != tc.code {
			t.Fatalf("%s: %d %s", tc.path, code, body)
		}
		if tc.lines == nil {
			continue
		}
		if !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: content type %q", tc.path, hdr.Get("Content-Type"))
		}
		lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
		if got := strings.Fields(lines[0]); strings.Join(got, " ") != "UPSTREAM NODE ADDRESS POOL STATE IN_FLIGHT REQUESTS FAILURES LATENCY_MS EJECTED REGISTRY" {
			t.Errorf("%s: header %q", tc.path, lines[0])
		}
		if len(lines)-1 != len(tc.lines) {
			t.Fatalf("%s: %d lines; want %d:\n%s", tc.path, len(lines)-1, len(tc.lines), body)
		}
		for i, want := range tc.lines {
			got := strings.Fields(lines[i+1])
			if len(got) != len(want) {
				t.Errorf("%s line %d: %q; want %q", tc.path, i+1, got, want)
				continue
			}
			for j := range want {
				// "~PREFIX" matches a field that starts with PREFIX.
				if p, ok := strings.CutPrefix(want[j], "~"); ok && strings.HasPrefix(got[j], p) || got[j] == want[j] {
					continue
				}
				t.Errorf("%s line %d field %d: %q; want %q (line %q)", tc.path, i+1, j, got[j], want[j], lines[i+1])
			}
		}
	}
}
