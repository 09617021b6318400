package dns_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/dns"
	"github.com/remora-mesh/remora/discovery/dns/dnstest"
)

func open(t testing.TB, opts string) discovery.Registry {
	t.Helper()
	o, err := discoverytest.Parse(t, dns.Type, opts)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// srvName is the SRV name of a conformance service.
func srvName(svc string) string { return "_" + svc + "._tcp." + dnstest.Zone }

// srvRegistry watches a conformance service by its SRV name.
type srvRegistry struct{ discovery.Registry }

func (r srvRegistry) Watch(ctx context.Context, svc string) (discovery.Watcher, error) {
	return r.Registry.Watch(ctx, srvName(svc))
}

// TestConformance runs the suite against dnsmasq: an instance is an SRV
// record of the service (weight), an address record of its target, and
// a TXT record of the target with its metadata.
func TestConformance(t *testing.T) {
	srv := dnstest.Start(t)
	var mu sync.Mutex
	services := map[string]map[string]discovery.Instance{}
	publish := func(svc string) {
		mu.Lock()
		insts := maps.Clone(services[svc])
		mu.Unlock()
		srv.Change(func(r *dnstest.Records) {
			var records []dnstest.SRV
			for _, id := range slices.Sorted(maps.Keys(insts)) {
				in := insts[id]
				target := id + "." + svc + "." + dnstest.Zone
				records = append(records, dnstest.SRV{Target: target, Port: in.Port, Weight: int(in.Weight)})
				r.Hosts[target] = []string{in.Address}
				var txt []string
				for _, k := range slices.Sorted(maps.Keys(in.Metadata)) {
					txt = append(txt, k+"="+in.Metadata[k])
				}
				r.TXT[target] = txt
			}
			r.SRV[srvName(svc)] = records
		})
	}
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry {
			return srvRegistry{open(t, fmt.Sprintf("resolver: %s\nmin_refresh: 100ms\n", srv.Addr()))}
		},
		Register: func(t *testing.T, svc string, in discovery.Instance) {
			mu.Lock()
			if services[svc] == nil {
				services[svc] = map[string]discovery.Instance{}
			}
			services[svc][strings.ToLower(in.ID)] = in
			mu.Unlock()
			publish(svc)
		},
		Deregister: func(t *testing.T, svc, id string) {
			mu.Lock()
			delete(services[svc], strings.ToLower(id))
			mu.Unlock()
			publish(svc)
		},
		Restart: func(t *testing.T) { srv.Restart() },
	})
}

