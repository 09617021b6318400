package health_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
)

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func config(t *testing.T, mutate func(*health.Config)) *health.Config {
	t.Helper()
	c := &health.Config{}
	if mutate != nil {
		mutate(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func intp(v int) *int { return &v }

func nodes(n int) []*node.Node {
	out := make([]*node.Node, n)
	for i := range out {
		out[i] = node.New(discovery.Instance{ID: string(rune('a' + i)), Address: "127.0.0.1", Port: 1000 + i, Weight: 1, Healthy: true}, nil)
	}
	return out
}

func TestDetector(t *testing.T) {
	gw := health.Outcome{Status: 502}
	ok := health.Outcome{Status: 200}
	conn := health.Outcome{Failure: health.ConnectFailure}
	for _, tc := range []struct {
		name     string
		cfg      func(*health.Config)
		outcomes []health.Outcome
		want     node.EjectReason
		at       int // index of the outcome that asks; -1 none
	}{
		{"5 gateway failures", nil, []health.Outcome{gw, gw, gw, gw, gw}, node.ConsecutiveGatewayFailure, 4},
		{"a success resets", nil, []health.Outcome{gw, gw, gw, gw, ok, gw, gw, gw, gw}, 0, -1},
		{"connect failures are local origin", nil, []health.Outcome{conn, conn, conn, conn, conn}, node.ConsecutiveLocalOriginFailure, 4},
		{"resets are gateway failures", nil, []health.Outcome{{Failure: health.GatewayFailure}, {Failure: health.GatewayFailure}, {Status: 503}, {Status: 504}, {Failure: health.GatewayFailure}}, node.ConsecutiveGatewayFailure, 4},
		{"500 alone does not eject by default", nil, []health.Outcome{{Status: 500}, {Status: 500}, {Status: 500}, {Status: 500}, {Status: 500}, {Status: 500}}, 0, -1},
		{"consecutive_5xx when configured", func(c *health.Config) { c.Passive.Consecutive5xx = 3 }, []health.Outcome{{Status: 500}, {Status: 501}, {Status: 500}}, node.Consecutive5xx, 2},
		{"error_statuses are configurable", func(c *health.Config) {
			c.Passive.Consecutive5xx = 2
			c.Passive.ErrorStatuses = []string{"429"}
		}, []health.Outcome{{Status: 500}, {Status: 429}, {Status: 429}}, node.Consecutive5xx, 2},
		{"client cancellations never count", nil, []health.Outcome{{Failure: health.ClientCancelled}, {Failure: health.ClientCancelled}, {Failure: health.ClientCancelled}, {Failure: health.ClientCancelled}, {Failure: health.ClientCancelled}, {Failure: health.ClientCancelled}}, 0, -1},
		{"disabled", func(c *health.Config) { c.Passive.Disabled = true }, []health.Outcome{gw, gw, gw, gw, gw, gw}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := health.NewDetector(config(t, tc.cfg))
			n := nodes(1)[0]
			at := -1
			for i, o := range tc.outcomes {
				if d.Observe(&n.Stats.Health, o) && at < 0 {
					at = i
				}
			}
			if at != tc.at {
				t.Fatalf("ejection asked at outcome %d; want %d", at, tc.at)
			}
			if got := n.Stats.Health.TakeRequest(); got != tc.want {
				t.Fatalf("reason %v; want %v", got, tc.want)
			}
		})
	}
}

func TestDetectorDoesNotAllocate(t *testing.T) {
	d := health.NewDetector(config(t, nil))
	n := nodes(1)[0]
	if a := testing.AllocsPerRun(1000, func() { d.Observe(&n.Stats.Health, health.Outcome{Status: 200}) }); a != 0 {
		t.Fatalf("Observe allocates %v times", a)
	}
}

func TestEjectionBackoff(t *testing.T) {
	c := config(t, func(c *health.Config) {
		c.Passive.BaseEjectionTime, c.Passive.MaxEjectionTime = 10*time.Second, 25*time.Second
		c.Passive.MaxEjectionPercent = intp(100)
		j := time.Second
		c.Passive.EjectionJitter = &j
	})
	jitter := 0.5 // adds 500ms
	e := health.NewEjector(c, quietLog(), func() float64 { return jitter }, nil)
	ns := nodes(2)
	h := &ns[0].Stats.Health
	now := time.Unix(1000, 0)
	for i, want := range []time.Duration{10500 * time.Millisecond, 20500 * time.Millisecond, 25500 * time.Millisecond, 25500 * time.Millisecond} {
		h.RequestEjection(node.ConsecutiveGatewayFailure)
		changed, next := e.Apply(ns, now)
		if !changed || !h.Ejected() || h.EjectedUntil().Sub(now) != want || !next.Equal(now.Add(want)) {
			t.Fatalf("ejection %d: changed=%v until=+%v next=%v; want +%v", i+1, changed, h.EjectedUntil().Sub(now), next, want)
		}
		// Not yet over a moment before the end; over at the end.
		if changed, _ := e.Apply(ns, now.Add(want-time.Millisecond)); changed || !h.Ejected() {
			t.Fatalf("ejection %d ended early", i+1)
		}
		now = now.Add(want)
		if changed, _ := e.Apply(ns, now); !changed || h.Ejected() {
			t.Fatalf("ejection %d did not end at its time", i+1)
		}
	}
	// Intervals in service decay the multiplier.
	for i := 0; i < 4; i++ {
		e.Interval(ns, now)
	}
	if h.Ejections() != 0 {
		t.Fatalf("multiplier %d after healthy intervals; want 0", h.Ejections())
	}
	// Without failure_percentage, an interval keeps nothing per node.
	many := nodes(100)
	if n := testing.AllocsPerRun(10, func() { e.Interval(many, now) }); n != 0 {
		t.Fatalf("Interval allocates %v times without failure_percentage", n)
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		nodes, pct, want int
	}{{3, 50, 1}, {1, 50, 0}, {2, 50, 1}, {10, 50, 5}, {3, 100, 3}, {4, 10, 0}} {
		c := config(t, func(c *health.Config) { c.Passive.MaxEjectionPercent = intp(tc.pct) })
		e := health.NewEjector(c, quietLog(), func() float64 { return 0 }, nil)
		ns := nodes(tc.nodes)
		for _, n := range ns {
			n.Stats.Health.RequestEjection(node.ConsecutiveGatewayFailure)
		}
		e.Apply(ns, time.Unix(1, 0))
		got := 0
		for _, n := range ns {
			if n.Stats.Health.Ejected() {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("%d nodes all failing, max_ejection_percent %d: %d ejected; want %d", tc.nodes, tc.pct, got, tc.want)
		}
	}
}

func TestFailurePercentage(t *testing.T) {
	c := config(t, func(c *health.Config) {
		c.Passive.FailurePercentage = &health.FailurePercentage{Threshold: 50, RequestVolume: 10}
		c.Passive.MaxEjectionPercent = intp(100)
	})
	e := health.NewEjector(c, quietLog(), func() float64 { return 0 }, nil)
	d := health.NewDetector(c)
	ns := nodes(3)
	now := time.Unix(1, 0)
	e.Interval(ns, now) // baseline
	for i := 0; i < 20; i++ {
		d.Observe(&ns[0].Stats.Health, health.Outcome{Status: map[bool]int{true: 500, false: 200}[i%2 == 0]}) // 50% errors
		d.Observe(&ns[1].Stats.Health, health.Outcome{Status: map[bool]int{true: 500, false: 200}[i%4 == 0]}) // 25%
	}
	for i := 0; i < 5; i++ { // too few requests to judge
		d.Observe(&ns[2].Stats.Health, health.Outcome{Status: 500})
	}
	if !e.Interval(ns, now.Add(10*time.Second)) {
		t.Fatal("no ejection")
	}
	if !ns[0].Stats.Health.Ejected() || ns[0].Stats.Health.EjectReason() != node.FailurePercentage || ns[1].Stats.Health.Ejected() || ns[2].Stats.Health.Ejected() {
		t.Fatalf("ejected: %v %v %v; want only a", ns[0].Stats.Health.Ejected(), ns[1].Stats.Health.Ejected(), ns[2].Stats.Health.Ejected())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*health.Config)
		want   string
	}{
		{func(c *health.Config) { c.PanicThreshold = intp(120) }, "panic_threshold: 120"},
		{func(c *health.Config) { c.Passive.MaxEjectionPercent = intp(101) }, "passive.max_ejection_percent: 101"},
		{func(c *health.Config) { c.Passive.ErrorStatuses = []string{"5xx"} }, `passive.error_statuses: [0]: "5xx"`},
		{func(c *health.Config) { c.Passive.MaxEjectionTime = time.Second }, "max_ejection_time: 1s is less than base_ejection_time"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "icmp"} }, `active.type: unknown probe type "icmp"`},
		{func(c *health.Config) { c.Active = &health.Active{Path: "health"} }, `active.path: "health" must start with /`},
		{func(c *health.Config) { c.Active = &health.Active{ExpectedStatuses: []string{"300-200"}} }, "active.expected_statuses"},
		// net/http sends req.Host, never a Host in the header map: the
		// probe's node would see the node's address.
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"Host": "api.internal"}} }, `active.headers.Host: a probe's Host is set by host:, not headers; write host: "api.internal"`},
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"host": "api.internal"}} }, "active.headers.host: a probe's Host is set by host:"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"HOST": "api.internal"}}
		}, "active.headers.HOST: a probe's Host is set by host:"},
		// Each probe type takes only the fields it uses.
		{func(c *health.Config) { c.Active = &health.Active{Type: "tcp", Path: "/ready"} }, "active.path: a tcp probe only connects; path is for http probes"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "tcp", Host: "api.internal"} }, "active.host: a tcp probe only connects; host is for http probes (Host) and grpc probes (:authority)"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "tcp", Headers: map[string]string{"X-Probe": "1"}}
		}, "active.headers: a tcp probe only connects; headers are for http probes and grpc probes (metadata)"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "tcp", ExpectedStatuses: []string{"200"}} }, "active.expected_statuses: a tcp probe only connects; expected_statuses is for http probes"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "tcp", Service: "users"} }, "active.service: the grpc.health.v1 service name is for grpc probes"},
		{func(c *health.Config) { c.Active = &health.Active{Service: "users"} }, "active.service: the grpc.health.v1 service name is for grpc probes"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "grpc", Path: "/grpc.health.v1.Health/Check"} }, "active.path: a grpc probe calls grpc.health.v1.Health/Check; path is for http probes (name the service with service:)"},
		{func(c *health.Config) { c.Active = &health.Active{Type: "grpc", ExpectedStatuses: []string{"200"}} }, "active.expected_statuses: a grpc probe passes on SERVING only; expected_statuses is for http probes"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{":authority": "users.internal"}}
		}, `active.headers: ":authority": a grpc probe's :authority is set by host:, not headers; write host: "users.internal"`},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{":path": "/x"}}
		}, `active.headers: ":path": gRPC sets its pseudo-headers itself`},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"X-Probe!": "1"}}
		}, `active.headers: "X-Probe!": "x-probe!" is not a gRPC metadata key (0-9, a-z, -, _ and . only)`},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"Content-Type": "x"}}
		}, "active.headers.Content-Type: gRPC sets content-type itself"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"te": "trailers"}}
		}, "active.headers.te: Te belongs to the connection, not the probe's request; it cannot be set"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"Connection": "close"}}
		}, "active.headers.Connection: Connection belongs to the connection"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"grpc-timeout": "1S"}}
		}, "active.headers.grpc-timeout: names that begin with grpc- are gRPC's own"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"x-probe": "caf\u00e9"}}
		}, "active.headers.x-probe: gRPC metadata values are printable ASCII (or name the key -bin for binary)"},
		// Headers net/http would not send as written: it refuses a bad
		// name or value on every probe, drops Content-Length, Trailer and
		// Transfer-Encoding, and sends Connection, Keep-Alive and
		// Proxy-Connection over HTTP/1.1 only (an Upgrade fails every
		// HTTP/2 probe).
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"x y": "1"}} }, `active.headers: "x y": not a header name`},
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"x-probe": "a\nb"}} }, "active.headers.x-probe: the value has a control character"},
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"connection": "close"}} }, "active.headers.connection: Connection belongs to the connection, not the probe's request; it cannot be set"},
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"Upgrade": "websocket"}} }, "active.headers.Upgrade: Upgrade belongs to the connection"},
		{func(c *health.Config) { c.Active = &health.Active{Headers: map[string]string{"Content-Length": "0"}} }, "active.headers.Content-Length: Content-Length belongs to the connection"},
		{func(c *health.Config) {
			c.Active = &health.Active{Headers: map[string]string{"Transfer-Encoding": "chunked"}}
		}, "active.headers.Transfer-Encoding: Transfer-Encoding belongs to the connection"},
		{func(c *health.Config) {
			c.Active = &health.Active{Headers: map[string]string{"X-Probe": "1", "x-probe": "2"}}
		}, "active.headers.x-probe: the same header as X-Probe; write it once"},
		{func(c *health.Config) {
			c.Active = &health.Active{Type: "grpc", Headers: map[string]string{"X-Probe": "1", "x-probe": "2"}}
		}, "active.headers.x-probe: the same header as X-Probe; write it once"},
	} {
		c := &health.Config{}
		tc.mutate(c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v; want %q", err, tc.want)
		}
	}
}

