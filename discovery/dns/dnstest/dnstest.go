// Package dnstest runs a real DNS server for tests: Debian's dnsmasq on a
// free loopback port, authoritative for the zone remora.test, with SRV,
// address and TXT records the test sets. dnsmasq reads records only at
// start, so every change restarts it on the same port (a lookup during the
// restart fails, as one during any DNS outage would).
//
// The binary is the file named by $REMORA_DNSMASQ_BIN or else the one
// scripts/dnsmasq.sh finds (installing Debian's dnsmasq-base when it is
// missing). A server that cannot be started fails the test with the tail
// of its log; it is never skipped.
package dnstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/testproc"
)

// Zone is the zone the server answers for: names under it that it has no
// records for are "no such name".
const Zone = "remora.test"

var binary = testproc.Binary{Env: "REMORA_DNSMASQ_BIN", Script: "scripts/dnsmasq.sh", What: "dnsmasq", Kind: "dnsmasq"}

// SRV is one SRV record of a name.
type SRV struct {
	Target           string
	Port             int
	Priority, Weight int
}

// Server is a dnsmasq process. Its methods may be called from any
// goroutine.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	rec  Records
	cmd  *exec.Cmd
	done <-chan struct{}
}

// Records are the server's records, by name.
type Records struct {
	SRV   map[string][]SRV
	Hosts map[string][]string // A and AAAA
	TXT   map[string][]string // one TXT record's strings
	TTL   int                 // seconds, of every record
}

// Start starts a server with no records (and records' TTL 1 s) that stops
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary.Path()
	if err != nil {
		t.Fatal(err)
	}
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port,
		rec: Records{SRV: map[string][]SRV{}, Hosts: map[string][]string{}, TXT: map[string][]string{}, TTL: 1}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(); err != nil {
		t.Fatal(err)
	}
	testproc.CloseAtEnd(t, "dnstest", "dnsmasq", strconv.Itoa(port), s.logTail, s.Close)
	return s
}

// Addr is the server's address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Change lets f change the records, then restarts the server with them.
func (s *Server) Change(f func(r *Records)) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.rec)
	s.stopLocked()
	if err := s.startLocked(); err != nil {
		s.t.Fatal(err)
	}
}

// Restart stops the server and starts it again with the same records.
func (s *Server) Restart() { s.Change(func(*Records) {}) }

// Close stops the server.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	return nil
}

func (s *Server) stopLocked() {
	if s.cmd != nil {
		testproc.Stop(s.cmd, s.done, syscall.SIGTERM, 5*time.Second)
		s.cmd = nil
	}
}

func (s *Server) config() string {
	var b strings.Builder
	r := &s.rec
	fmt.Fprintf(&b, "port=%d\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nlocal=/%s/\nlocal-ttl=%d\n", s.port, Zone, r.TTL)
	for _, name := range sorted(r.SRV) {
		for _, r := range r.SRV[name] {
			fmt.Fprintf(&b, "srv-host=%s,%s,%d,%d,%d\n", name, r.Target, r.Port, r.Priority, r.Weight)
		}
	}
	for _, name := range sorted(r.Hosts) {
		if addrs := r.Hosts[name]; len(addrs) > 0 {
			fmt.Fprintf(&b, "host-record=%s,%s\n", name, strings.Join(addrs, ","))
		}
	}
	for _, name := range sorted(r.TXT) {
		if strs := r.TXT[name]; len(strs) > 0 {
			q := make([]string, len(strs))
			for i, v := range strs {
				q[i] = strconv.Quote(v)
			}
			fmt.Fprintf(&b, "txt-record=%s,%s\n", name, strings.Join(q, ","))
		}
	}
	return b.String()
}

func sorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "dnsmasq.log") }

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath())
	return testproc.Tail(string(b), 25)
}

// startLocked starts dnsmasq on the server's port. The port of a server
// stopped a moment ago may have been taken meanwhile as the source port of
// some process's short-lived UDP socket (a DNS client's): dnsmasq then
// exits with "Address already in use", and it is tried again for up to 5
// seconds.
func (s *Server) startLocked() error {
	conf := filepath.Join(s.dir, "dnsmasq.conf")
	if err := os.WriteFile(conf, []byte(s.config()), 0o600); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := s.startOnce(conf)
		if err == nil || attempt == 50 || !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) startOnce(conf string) error {
	args := []string{"--keep-in-foreground", "--conf-file=" + conf, "--pid-file=", "--log-facility=-"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // no nobody user needed; we drop nothing
	}
	cmd := exec.Command(s.bin, args...)
	done, err := testproc.Start(cmd, s.logPath())
	if err != nil {
		return err
	}
	ready := func() bool {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if err := testproc.WaitReady(done, 10*time.Second, ready); err != nil {
		testproc.Stop(cmd, done, syscall.SIGKILL, time.Second)
		return fmt.Errorf("dnstest: dnsmasq on port %d: %v\n%s", s.port, err, s.logTail())
	}
	s.cmd, s.done = cmd, done
	return nil
}
