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

// ipNets turns CIDRs into interface addresses as net.InterfaceAddrs
// returns them.
func ipNets(t *testing.T, cidrs ...string) []net.Addr {
	t.Helper()
	var out []net.Addr
	for _, c := range cidrs {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		out = append(out, n)
	}
	return out
}

func TestHostAddress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		want  string
	}{
		{"ipv4 only", []string{"127.0.0.1/8", "10.1.2.3/24"}, "10.1.2.3"},
		{"ipv6 only", []string{"127.0.0.1/8", "::1/128", "fe80::1/64", "fd00:10:244::5/64"}, "fd00:10:244::5"},
		{"ipv6 global", []string{"::1/128", "2001:db8::7/64"}, "2001:db8::7"},
		{"both: ipv4 first", []string{"::1/128", "fd00::5/64", "10.1.2.3/24", "2001:db8::7/64"}, "10.1.2.3"},
		{"link-local and loopback only", []string{"127.0.0.1/8", "::1/128", "fe80::1/64", "169.254.1.1/16"}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hostAddress(ipNets(t, tc.addrs...)); got != tc.want {
				t.Fatalf("hostAddress(%v) = %q; want %q", tc.addrs, got, tc.want)
			}
		})
	}
	// An *net.IPAddr (some platforms) counts as an *net.IPNet does.
	if got := hostAddress([]net.Addr{&net.IPAddr{IP: net.ParseIP("2001:db8::9")}}); got != "2001:db8::9" {
		t.Fatalf("hostAddress(IPAddr) = %q", got)
	}
}

// withHostAddrs makes the host's addresses cidrs (and $POD_IP unset) for
// the test.
func withHostAddrs(t *testing.T, cidrs ...string) {
	t.Helper()
	t.Setenv("POD_IP", "")
	addrs := ipNets(t, cidrs...)
	old := interfaceAddrs
	interfaceAddrs = func() ([]net.Addr, error) { return addrs, nil }
	t.Cleanup(func() { interfaceAddrs = old })
}

// An IPv6-only pod without $POD_IP: the block is valid there as on an
// IPv4 host, registered at the pod's IPv6 address.
func TestValidateOnIPv6OnlyHost(t *testing.T) {
	withHostAddrs(t, "127.0.0.1/8", "::1/128", "fe80::1/64", "fd00:10:244::5/64")
	c := Config{Service: "users", Port: 8080}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() on an IPv6-only host = %v", err)
	}
	if c.Address != "fd00:10:244::5" {
		t.Fatalf("address %q; want the host's IPv6 address", c.Address)
	}
	if hp := instance(c, 1).HostPort(); hp != "[fd00:10:244::5]:8080" {
		t.Fatalf("registered as %s", hp)
	}
}

// A host with no usable address at all is a misconfiguration the error
// says how to fix.
func TestValidateWithoutAnyAddress(t *testing.T) {
	withHostAddrs(t, "127.0.0.1/8", "::1/128", "fe80::1/64")
	c := Config{Service: "users", Port: 8080}
	err := c.Validate()
	for _, want := range []string{"address: missing", "$POD_IP", "set register.address"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Validate() = %v; want an error containing %q", err, want)
		}
	}
	t.Setenv("POD_IP", "2001:db8::7")
	c = Config{Service: "users", Port: 8080}
	if err := c.Validate(); err != nil || c.Address != "2001:db8::7" {
		t.Fatalf("with $POD_IP: Validate() = %v, address %q", err, c.Address)
	}
}

// register.address is what other instances dial, joined with port: an IP
// address or a host name alone. A port, a URL, a path or brackets were
// written to the registry as given, and every request to it failed.
func TestValidateAddress(t *testing.T) {
	const want = "; want an IP address or a host name without a port (the port is port:)"
	for _, tc := range []struct{ address, err string }{
		{"10.1.2.3", ""},
		{"fd00:10:244::5", ""},
		{"2001:db8::7", ""},
		{"::ffff:10.0.0.1", ""},
		{"localhost", ""},
		{"app", ""},
		{"users-1.default.svc.cluster.local", ""},
		{"xn--bcher-kva.example", ""},
		{"0app.example", ""},
		{strings.Repeat("a", 63) + ".example", ""},
		{"127.0.0.1:8080", `address: "127.0.0.1:8080"` + want},
		{"app.internal:80", `address: "app.internal:80"` + want},
		{"[::1]:8080", `address: "[::1]:8080"` + want},
		{":8080", `address: ":8080"` + want},
		{"http://10.0.0.1", `address: "http://10.0.0.1" is a URL`},
		{"https://app:8443/", `address: "https://app:8443/" is a URL`},
		{"[fd00::5]", `address: "[fd00::5]"; want an IPv6 address without brackets (fd00::5)`},
		{"10.0.0.1/24", `address: "10.0.0.1/24" contains "/"`},
		{"app/health", `address: "app/health" contains "/"`},
		{"app internal", `address: "app internal" contains white space`},
		{" 10.0.0.1", `address: " 10.0.0.1" contains white space`},
		{"10.0.0.1\n", `address: "10.0.0.1\n" contains white space`},
		{"-app", `address: "-app" is neither an IP address nor a host name`},
		{"app-", `address: "app-" is neither an IP address nor a host name`},
		{"a..b", `address: "a..b" is neither an IP address nor a host name`},
		{"app.", ""},                             // fully qualified
		{"users.default.svc.cluster.local.", ""}, // fully qualified
		{"app_1", ""},                            // as resolvers take it (Docker Compose)
		{"app..", `address: "app.." is neither an IP address nor a host name`},
		{".", `address: "." is neither an IP address nor a host name`},
		{"10.0.0.256.", `address: "10.0.0.256." is not an IP address`},
		{"ä.example", `address: "ä.example" is neither an IP address nor a host name`},
		{strings.Repeat("a", 64) + ".example", "is neither an IP address nor a host name"},
		{strings.Repeat("a.", 127) + "ab", "is neither an IP address nor a host name"},
		{"10.0.0.256", `address: "10.0.0.256" is not an IP address, and a host name's last label is not all digits`},
		{"10.0.0", `address: "10.0.0" is not an IP address`},
		{"fe80::1%eth0", `address: "fe80::1%eth0" is neither an IP address nor a host name`},
		{"user@app", `address: "user@app" is neither an IP address nor a host name`},
	} {
		t.Run(tc.address, func(t *testing.T) {
			c := Config{Service: "users", Port: 8080, Address: tc.address}
			err := c.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Validate() = %v; want it accepted", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Validate() = %v; want an error containing %q", err, tc.err)
			case tc.err != "" && !strings.HasPrefix(err.Error(), "address: "):
				t.Fatalf("Validate() = %v; want it to start with the field", err)
			}
		})
	}
}

// A $POD_IP that is not an address is refused as register.address is,
// saying where the value came from; the host's own address always passes.
func TestValidateDefaultAddress(t *testing.T) {
	withHostAddrs(t, "127.0.0.1/8", "10.1.2.3/24")
	c := Config{Service: "users", Port: 8080}
	if err := c.Validate(); err != nil || c.Address != "10.1.2.3" {
		t.Fatalf("Validate() = %v, address %q; want the host's address", err, c.Address)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() again = %v", err)
	}
	t.Setenv("POD_IP", "10.1.2.4:8080")
	c = Config{Service: "users", Port: 8080}
	err := c.Validate()
	if want := `address: $POD_IP "10.1.2.4:8080"; want an IP address or a host name without a port`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Validate() = %v; want an error containing %q", err, want)
	}
}