func TestActiveHTTPProbe(t *testing.T) {
	var healthy atomic.Bool
	var probes atomic.Int64
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if r.URL.Path != "/healthz" || r.Header.Get("X-Probe") != "1" {
			w.WriteHeader(404)
			return
		}
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	c := config(t, func(c *health.Config) {
		c.Active = &health.Active{Path: "/healthz", Headers: map[string]string{"X-Probe": "1"}, Interval: 20 * time.Millisecond, HealthyThreshold: 2, UnhealthyThreshold: 3}
	})
	var changes atomic.Int64
	p := health.NewProber(c, health.Transport{}, func() { changes.Add(1) }, quietLog())
	addr := srv.Listener.Addr().(*net.TCPAddr)
	n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: addr.Port, Weight: 1, Healthy: true}, nil)
	p.Update([]*node.Node{n})
	defer p.Stop()

	waitFor(t, "first probes", func() bool { return probes.Load() >= 3 })
	if !n.Stats.Health.ActiveHealthy() || changes.Load() != 0 {
		t.Fatal("a healthy node was marked down")
	}
	healthy.Store(false)
	start := time.Now()
	waitFor(t, "node down", func() bool { return !n.Stats.Health.ActiveHealthy() })
	// 3 failures at ~20ms ± 10% each: well under a second.
	if took := time.Since(start); took > time.Second {
		t.Fatalf("went down after %v", took)
	}
	// The verdict flips before the prober reports it: wait for the report.
	waitFor(t, "the change reported", func() bool { return changes.Load() >= 1 })
	if !strings.Contains(n.Stats.Health.LastProbeError(), "status 503") || changes.Load() != 1 {
		t.Fatalf("last error %q, changes %d", n.Stats.Health.LastProbeError(), changes.Load())
	}
	healthy.Store(true)
	waitFor(t, "node back", func() bool { return n.Stats.Health.ActiveHealthy() })
	waitFor(t, "the change reported", func() bool { return changes.Load() >= 2 })
	if changes.Load() != 2 {
		t.Fatalf("changes %d; want 2", changes.Load())
	}
	// A removed node is no longer probed.
	p.Update(nil)
	time.Sleep(30 * time.Millisecond)
	before := probes.Load()
	time.Sleep(100 * time.Millisecond)
	if probes.Load() != before {
		t.Fatal("a removed node is still probed")
	}
}

