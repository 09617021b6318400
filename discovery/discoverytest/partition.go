package discoverytest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Partition is a loopback TCP relay in front of a registry's server, for
// tests of a network partition: the server stays up (and its other
// clients, which reach it directly, see it go on: leases and TTLs expire
// there), while the client behind the relay cannot reach it.
//
// Cut drops the relayed connections and black-holes the partitioned side:
// new connections are accepted but nothing goes through and nothing comes
// back, as when packets are dropped, so the client's own timeouts are what
// end its requests. Heal lets connections through again (the black-holed
// ones are closed, so the client reconnects at once). Its methods may be
// called from any goroutine; it is closed when the test ends.
type Partition struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{} // relayed and held connections, both sides
	wg    sync.WaitGroup
	done  bool
}

// NewPartition starts a relay to target (host:port) on a free loopback
// port; Addr is its address.
func NewPartition(t testing.TB, target string) *Partition {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("discoverytest: partition relay to %s: %v", target, err)
	}
	p := &Partition{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the relay's address, host:port: the client's view of the server.
func (p *Partition) Addr() string { return p.ln.Addr().String() }

// Cut partitions the client from the server until Heal.
func (p *Partition) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	p.dropAll()
}

// Heal ends the partition.
func (p *Partition) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
	p.dropAll() // the held ones: the client's next attempt goes through
}

// dropAll closes every connection the relay holds, with a reset.
func (p *Partition) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	clear(p.conns)
}

func (p *Partition) close() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	p.ln.Close()
	p.dropAll()
	p.wg.Wait()
}

// track records conns, or closes them if the relay is closed, or if
// relayed is set and the partition was cut meanwhile.
func (p *Partition) track(relayed bool, conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || relayed && p.cut {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Partition) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve holds c while cut (reading and dropping what it sends), else
// relays it to the server.
func (p *Partition) serve(c net.Conn) {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if cut {
		if p.track(false, c) {
			_, _ = io.Copy(io.Discard, c) // until Heal or Cut closes it
			c.Close()
		}
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(true, c, s) {
		return
	}
	var once sync.Once
	end := func() { once.Do(func() { c.Close(); s.Close() }) }
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(s, c); end() })
	wg.Go(func() { _, _ = io.Copy(c, s); end() })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}
