package dns

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/duration"
)

// nodes are a set in short: "ID address w=weight" each, sorted.
func nodes(set []discovery.Instance) []string {
	out := make([]string, len(set))
	for i, in := range set {
		out[i] = fmt.Sprintf("%s %s w=%d", in.ID, in.Address, in.Weight)
	}
	slices.Sort(out)
	return out
}

// An address family whose question fails is left out when the other
// family has addresses, as Go's resolver does: a server that fails AAAA
// questions (SERVFAIL) must not hide the A records. Without addresses, a
// failure is the lookup's error: an empty answer for one family does not
// show that the name has none (the set is kept, marked stale).
func TestOneAddressFamilyFailing(t *testing.T) {
	servfail := dnsmessage.RCodeServerFailure
	for _, tc := range []struct {
		name    string
		setup   func(s *scriptedServer)
		service string
		want    []string
		wantErr string
	}{
		{
			name: "AAAA fails, A answers",
			setup: func(s *scriptedServer) {
				s.addrs("web.example.", 30, "10.0.0.1")
				s.fail("web.example.", dnsmessage.TypeAAAA, servfail)
			},
			service: "web.example:80",
			want:    []string{"10.0.0.1:80 10.0.0.1 w=1"},
		},
		{
			name: "A fails, AAAA answers",
			setup: func(s *scriptedServer) {
				s.fail("web.example.", dnsmessage.TypeA, servfail)
				s.addrs("web.example.", 30, "fd00::1")
			},
			service: "web.example:80",
			want:    []string{"[fd00::1]:80 fd00::1 w=1"},
		},
		{
			name: "an SRV target's AAAA fails, its A answers",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 30, dnsmessage.SRVResource{Weight: 5, Port: 80, Target: dnsmessage.MustNewName("a.example.")})
				s.addrs("a.example.", 30, "10.0.0.1")
				s.fail("a.example.", dnsmessage.TypeAAAA, servfail)
			},
			service: "_http._tcp.example.",
			want:    []string{"a.example/10.0.0.1:80 10.0.0.1 w=5"},
		},
		{
			name: "both fail",
			setup: func(s *scriptedServer) {
				s.fail("web.example.", dnsmessage.TypeA, servfail)
				s.fail("web.example.", dnsmessage.TypeAAAA, servfail)
			},
			service: "web.example:80",
			wantErr: "ServerFailure",
		},
		{
			name: "A empty, AAAA fails",
			setup: func(s *scriptedServer) {
				s.fail("web.example.", dnsmessage.TypeAAAA, servfail)
			},
			service: "web.example:80",
			wantErr: "web.example. TypeAAAA: RCodeServerFailure",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t)
			tc.setup(s)
			set, _, err := lookupOnce(t, Options{Resolver: s.addr}, tc.service)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("lookup = %v, %v; want an error containing %q", nodes(set), err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("lookup: %v; want %v", err, tc.want)
			case !slices.Equal(nodes(set), tc.want):
				t.Fatalf("lookup = %v; want %v", nodes(set), tc.want)
			}
		})
	}
}

// A name's addresses are one family's, IPv4 when it has any (as Envoy's
// V4_PREFERRED and the Kubernetes adapter): a dual-stack SRV target is
// one node with its record's weight, not two, so it does not get twice
// the traffic of a target with IPv4 only.
func TestOneAddressFamilyPerName(t *testing.T) {
	srv := func(weight uint16, target string) dnsmessage.SRVResource {
		return dnsmessage.SRVResource{Weight: weight, Port: 80, Target: dnsmessage.MustNewName(target)}
	}
	for _, tc := range []struct {
		name    string
		setup   func(s *scriptedServer)
		service string
		want    []string
	}{
		{
			name: "SRV targets: dual stack and IPv4 only weigh the same",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 30, srv(10, "a.example."), srv(10, "b.example."))
				s.addrs("a.example.", 30, "10.0.0.1", "fd00::1")
				s.addrs("b.example.", 30, "10.0.0.2")
			},
			service: "_http._tcp.example",
			want:    []string{"a.example/10.0.0.1:80 10.0.0.1 w=10", "b.example/10.0.0.2:80 10.0.0.2 w=10"},
		},
		{
			name: "SRV target with IPv6 only",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 30, srv(3, "a.example."))
				s.addrs("a.example.", 30, "fd00::1")
			},
			service: "_http._tcp.example",
			want:    []string{"a.example/[fd00::1]:80 fd00::1 w=3"},
		},
		{
			name:    "name with both families",
			setup:   func(s *scriptedServer) { s.addrs("web.example.", 30, "fd00::1", "10.0.0.2", "10.0.0.1", "fd00::2") },
			service: "web.example:80",
			want:    []string{"10.0.0.1:80 10.0.0.1 w=1", "10.0.0.2:80 10.0.0.2 w=1"},
		},
		{
			name:    "name with IPv6 only",
			setup:   func(s *scriptedServer) { s.addrs("web.example.", 30, "fd00::1") },
			service: "web.example:80",
			want:    []string{"[fd00::1]:80 fd00::1 w=1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t)
			tc.setup(s)
			set, _, err := lookupOnce(t, Options{Resolver: s.addr}, tc.service)
			if err != nil || !slices.Equal(nodes(set), tc.want) {
				t.Fatalf("lookup = %v, %v; want %v", nodes(set), err, tc.want)
			}
		})
	}
}