func TestActiveTCPProbe(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	c := config(t, func(c *health.Config) {
		c.Active = &health.Active{Type: "tcp", Interval: 10 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1}
	})
	p := health.NewProber(c, health.Transport{}, func() {}, quietLog())
	addr := srv.Listener.Addr().(*net.TCPAddr)
	n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: addr.Port, Weight: 1, Healthy: true}, nil)
	p.Update([]*node.Node{n})
	defer p.Stop()
	time.Sleep(50 * time.Millisecond)
	if !n.Stats.Health.ActiveHealthy() {
		t.Fatal("a listening node failed the TCP probe")
	}
	srv.Close()
	waitFor(t, "node down after its listener closed", func() bool { return !n.Stats.Health.ActiveHealthy() })
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

func FuzzStatusRanges(f *testing.F) {
	for _, s := range []string{"500-599", "429", " 200 - 299 ", "600", "5xx", "-", "300-200"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		c := &health.Config{}
		c.Passive.ErrorStatuses = []string{spec}
		_ = c.Validate() // must not panic; errors are fine
	})
}

// A grpc probe sends headers as metadata, host as :authority and, from
// headers, a user-agent before gRPC's own.
func TestActiveGRPCProbeSendsHeadersAndHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan metadata.MD, 10)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		got <- md
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()

	for _, tc := range []struct {
		name      string
		active    health.Active
		authority string
		md        map[string]string // key: want value; "" wants the key absent
		userAgent string            // a prefix
	}{
		{"defaults", health.Active{Type: "grpc"}, ln.Addr().String(), map[string]string{"authorization": ""}, "grpc-go/"},
		{"headers and host", health.Active{Type: "grpc", Host: "users.internal", Headers: map[string]string{
			"Authorization": "Bearer probe-token", "x-probe": "1", "User-Agent": "remora-probe",
		}}, "users.internal", map[string]string{"authorization": "Bearer probe-token", "x-probe": "1"}, "remora-probe grpc-go/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config(t, func(c *health.Config) { c.Active = &tc.active })
			ch := health.NewChecker(c.Active)
			defer ch.Close()
			for i := range 2 { // the first probe dials; the second reuses the connection
				if err := ch.Check(context.Background(), ln.Addr().String()); err != nil {
					t.Fatal(err)
				}
				md := <-got
				if a := md.Get(":authority"); len(a) != 1 || a[0] != tc.authority {
					t.Errorf("probe %d: :authority %q; want %q", i, a, tc.authority)
				}
				for k, want := range tc.md {
					if v := md.Get(k); want == "" && len(v) != 0 || want != "" && (len(v) != 1 || v[0] != want) {
						t.Errorf("probe %d: %s: %q; want %q", i, k, v, want)
					}
				}
				if ua := md.Get("user-agent"); len(ua) != 1 || !strings.HasPrefix(ua[0], tc.userAgent) {
					t.Errorf("probe %d: user-agent %q; want it to begin with %q", i, ua, tc.userAgent)
				}
			}
		})
	}
}

