package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/pkg/admin"
)

// registerView reads GET /register from the admin API at addr; ok is false
// when it answers 404 (nothing to register).
func registerView(t *testing.T, addr string) (st admin.RegisterStatus, ok bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/register")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return st, false
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /register: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st, true
}

// metricsText reads GET /metrics from the admin API at addr.
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// GET /register and the registration metrics follow the registration
// through a lease revoked behind Remora's back (re-registered, and
// counted), a withdrawal while the application fails its checks, and its
// return (the count is kept).
func TestRegisterStatusAndMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	app := startLocalApp(t, "app")
	a := startRemora(t, etcdConfig(srv.Endpoint())+registerBlock(app.port))
	adminAddr := a.addr("admin")
	const (
		upMetric    = `remora_registration_up{registry="main",service="user-service"} `
		reregMetric = `remora_registration_reregistrations_total{registry="main",service="user-service"} `
	)
	view := func() admin.RegisterStatus {
		st, ok := registerView(t, adminAddr)
		if !ok {
			t.Fatal("GET /register: 404 with a register: block")
		}
		return st
	}
	eventually(t, 2*time.Second, "registered and up", func() bool {
		st := view()
		return st.Registered && st.Up && st.AppHealthy && st.RegistrySide != nil && st.RegistrySide.Up
	})
	st := view()
	if st.Registry != "main" || st.Service != "user-service" || st.ID != "app-1" || st.Port != app.port || st.Weight != 100 || st.Reregistrations != 0 {
		t.Fatalf("GET /register: %+v", st)
	}
	if m := metricsText(t, adminAddr); !strings.Contains(m, upMetric+"1\n") || !strings.Contains(m, reregMetric+"0\n") {
		t.Fatalf("/metrics lacks the registration's series:\n%s", grepLines(m, "remora_registration"))
	}

	// The lease revoked by hand: the key goes with it, the reconciler
	// notices at its next keep-alive (a third of the 10 s TTL) and
	// registers again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := srv.Client().Get(ctx, registrationKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the registration: %v %v", resp, err)
	}
	if _, err := srv.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 6*time.Second, "re-registered and counted", func() bool {
		st := view()
		return st.Up && st.Reregistrations == 1
	})
	t.Logf("re-registered %v after the lease was revoked", took)
	if _, ok, _ := etcdConsumer(srv).read(t); !ok {
		t.Fatal("counted as re-registered, but the key is missing")
	}
	if m := metricsText(t, adminAddr); !strings.Contains(m, reregMetric+"1\n") {
		t.Fatalf("/metrics does not count the re-registration:\n%s", grepLines(m, "remora_registration"))
	}

	// Withdrawn while the application fails its checks.
	app.healthy.Store(false)
	eventually(t, 2*time.Second, "withdrawn", func() bool {
		st := view()
		return !st.Registered && !st.Up && !st.AppHealthy && st.LastCheckError != "" && st.RegistrySide == nil && st.Weight == 0
	})
	if m := metricsText(t, adminAddr); !strings.Contains(m, upMetric+"0\n") {
		t.Fatalf("/metrics while withdrawn:\n%s", grepLines(m, "remora_registration"))
	}
	// Back: a new registration, and the count goes on from 1.
	app.healthy.Store(true)
	eventually(t, 2*time.Second, "registered again", func() bool { st := view(); return st.Registered && st.Up })
	if st := view(); st.Reregistrations != 1 {
		t.Fatalf("re-registrations after a withdrawal: %d; want the count kept (1)", st.Reregistrations)
	}
	if m := metricsText(t, adminAddr); !strings.Contains(m, upMetric+"1\n") || !strings.Contains(m, reregMetric+"1\n") {
		t.Fatalf("/metrics after the return:\n%s", grepLines(m, "remora_registration"))
	}
}

// Without a register: block, GET /register answers 404 and /metrics has no
// registration series.
func TestRegisterViewWithoutRegistration(t *testing.T) {
	a := startRemora(t, reloadConfig([]string{"127.0.0.1:1"}, ""))
	if _, ok := registerView(t, a.addr("admin")); ok {
		t.Fatal("GET /register answers without a register: block")
	}
	if m := metricsText(t, a.addr("admin")); strings.Contains(m, "remora_registration_") {
		t.Fatalf("/metrics has registration series without a register: block:\n%s", grepLines(m, "remora_registration"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
