package dns

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// resolv.conf is read as Go's resolver reads it: the first three
// nameservers, the last search or domain line's list, ndots clamped to
// 0..15.
func TestParseResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       resolvConfig
	}{
		{
			name: "Kubernetes",
			file: "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
			want: resolvConfig{servers: []string{"10.96.0.10:53"}, search: []string{"shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}, ndots: 5},
		},
		{
			name: "defaults",
			file: "nameserver ::1\n",
			want: resolvConfig{servers: []string{"[::1]:53"}, ndots: 1},
		},
		{
			name: "at most three nameservers",
			file: "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"}, ndots: 1},
		},
		{
			name: "the last of domain and search wins",
			file: "nameserver 10.0.0.1\nsearch a.example b.example\ndomain c.example\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53"}, search: []string{"c.example."}, ndots: 1},
		},
		{
			name: "search after domain",
			file: "nameserver 10.0.0.1\ndomain c.example\nsearch a.example. . b.example\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53"}, search: []string{"a.example.", "b.example."}, ndots: 1},
		},
		{
			name: "ndots above 15",
			file: "nameserver 10.0.0.1\noptions timeout:1 ndots:40 attempts:2\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53"}, ndots: 15},
		},
		{
			name: "ndots not a number",
			file: "nameserver 10.0.0.1\noptions ndots:x\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53"}, ndots: 0},
		},
		{
			name: "comments",
			file: "# search a.example\n; options ndots:3\nnameserver 10.0.0.1\n#nameserver 10.0.0.2\n",
			want: resolvConfig{servers: []string{"10.0.0.1:53"}, ndots: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseResolvConf([]byte(tc.file), "53")
			if !slices.Equal(got.servers, tc.want.servers) || !slices.Equal(got.search, tc.want.search) || got.ndots != tc.want.ndots {
				t.Fatalf("%q: %+v; want %+v", tc.file, got, tc.want)
			}
		})
	}
}