// A name's addresses, one node per address (the IPv4 ones when it has
// both families: a dual-stack host is one node); the lowest SRV
// priority only; a change reaches the watcher within the records' TTL and
// a second; a failed lookup keeps the last set, marked stale.
func TestRecords(t *testing.T) {
	srv := dnstest.Start(t)
	web := "web." + dnstest.Zone
	srv.Change(func(r *dnstest.Records) {
		r.TTL = 2
		r.Hosts[web] = []string{"127.0.0.1", "::1"}
		r.SRV["_api._tcp."+dnstest.Zone] = []dnstest.SRV{
			{Target: "a." + dnstest.Zone, Port: 8080, Priority: 1, Weight: 5},
			{Target: "backup." + dnstest.Zone, Port: 8080, Priority: 2, Weight: 1},
		}
		r.Hosts["a."+dnstest.Zone] = []string{"127.0.0.2"}
		r.Hosts["backup."+dnstest.Zone] = []string{"127.0.0.3"}
	})
	reg := open(t, fmt.Sprintf("resolver: %s\nmin_refresh: 100ms\nmax_refresh: 10s\n", srv.Addr()))
	next := func(w discovery.Watcher, what string, cond func([]discovery.Instance) bool) {
		t.Helper()
		discoverytest.WaitFor(t, w, 5*time.Second, what, cond)
	}
	w, err := reg.Watch(context.Background(), net.JoinHostPort(web, "9090"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next(w, "the IPv4 address", func(set []discovery.Instance) bool {
		return discoverytest.Describe(set) == "[127.0.0.1:9090@127.0.0.1:9090 w=1 healthy=true meta=map[]]"
	})
	api, err := reg.Watch(context.Background(), "_api._tcp."+dnstest.Zone)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Stop()
	next(api, "the lowest priority only", func(set []discovery.Instance) bool {
		return len(set) == 1 && set[0].Address == "127.0.0.2" && set[0].Weight == 5
	})

	changed := time.Now()
	srv.Change(func(r *dnstest.Records) { r.Hosts[web] = []string{"127.0.0.5"} })
	next(w, "the new address", func(set []discovery.Instance) bool { return len(set) == 1 && set[0].Address == "127.0.0.5" })
	if took := time.Since(changed); took > 3*time.Second+500*time.Millisecond {
		t.Fatalf("the change took %v; want within the TTL (2 s) and a second", took)
	}

	srv.Close() // the server is gone: the watcher says so, and the set stays
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if set, err := w.Next(ctx); err == nil {
		t.Fatalf("with the server down: a set %s; want an error", discoverytest.Describe(set))
	}
}

// Options are checked with errors that name the field.
func TestOptions(t *testing.T) {
	for _, tc := range []struct{ opts, want string }{
		{"resolver: 127.0.0.1", `resolver: "127.0.0.1"; want host:port`},
		{"resolver: 127.0.0.1:domain", `resolver: "127.0.0.1:domain"; want host:port with a port 1..65535`},
		{"resolver: 127.0.0.1:0", `resolver: "127.0.0.1:0"; want host:port`},
		{"min_refresh: 10s\nmax_refresh: 1s", "min_refresh: 10s is above max_refresh 1s"},
		{"timeout: -1s", "timeout: -1s; want a positive duration"},
	} {
		if _, err := discoverytest.Parse(t, dns.Type, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want %q", tc.opts, err, tc.want)
		}
	}
	reg := open(t, "resolver: 127.0.0.1:53")
	if _, err := reg.Watch(context.Background(), "web"); err == nil || !strings.Contains(err.Error(), "name:port") {
		t.Errorf("a service without a port: %v", err)
	}
}

// Without resolver:, a resolv.conf that cannot be read, or names no
// nameserver, does not fail Open: every lookup fails (Next returns why)
// until a later one finds a nameserver, and then the set arrives; its
// nameservers are asked in order until one answers.
func TestOpenWithoutSystemResolver(t *testing.T) {
	srv := dnstest.Start(t)
	web := "web." + dnstest.Zone
	srv.Change(func(r *dnstest.Records) { r.Hosts[web] = []string{"127.0.0.1", "::1"} })
	_, port, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	dns.SetResolvConf(t, conf, port)

	reg := open(t, "min_refresh: 100ms") // Open fails the test if it fails
	w, err := reg.Watch(context.Background(), net.JoinHostPort(web, "80"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitErr := func(want string) {
		t.Helper()
		for {
			set, err := w.Next(ctx)
			switch {
			case ctx.Err() != nil:
				t.Fatalf("waiting for an error containing %q: last %v", want, err)
			case err == nil:
				t.Fatalf("a set %s; want an error containing %q", discoverytest.Describe(set), want)
			case strings.Contains(err.Error(), want):
				return
			}
		}
	}
	waitErr("no resolver set, and open " + conf)

	if err := os.WriteFile(conf, []byte("search "+dnstest.Zone+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitErr(conf + " names no nameserver")

	// The first nameserver does not answer (nothing listens there); the
	// second is asked next, as the system's resolver does.
	if err := os.WriteFile(conf, []byte("# nameservers at last\nnameserver 127.0.0.2\nnameserver 127.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitFor(t, w, 10*time.Second, "the set once resolv.conf names a nameserver that answers", func(set []discovery.Instance) bool {
		return len(set) == 1 && set[0].Address == "127.0.0.1" && set[0].Port == 80
	})
}

// brokenAAAA is a resolver that answers A queries for any name with
// 127.0.0.7 and AAAA queries with NXDOMAIN, as some servers do for names
// that have only A records (RFC 4074, section 4.2).
func brokenAAAA(t *testing.T) string {
	return aServer(t, func() bool { return true })
}

// aServer is a DNS server on loopback that answers A queries with
// 127.0.0.7 while exists() and with NXDOMAIN otherwise, and AAAA queries
// with NXDOMAIN.
func aServer(t *testing.T, exists func() bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
			found := q.Type == dnsmessage.TypeA && exists()
			if !found {
				rh.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, rh)
			b.EnableCompression()
			_ = b.StartQuestions()
			_ = b.Question(q)
			if found {
				_ = b.StartAnswers()
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 7}})
			}
			msg, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(msg, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// A name error for one address type is no records of that type: the
// other type's records stay.
func TestNameErrorForOneTypeKeepsTheOther(t *testing.T) {
	reg := open(t, fmt.Sprintf("resolver: %s\nmin_refresh: 100ms\n", brokenAAAA(t)))
	w, err := reg.Watch(context.Background(), "web.example.:9090")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	discoverytest.WaitFor(t, w, 5*time.Second, "the A record", func(set []discovery.Instance) bool {
		return len(set) == 1 && set[0].Address == "127.0.0.7" && set[0].Port == 9090
	})
}

// One "no such name" answer does not empty a set: a server that blinks
// (restarting, or answering from a catalog it is still loading) is asked
// again before the set is emptied; a name that stays gone is emptied.
func TestOneEmptyAnswerIsConfirmed(t *testing.T) {
	var blinks atomic.Int32 // A queries still to answer NXDOMAIN; -1: for good
	exists := func() bool {
		for {
			n := blinks.Load()
			if n == 0 {
				return true
			}
			if n < 0 || blinks.CompareAndSwap(n, n-1) {
				return false
			}
		}
	}
	reg := open(t, fmt.Sprintf("resolver: %s\nmin_refresh: 100ms\n", aServer(t, exists)))
	w, err := reg.Watch(context.Background(), "web.example.:9090")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	discoverytest.WaitFor(t, w, 5*time.Second, "the A record", func(set []discovery.Instance) bool { return len(set) == 1 })

	blinks.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond) // the record's TTL is 1 s
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil && len(set) == 0 {
			t.Fatal("one NXDOMAIN answer emptied the set")
		}
	}
	if blinks.Load() != 0 {
		t.Fatal("the server was not asked during the blink")
	}

	blinks.Store(-1)
	start := time.Now()
	discoverytest.WaitFor(t, w, 5*time.Second, "emptied once confirmed", func(set []discovery.Instance) bool { return len(set) == 0 })
	t.Logf("emptied %v after the name went", time.Since(start))
}
