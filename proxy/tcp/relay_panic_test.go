package tcp

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// panicReads is a connection whose Read panics.
type panicReads struct{ net.Conn }

func (panicReads) Read([]byte) (int, error) { panic("injected: Read panicked") }

// A panic in one direction of Relay, on a goroutine of its own, ended the
// process whoever called Relay (a CONNECT tunnel, whose handler's
// recovery does not reach it). Relay closes both connections and returns;
// the panic is logged with its stack by the standard logger.
func TestRelayPanicClosesBoth(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	relayLog = logrus.NewEntry(logger)
	t.Cleanup(func() { relayLog = logrus.NewEntry(logrus.StandardLogger()) })
	client, in := pair(t)
	out, node := pair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Relay(panicReads{in}, out, 0, 0)
	}()
	if !ended(t, done, 5*time.Second) {
		t.Fatal("Relay did not return")
	}
	for name, c := range map[string]net.Conn{"client": client, "node": node} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("the %s's end: %v; want EOF (closed)", name, err)
		}
	}
	if e := hook.AllEntries(); len(e) != 1 || e[0].Data["panic"] != "injected: Read panicked" ||
		!strings.Contains(e[0].Data["stack"].(string), "relay_panic_test.go") {
		t.Fatalf("logged %v; want one line, with the panic and its stack", e)
	}
}
