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
	server  string // host:port
	timeout time.Duration
}

// answer is the records of one question, with the smallest TTL among them
// (0 when there are none).
type answer struct {
	rrs []dnsmessage.Resource
	ttl time.Duration
}

// query asks for name's records of type qt. An NXDOMAIN answer is
// errNoSuchName; any other failure (no answer, SERVFAIL, REFUSED, a bad
// message) is an error.
func (c *client) query(ctx context.Context, name string, qt dnsmessage.Type) (answer, error) {
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
	resp, err := c.exchange(ctx, "udp", q, id)
	if err == nil && resp.Header.Truncated {
		resp, err = c.exchange(ctx, "tcp", q, id)
	}
	if err != nil {
		return answer{}, fmt.Errorf("asking %s for %s %s: %w", c.server, name, qt, err)
	}
	switch resp.Header.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return answer{}, errNoSuchName
	default:
		return answer{}, fmt.Errorf("asking %s for %s %s: %s", c.server, name, qt, resp.Header.RCode)
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

// exchange sends q over network and returns the answer to id.
func (c *client) exchange(ctx context.Context, network string, q []byte, id uint16) (*dnsmessage.Message, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, c.server)
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