// An SRV node's ID is its target, address and port, so that it stays with
// its backend when the target's addresses change: per-node state (health,
// ejections, latency) is kept by ID and must not move to another backend.
// A name:port node's ID is its address and port.
func TestNodeIDsFollowAddresses(t *testing.T) {
	for _, tc := range []struct {
		name          string
		service       string
		before, after []string // the target's (or name's) addresses
		want          []string // the nodes after
	}{
		{
			name:    "SRV: the first of three addresses goes",
			service: "_http._tcp.example",
			before:  []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"},
			after:   []string{"10.0.0.2", "10.0.0.3"},
			want:    []string{"a.example/10.0.0.2:80 10.0.0.2 w=1", "a.example/10.0.0.3:80 10.0.0.3 w=1"},
		},
		{
			name:    "SRV: a second address comes",
			service: "_http._tcp.example",
			before:  []string{"10.0.0.2"},
			after:   []string{"10.0.0.2", "10.0.0.1"},
			want:    []string{"a.example/10.0.0.1:80 10.0.0.1 w=1", "a.example/10.0.0.2:80 10.0.0.2 w=1"},
		},
		{
			name:    "SRV: IPv6",
			service: "_http._tcp.example",
			before:  []string{"fd00::2"},
			after:   []string{"fd00::1", "fd00::2"},
			want:    []string{"a.example/[fd00::1]:80 fd00::1 w=1", "a.example/[fd00::2]:80 fd00::2 w=1"},
		},
		{
			name:    "name:port: the first of three addresses goes",
			service: "a.example:80",
			before:  []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"},
			after:   []string{"10.0.0.2", "10.0.0.3"},
			want:    []string{"10.0.0.2:80 10.0.0.2 w=1", "10.0.0.3:80 10.0.0.3 w=1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t)
			s.srv("_http._tcp.example.", 30, dnsmessage.SRVResource{Weight: 1, Port: 80, Target: dnsmessage.MustNewName("a.example.")})
			s.addrs("a.example.", 30, tc.before...)
			before, _, err := lookupOnce(t, Options{Resolver: s.addr}, tc.service)
			if err != nil {
				t.Fatal(err)
			}
			s.set("a.example.", dnsmessage.TypeA, 0)
			s.set("a.example.", dnsmessage.TypeAAAA, 0)
			s.addrs("a.example.", 30, tc.after...)
			after, _, err := lookupOnce(t, Options{Resolver: s.addr}, tc.service)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(nodes(after), tc.want) {
				t.Errorf("after the change: %v; want %v", nodes(after), tc.want)
			}
			addressOf := map[string]string{}
			for _, in := range before {
				addressOf[in.ID] = in.Address
			}
			for _, in := range after {
				if a, ok := addressOf[in.ID]; ok && a != in.Address {
					t.Errorf("node %s moved from %s to %s", in.ID, a, in.Address)
				}
			}
		})
	}
}

// A lookup is asked again after the smallest TTL of the record sets it
// took; TTL 0 ("do not keep", Consul DNS's default) counts, and means
// min_refresh, while a record set without records (no TXT, an address
// literal) has no TTL to count.
func TestSmallestTTLCountsZero(t *testing.T) {
	txt := func(s *scriptedServer, ttl uint32) {
		s.set("a.example.", dnsmessage.TypeTXT, ttl, &dnsmessage.TXTResource{TXT: []string{"zone=a"}})
	}
	target := func(name string) dnsmessage.SRVResource {
		return dnsmessage.SRVResource{Weight: 1, Port: 80, Target: dnsmessage.MustNewName(name)}
	}
	for _, tc := range []struct {
		name    string
		setup   func(s *scriptedServer)
		service string
		want    time.Duration
	}{
		{
			name: "SRV 0, target 300",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 0, target("a.example."))
				s.addrs("a.example.", 300, "10.0.0.1")
			},
			service: "_http._tcp.example",
			want:    0,
		},
		{
			name: "SRV 300, target 0",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 300, target("a.example."))
				s.addrs("a.example.", 0, "10.0.0.1")
			},
			service: "_http._tcp.example",
			want:    0,
		},
		{
			name: "SRV 300, target 60, TXT 0",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 300, target("a.example."))
				s.addrs("a.example.", 60, "10.0.0.1")
				txt(s, 0)
			},
			service: "_http._tcp.example",
			want:    0,
		},
		{
			name: "SRV 300, target 60, no TXT",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 300, target("a.example."))
				s.addrs("a.example.", 60, "10.0.0.1")
			},
			service: "_http._tcp.example",
			want:    60 * time.Second,
		},
		{
			name: "SRV 300, a target that is an address",
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.example.", 300, target("10.0.0.1."))
			},
			service: "_http._tcp.example",
			want:    300 * time.Second,
		},
		{
			name:    "name 0",
			setup:   func(s *scriptedServer) { s.addrs("web.example.", 0, "10.0.0.1") },
			service: "web.example:80",
			want:    0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t)
			tc.setup(s)
			set, ttl, err := lookupOnce(t, Options{Resolver: s.addr}, tc.service)
			if err != nil || len(set) != 1 || ttl != tc.want {
				t.Fatalf("lookup = %v, TTL %v, %v; want one node, TTL %v", nodes(set), ttl, err, tc.want)
			}
		})
	}

	// And the watcher asks again at min_refresh.
	s := startScripted(t)
	s.srv("_http._tcp.example.", 0, target("a.example."))
	s.addrs("a.example.", 300, "10.0.0.1")
	o := Options{Resolver: s.addr, MinRefresh: duration.Duration(100 * time.Millisecond)}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	w, err := reg.Watch(context.Background(), "_http._tcp.example")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	time.Sleep(1200 * time.Millisecond)
	asked := 0
	for _, q := range s.questions() {
		if q == "_http._tcp.example. SRV" {
			asked++
		}
	}
	if asked < 5 {
		t.Fatalf("the SRV name (TTL 0) was asked %d times in 1.2 s with min_refresh 100ms; want at least 5", asked)
	}
}
