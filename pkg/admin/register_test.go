package admin_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// registeringSource is a source with a registration (ok false: no
// register: block).
type registeringSource struct {
	source
	reg admin.Registration
	ok  bool
}

func (s *registeringSource) Registration() (admin.Registration, bool) { return s.reg, s.ok }

func TestRegister(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	failedAt := since.Add(-time.Minute)
	base := register.Status{Service: "user-service", ID: "app-1", Address: "10.0.0.7", Port: 8080}
	with := func(f func(*register.Status)) register.Status {
		st := base
		f(&st)
		return st
	}
	tests := []struct {
		name string
		src  admin.Source
		// code and view are GET /register's answer (view when 200);
		// metrics the lines /metrics must have, absent those it must not.
		code    int
		view    admin.RegisterStatus
		metrics []string
		absent  []string
	}{
		{
			name: "a source that cannot register", src: &source{table: upstream.NewTable()},
			code: 404, absent: []string{"remora_registration_"},
		},
		{
			name: "no register: block", src: &registeringSource{source: source{table: upstream.NewTable()}},
			code: 404, absent: []string{"remora_registration_"},
		},
		{
			name: "registered, the registry holds it",
			src: &registeringSource{source: source{table: upstream.NewTable()}, ok: true, reg: admin.Registration{
				Registry: "main", Reregistrations: 3,
				Status: with(func(st *register.Status) {
					st.Healthy, st.Registered, st.Weight = true, true, 100
					st.Registration = &discovery.RegistrationStatus{Up: true, Since: since, LastError: "etcd: lease lost", LastErrorAt: failedAt, Reregistrations: 1}
				}),
			}},
			code: 200,
			view: admin.RegisterStatus{
				Registry: "main", Service: "user-service", ID: "app-1", Address: "10.0.0.7", Port: 8080,
				AppHealthy: true, Registered: true, Weight: 100, Up: true, Reregistrations: 3,
				RegistrySide: &admin.RegistrySide{Up: true, Since: since, LastError: "etcd: lease lost", LastErrorAt: &failedAt},
			},
			metrics: []string{
				`remora_registration_up{registry="main",service="user-service"} 1`,
				`remora_registration_reregistrations_total{registry="main",service="user-service"} 3`,
			},
		},
		{
			name: "registered, the registry does not hold it",
			src: &registeringSource{source: source{table: upstream.NewTable()}, ok: true, reg: admin.Registration{
				Registry: "main",
				Status: with(func(st *register.Status) {
					st.Healthy, st.Registered, st.Weight = true, true, 10
					st.Registration = &discovery.RegistrationStatus{Since: since, LastError: "no answer", LastErrorAt: failedAt}
				}),
			}},
			code: 200,
			view: admin.RegisterStatus{
				Registry: "main", Service: "user-service", ID: "app-1", Address: "10.0.0.7", Port: 8080,
				AppHealthy: true, Registered: true, Weight: 10,
				RegistrySide: &admin.RegistrySide{Since: since, LastError: "no answer", LastErrorAt: &failedAt},
			},
			metrics: []string{
				`remora_registration_up{registry="main",service="user-service"} 0`,
				`remora_registration_reregistrations_total{registry="main",service="user-service"} 0`,
			},
		},
		{
			name: "withdrawn: the application fails its checks",
			src: &registeringSource{source: source{table: upstream.NewTable()}, ok: true, reg: admin.Registration{
				Registry: "dc1", Reregistrations: 2,
				Status: with(func(st *register.Status) { st.LastCheckError = "GET /health: 503" }),
			}},
			code: 200,
			view: admin.RegisterStatus{
				Registry: "dc1", Service: "user-service", ID: "app-1", Address: "10.0.0.7", Port: 8080,
				LastCheckError: "GET /health: 503", Reregistrations: 2,
			},
			metrics: []string{
				`remora_registration_up{registry="dc1",service="user-service"} 0`,
				`remora_registration_reregistrations_total{registry="dc1",service="user-service"} 2`,
			},
		},
		{
			name: "registered in a registry whose adapter does not report",
			src: &registeringSource{source: source{table: upstream.NewTable()}, ok: true, reg: admin.Registration{
				Registry: "nacos",
				Status:   with(func(st *register.Status) { st.Healthy, st.Registered, st.Weight = true, true, 100 }),
			}},
			code: 200,
			view: admin.RegisterStatus{
				Registry: "nacos", Service: "user-service", ID: "app-1", Address: "10.0.0.7", Port: 8080,
				AppHealthy: true, Registered: true, Weight: 100, Up: true,
			},
			metrics: []string{`remora_registration_up{registry="nacos",service="user-service"} 1`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := admin.Handler(tc.src, admin.Options{})
			code, body := get(t, h, "/register")
			if code != tc.code {
				t.Fatalf("GET /register: %d %s; want %d", code, body, tc.code)
			}
			if code == 200 {
				var got admin.RegisterStatus
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.view) {
					t.Fatalf("GET /register:\n got %+v\nwant %+v\n%s", got, tc.view, body)
				}
			} else if !strings.Contains(body, "register:") {
				t.Fatalf("GET /register: %d %s; want the reason", code, body)
			}
			_, metrics := get(t, h, "/metrics")
			for _, want := range tc.metrics {
				if !strings.Contains(metrics, want+"\n") {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			for _, no := range tc.absent {
				if strings.Contains(metrics, no) {
					t.Errorf("/metrics has %s", no)
				}
			}
		})
	}
}

// GET /register needs the admin token like the other views.
func TestRegisterNeedsTheToken(t *testing.T) {
	src := &registeringSource{source: source{table: upstream.NewTable()}, ok: true, reg: admin.Registration{Registry: "main", Status: register.Status{Service: "s"}}}
	h := admin.Handler(src, admin.Options{Token: func() string { return "t0ken" }})
	if code, _ := get(t, h, "/register"); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d", code)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:15000/register", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("with the token: %d %s", rec.Code, rec.Body)
	}
}
