package dns

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/remora-mesh/remora/discovery"
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
			want:    []string{"a.example:80 10.0.0.1 w=5"},
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
			wantErr: "web.example TypeAAAA: RCodeServerFailure",
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