// A name is asked as Go's resolver asks it: absolute with a final dot;
// as written first with at least ndots dots, last with fewer.
func TestSearchNames(t *testing.T) {
	kube := resolvConfig{search: []string{"shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}, ndots: 5}
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "."
	for _, tc := range []struct {
		name string
		conf resolvConfig
		in   string
		want []string
	}{
		{"short name, ndots 5", kube, "user-service", []string{"user-service.shop.svc.cluster.local.", "user-service.svc.cluster.local.", "user-service.cluster.local.", "user-service."}},
		{"another namespace, ndots 5", kube, "user-service.pay", []string{"user-service.pay.shop.svc.cluster.local.", "user-service.pay.svc.cluster.local.", "user-service.pay.cluster.local.", "user-service.pay."}},
		{"SRV name, ndots 5", kube, "_http._tcp.api", []string{"_http._tcp.api.shop.svc.cluster.local.", "_http._tcp.api.svc.cluster.local.", "_http._tcp.api.cluster.local.", "_http._tcp.api."}},
		{"absolute", kube, "user-service.pay.svc.cluster.local.", []string{"user-service.pay.svc.cluster.local."}},
		{"enough dots", resolvConfig{search: []string{"svc.example."}, ndots: 1}, "web.example", []string{"web.example.", "web.example.svc.example."}},
		{"no search list", resolvConfig{ndots: 1}, "web", []string{"web."}},
		{"explicit resolver: as written", resolvConfig{}, "web", []string{"web."}},
		{"too long with a domain", resolvConfig{search: []string{long, "svc.example."}, ndots: 1}, strings.Repeat("d", 63) + ".x",
			[]string{strings.Repeat("d", 63) + ".x.", strings.Repeat("d", 63) + ".x.svc.example."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.conf.names(tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("names(%q) = %q; want %q", tc.in, got, tc.want)
			}
		})
	}
}

// Without resolver:, a name is completed with resolv.conf's search list
// as its ndots says: "web" is web.svc.example, and in Kubernetes
// "user-service.pay" is user-service.pay.svc.cluster.local. A name that
// does not exist moves to the next; a failure is an error, not a move
// (the next name could be another service's). An SRV target is absolute.
// With resolver:, a name is asked as written, absolute.
func TestSearchList(t *testing.T) {
	servfail := dnsmessage.RCodeServerFailure
	const kube = "search shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	for _, tc := range []struct {
		name     string
		conf     string // resolv.conf after its nameserver line
		explicit bool   // resolver: set
		setup    func(s *scriptedServer)
		service  string
		want     []string
		wantErr  string
		asked    []string // the first questions, when set
	}{
		{
			name:    "a short name",
			conf:    "search svc.example\noptions ndots:5\n",
			setup:   func(s *scriptedServer) { s.addrs("web.svc.example.", 30, "10.0.0.1") },
			service: "web:80",
			want:    []string{"10.0.0.1:80 10.0.0.1 w=1"},
			asked:   []string{"web.svc.example. A"},
		},
		{
			name:    "Kubernetes: a service of another namespace",
			conf:    kube,
			setup:   func(s *scriptedServer) { s.addrs("user-service.pay.svc.cluster.local.", 30, "10.0.0.1") },
			service: "user-service.pay:80",
			want:    []string{"10.0.0.1:80 10.0.0.1 w=1"},
			asked: []string{"user-service.pay.shop.svc.cluster.local. A", "user-service.pay.shop.svc.cluster.local. AAAA",
				"user-service.pay.svc.cluster.local. A"},
		},
		{
			name: "enough dots: as written first",
			conf: "search svc.example\n",
			setup: func(s *scriptedServer) {
				s.addrs("web.example.", 30, "10.0.0.1")
				s.addrs("web.example.svc.example.", 30, "10.0.0.2")
			},
			service: "web.example:80",
			want:    []string{"10.0.0.1:80 10.0.0.1 w=1"},
		},
		{
			name:    "enough dots, not there as written",
			conf:    "search svc.example\n",
			setup:   func(s *scriptedServer) { s.addrs("web.example.svc.example.", 30, "10.0.0.2") },
			service: "web.example:80",
			want:    []string{"10.0.0.2:80 10.0.0.2 w=1"},
		},
		{
			name:    "absolute",
			conf:    "search svc.example\noptions ndots:5\n",
			setup:   func(s *scriptedServer) { s.addrs("web.svc.example.", 30, "10.0.0.1") },
			service: "web.:80",
			want:    []string{},
			asked:   []string{"web. A", "web. AAAA"},
		},
		{
			name: "a failure is an error, not the next name",
			conf: "search svc.example\noptions ndots:5\n",
			setup: func(s *scriptedServer) {
				s.fail("web.svc.example.", dnsmessage.TypeA, servfail)
				s.fail("web.svc.example.", dnsmessage.TypeAAAA, servfail)
				s.addrs("web.", 30, "10.0.0.9")
			},
			service: "web:80",
			wantErr: "web.svc.example. TypeA: RCodeServerFailure",
		},
		{
			name: "SRV name searched, its target absolute",
			conf: kube,
			setup: func(s *scriptedServer) {
				s.srv("_http._tcp.api.shop.svc.cluster.local.", 30, dnsmessage.SRVResource{Weight: 2, Port: 8080, Target: dnsmessage.MustNewName("a.example.")})
				s.addrs("a.example.", 30, "10.0.0.1")
				s.addrs("a.example.shop.svc.cluster.local.", 30, "10.0.0.66")
			},
			service: "_http._tcp.api",
			want:    []string{"a.example/10.0.0.1:8080 10.0.0.1 w=2"},
		},
		{
			name:     "explicit resolver: as written",
			conf:     "search svc.example\noptions ndots:5\n",
			explicit: true,
			setup:    func(s *scriptedServer) { s.addrs("web.svc.example.", 30, "10.0.0.1") },
			service:  "web:80",
			want:     []string{},
			asked:    []string{"web. A", "web. AAAA"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t)
			tc.setup(s)
			host, port, err := net.SplitHostPort(s.addr)
			if err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(conf, []byte("nameserver "+host+"\n"+tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			SetResolvConf(t, conf, port)
			var o Options
			if tc.explicit {
				o.Resolver = s.addr
			}
			set, _, err := lookupOnce(t, o, tc.service)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("lookup = %v, %v; want an error containing %q", nodes(set), err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("lookup: %v; want %v", err, tc.want)
			case !slices.Equal(nodes(set), tc.want):
				t.Fatalf("lookup = %v; want %v (asked %q)", nodes(set), tc.want, s.questions())
			}
			if asked := s.questions(); tc.asked != nil && !slices.Equal(asked[:min(len(asked), len(tc.asked))], tc.asked) {
				t.Fatalf("asked %q; want first %q", asked, tc.asked)
			}
		})
	}
}