// Over TLS, host: changes the :authority only: the certificate is still
// verified against the TLS config's server name (and a wrong one fails),
// as an HTTP probe's Host leaves its TLS alone.
func TestActiveGRPCProbeHostOverTLS(t *testing.T) {
	cert, pool := selfSigned(t, "users.svc")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	authority := make(chan string, 10)
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)), grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		select {
		case authority <- strings.Join(md.Get(":authority"), ","):
		default:
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()

	for _, tc := range []struct{ serverName, err string }{
		{"users.svc", ""},
		{"other.svc", "certificate is valid for users.svc, not other.svc"},
	} {
		t.Run(tc.serverName, func(t *testing.T) {
			c := config(t, func(c *health.Config) {
				c.Active = &health.Active{Type: "grpc", Host: "users.internal", Interval: 20 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}
			})
			p := health.NewProber(c, health.Transport{TLS: &tls.Config{ServerName: tc.serverName, RootCAs: pool, MinVersion: tls.VersionTLS12}}, func() {}, quietLog())
			n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Weight: 1, Healthy: true}, nil)
			n.Stats.Health.ProbeResult(false, errors.New("not probed yet"), 1, 1)
			p.Update([]*node.Node{n})
			defer p.Stop()
			if tc.err != "" {
				waitFor(t, "the probe failing", func() bool { return strings.Contains(n.Stats.Health.LastProbeError(), tc.err) })
				return
			}
			select {
			case a := <-authority:
				if a != "users.internal" {
					t.Fatalf(":authority %q; want users.internal", a)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no probe within 5s: %s", n.Stats.Health.LastProbeError())
			}
			waitFor(t, "the probe passing", func() bool { return n.Stats.Health.ActiveHealthy() })
		})
	}
}

// selfSigned returns a certificate for name and a pool that trusts it.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestActiveGRPCProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)

	c := config(t, func(c *health.Config) {
		c.Active = &health.Active{Type: "grpc", Service: "users", Interval: 10 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 1}
	})
	p := health.NewProber(c, health.Transport{}, func() {}, quietLog())
	n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Weight: 1, Healthy: true}, nil)
	p.Update([]*node.Node{n})
	defer p.Stop()
	time.Sleep(50 * time.Millisecond)
	if !n.Stats.Health.ActiveHealthy() {
		t.Fatalf("a SERVING node failed: %s", n.Stats.Health.LastProbeError())
	}
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_NOT_SERVING)
	waitFor(t, "NOT_SERVING node down", func() bool { return !n.Stats.Health.ActiveHealthy() })
	if !strings.Contains(n.Stats.Health.LastProbeError(), "NOT_SERVING") {
		t.Fatalf("last error %q", n.Stats.Health.LastProbeError())
	}
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)
	waitFor(t, "node back", func() bool { return n.Stats.Health.ActiveHealthy() })
}
