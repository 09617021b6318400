package dns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/duration"
)

// scriptedServer is a DNS server on loopback (UDP) that answers from what
// the test sets: records by name and type, or an error code for a name and
// type. A name it has nothing for is "no such name" (NXDOMAIN); a name
// with something of other types only is an empty answer (NODATA). It
// keeps the questions it was asked. Its methods may be called from any
// goroutine; it stops when the test ends.
type scriptedServer struct {
	addr string

	mu      sync.Mutex
	records map[scriptedKey][]dnsmessage.Resource
	rcodes  map[scriptedKey]dnsmessage.RCode
	asked   []string // "name type", in order
}

type scriptedKey struct {
	name string // lower case, with its final dot
	typ  dnsmessage.Type
}

func startScripted(t testing.TB) *scriptedServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &scriptedServer{addr: pc.LocalAddr().String(),
		records: map[scriptedKey][]dnsmessage.Resource{}, rcodes: map[scriptedKey]dnsmessage.RCode{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if msg := s.answer(buf[:n]); msg != nil {
				_, _ = pc.WriteTo(msg, from)
			}
		}
	}()
	return s
}

// addrs makes ips (IPv4 and IPv6 literals) name's A and AAAA records with
// ttl seconds, replacing the ones it had; a family that ips leave out is
// left as it was.
func (s *scriptedServer) addrs(name string, ttl uint32, ips ...string) {
	var a, aaaa []dnsmessage.ResourceBody
	for _, ip := range ips {
		addr := netip.MustParseAddr(ip)
		if addr.Is4() {
			a = append(a, &dnsmessage.AResource{A: addr.As4()})
		} else {
			aaaa = append(aaaa, &dnsmessage.AAAAResource{AAAA: addr.As16()})
		}
	}
	if len(a) > 0 {
		s.set(name, dnsmessage.TypeA, ttl, a...)
	}
	if len(aaaa) > 0 {
		s.set(name, dnsmessage.TypeAAAA, ttl, aaaa...)
	}
}

// srv makes records name's SRV records with ttl seconds.
func (s *scriptedServer) srv(name string, ttl uint32, records ...dnsmessage.SRVResource) {
	bodies := make([]dnsmessage.ResourceBody, len(records))
	for i := range records {
		bodies[i] = &records[i]
	}
	s.set(name, dnsmessage.TypeSRV, ttl, bodies...)
}

// set makes bodies (of type typ) name's records of typ with ttl seconds;
// none removes them.
func (s *scriptedServer) set(name string, typ dnsmessage.Type, ttl uint32, bodies ...dnsmessage.ResourceBody) {
	k := scriptedKey{strings.ToLower(name), typ}
	var rrs []dnsmessage.Resource
	for _, b := range bodies {
		rrs = append(rrs, dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: ttl},
			Body:   b,
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rrs) == 0 {
		delete(s.records, k)
		return
	}
	s.records[k] = rrs
}

// fail makes the server answer name's questions of type typ with rcode.
func (s *scriptedServer) fail(name string, typ dnsmessage.Type, rcode dnsmessage.RCode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcodes[scriptedKey{strings.ToLower(name), typ}] = rcode
}

// questions are the questions asked so far, "name type" each.
func (s *scriptedServer) questions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

func (s *scriptedServer) answer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	k := scriptedKey{strings.ToLower(q.Name.String()), q.Type}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, q.Name.String()+" "+strings.TrimPrefix(q.Type.String(), "Type"))
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true},
		Questions: []dnsmessage.Question{q},
	}
	if rcode, ok := s.rcodes[k]; ok {
		resp.Header.RCode = rcode
	} else if rrs, ok := s.records[k]; ok {
		resp.Answers = rrs
	} else if !s.knowsLocked(k.name) {
		resp.Header.RCode = dnsmessage.RCodeNameError
	}
	msg, err := resp.Pack()
	if err != nil {
		return nil
	}
	return msg
}

func (s *scriptedServer) knowsLocked(name string) bool {
	for k := range s.records {
		if k.name == name {
			return true
		}
	}
	for k := range s.rcodes {
		if k.name == name {
			return true
		}
	}
	return false
}

// lookupOnce opens a registry with opts and returns one lookup of
// service: its set, the TTL it would be asked again after, and its error.
func lookupOnce(t *testing.T, opts Options, service string) ([]discovery.Instance, time.Duration, error) {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = duration.Duration(time.Second)
	}
	if err := opts.validate(); err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	q, err := parseService(service)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return reg.(*Registry).lookup(ctx, q)
}
