package dns

import (
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzAnswer feeds any bytes to the answer parser: it returns a message or
// an error, never panics.
func FuzzAnswer(f *testing.F) {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, Response: true}}
	name := dnsmessage.MustNewName("a.remora.test.")
	m.Answers = append(m.Answers, dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: name, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET, TTL: 5},
		Body:   &dnsmessage.SRVResource{Priority: 1, Weight: 2, Port: 8080, Target: name},
	})
	b, _ := m.Pack()
	f.Add(b, uint16(7))
	f.Fuzz(func(t *testing.T, b []byte, id uint16) {
		if msg, err := parse(b, id); err == nil && (msg.Header.ID != id || !msg.Header.Response) {
			t.Fatalf("took an answer to question %d for %d", msg.Header.ID, id)
		}
	})
}

// FuzzService: any service string is a question or an error.
func FuzzService(f *testing.F) {
	for _, s := range []string{"_http._tcp.api.internal", "web.internal:8080", "[::1]:53", "web", ":80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseService(s)
		if err == nil && !q.srv && (q.port < 1 || q.port > 65535 || q.name == "") {
			t.Fatalf("%q: %+v", s, q)
		}
	})
}

// FuzzResolvConf: any resolv.conf is a configuration within its bounds, and
// every name it makes of a name is absolute.
func FuzzResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), "user-service.pay")
	f.Add([]byte("domain example\n; comment\noptions ndots:99999999999999999999\nnameserver ::1\n"), "web.")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		conf := parseResolvConf(data, "53")
		if len(conf.servers) > maxNameservers || conf.ndots < 0 || conf.ndots > maxNdots {
			t.Fatalf("%q: %+v", data, conf)
		}
		for _, d := range conf.search {
			if d == "." || !strings.HasSuffix(d, ".") {
				t.Fatalf("%q: search domain %q", data, d)
			}
		}
		for _, n := range conf.names(name) {
			if !strings.HasSuffix(n, ".") {
				t.Fatalf("%q, %q: asked as %q", data, name, n)
			}
		}
	})
}
