package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// errNoSuchName is an authoritative "no such name" (NXDOMAIN): the name has
// no records, which is an answer (an empty set), not a failure.
var errNoSuchName = errors.New("no such name")

// client asks one resolver, over UDP and, for an answer too large for a
// datagram, over TCP (golang.org/x/net/dns/dnsmessage builds and parses the
// messages). It is safe for concurrent use.
type client struct {
	servers []string // host:port, asked in order
	timeout time.Duration
}

// answer is the records of one question, with the smallest TTL among them
// (0 when there are none).
type answer struct {
	rrs []dnsmessage.Resource
	ttl time.Duration
}

// query asks for name's records of type qt, of each server in turn until
// one answers (as the system's resolver does, each within the timeout).
// An NXDOMAIN answer is errNoSuchName; when no server answers (no answer,
// SERVFAIL, REFUSED, a bad message), the error names each one's failure.
func (c *client) query(ctx context.Context, name string, qt dnsmessage.Type) (answer, error) {
	var errs []error
	for _, server := range c.servers {
		a, err := c.queryServer(ctx, server, name, qt)
		if err == nil || errors.Is(err, errNoSuchName) || ctx.Err() != nil {
			return a, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return answer{}, errors.New("no DNS server to ask")
	}
	return answer{}, errors.Join(errs...)
}

// queryServer is query of one server.
func (c *client) queryServer(ctx context.Context, server, name string, qt dnsmessage.Type) (answer, error) {
	fqdn, err := dnsmessage.NewName(dnsName(name))
	if err != nil {
		return answer{}, fmt.Errorf("%q is not a DNS name: %v", name, err)
	}
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: fqdn, Type: qt, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return answer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := exchange(ctx, server, "udp", q, id)
	if err == nil && resp.Header.Truncated {
		resp, err = exchange(ctx, server, "tcp", q, id)
	}
	if err != nil {
		return answer{}, fmt.Errorf("asking %s for %s %s: %w", server, name, qt, err)
	}
	switch resp.Header.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return answer{}, errNoSuchName
	default:
		return answer{}, fmt.Errorf("asking %s for %s %s: %s", server, name, qt, resp.Header.RCode)
	}
	var a answer
	for _, rr := range resp.Answers {
		if rr.Header.Type != qt {
			continue // a CNAME on the way
		}
		a.rrs = append(a.rrs, rr)
		if ttl := time.Duration(rr.Header.TTL) * time.Second; len(a.rrs) == 1 || ttl < a.ttl {
			a.ttl = ttl
		}
	}
	return a, nil
}

// exchange sends q to server over network and returns the answer to id.
func exchange(ctx context.Context, server, network string, q []byte, id uint16) (*dnsmessage.Message, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if network == "tcp" {
		framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(q)), uint16(len(q)))
		if _, err := conn.Write(append(framed, q...)); err != nil {
			return nil, err
		}
		var size [2]byte
		if _, err := io.ReadFull(conn, size[:]); err != nil {
			return nil, err
		}
		buf := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return nil, err
		}
		return parse(buf, id)
	}
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, err := parse(buf[:n], id); err == nil {
			return m, nil
		} // another answer (a late one, or a spoof): read on
	}
}

func parse(b []byte, id uint16) (*dnsmessage.Message, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("a bad answer: %v", err)
	}
	if m.Header.ID != id || !m.Header.Response {
		return nil, errors.New("an answer to another question")
	}
	return &m, nil
}

// dnsName is name as a fully qualified DNS name (with its final dot).
func dnsName(name string) string {
	if len(name) > 0 && name[len(name)-1] == '.' {
		return name
	}
	return name + "."
}
