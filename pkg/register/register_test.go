package register

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/health"
)

type fakeRegistrar struct {
	mu      sync.Mutex
	current *discovery.Instance
	events  []string
}

func (f *fakeRegistrar) Register(_ context.Context, service string, in discovery.Instance) (discovery.Registration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = &in
	f.events = append(f.events, "register")
	return fakeRegistration{f}, nil
}

type fakeRegistration struct{ f *fakeRegistrar }

func (r fakeRegistration) Update(_ context.Context, in discovery.Instance) error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	r.f.current = &in
	r.f.events = append(r.f.events, "update")
	return nil
}

func (r fakeRegistration) Deregister(context.Context) error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	r.f.current = nil
	r.f.events = append(r.f.events, "deregister")
	return nil
}

func (f *fakeRegistrar) get() (*discovery.Instance, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current, append([]string(nil), f.events...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestAgentFollowsApplicationHealth(t *testing.T) {
	t.Setenv(LabelsEnv, "version=v2, canary=true")
	var healthy atomic.Bool
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !healthy.Load() {
			w.WriteHeader(503)
		}
	}))
	defer app.Close()
	port := app.Listener.Addr().(*net.TCPAddr).Port
	cfg := Config{Service: "users", Port: port, Address: "10.1.2.3", Metadata: map[string]string{"zone": "z1", "version": "v1"},
		Health: &health.Active{Interval: 10 * time.Millisecond, HealthyThreshold: 2, UnhealthyThreshold: 3}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistrar{}
	l := logrus.New()
	l.SetOutput(io.Discard)
	a := NewAgent(cfg, f, logrus.NewEntry(l))
	go a.Run(context.Background())

	time.Sleep(50 * time.Millisecond)
	if cur, _ := f.get(); cur != nil {
		t.Fatal("registered while the application is unhealthy")
	}
	healthy.Store(true)
	waitFor(t, "registered", func() bool { cur, _ := f.get(); return cur != nil })
	cur, _ := f.get()
	if cur.Address != "10.1.2.3" || cur.Port != port || cur.Weight != 100 || cur.Metadata["canary"] != "true" ||
		cur.Metadata["version"] != "v2" || cur.Metadata["zone"] != "z1" {
		t.Fatalf("registered %+v", cur)
	}
	healthy.Store(false)
	waitFor(t, "deregistered", func() bool { cur, _ := f.get(); return cur == nil })
	healthy.Store(true)
	waitFor(t, "registered again", func() bool { cur, _ := f.get(); return cur != nil })
	if !a.Deregister(context.Background()) {
		t.Fatal("Deregister found nothing registered")
	}
	_, events := f.get()
	if strings.Join(events, ",") != "register,deregister,register,deregister" {
		t.Fatalf("events %v", events)
	}
	if a.Deregister(context.Background()) {
		t.Fatal("a second Deregister withdrew again")
	}
}

func TestWarmWeight(t *testing.T) {
	a := &Agent{cfg: Config{Weight: 100, Warmup: 10 * time.Second}}
	prev := uint32(0)
	for _, el := range []time.Duration{0, time.Second, 5 * time.Second, 9 * time.Second, 10 * time.Second, time.Minute} {
		w := a.warmWeight(el)
		if w < prev {
			t.Fatalf("weight fell from %d to %d at %v", prev, w, el)
		}
		prev = w
	}
	if a.warmWeight(0) != 10 || a.warmWeight(5*time.Second) != 55 || a.warmWeight(10*time.Second) != 100 {
		t.Fatalf("ramp %d %d %d", a.warmWeight(0), a.warmWeight(5*time.Second), a.warmWeight(10*time.Second))
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv(LabelsEnv, "novalue")
	c := Config{Port: 0}
	err := c.Validate()
	for _, want := range []string{"service: missing", "port: 0", "$REMORA_LABELS: \"novalue\" is not key=value"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want %q", err, want)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"a=b", "a=b,c=d", " a = b , ", "=x", "a", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseLabels(s)
		if err != nil {
			return
		}
		for k := range m {
			if k == "" || strings.ContainsAny(k, ",=") {
				t.Fatalf("ParseLabels(%q) gave key %q", s, k)
			}
		}
	})
}
