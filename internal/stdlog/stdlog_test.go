package stdlog

import (
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"
)

func TestLinesGoToTheEntryAtTheLevel(t *testing.T) {
	defer goleak.VerifyNone(t)
	logger, hook := logtest.NewNullLogger()
	l := New(logrus.NewEntry(logger).WithField("listener", "outbound"), logrus.WarnLevel)
	l.Printf("http: TLS handshake error from %s", "127.0.0.1:1234")
	l.Print("second\n")
	entries := hook.AllEntries()
	if len(entries) != 2 {
		t.Fatalf("%d entries; want 2", len(entries))
	}
	e := entries[0]
	if e.Level != logrus.WarnLevel || e.Message != "http: TLS handshake error from 127.0.0.1:1234" || e.Data["listener"] != "outbound" {
		t.Fatalf("entry %v %q %v", e.Level, e.Message, e.Data)
	}
	if entries[1].Message != "second" {
		t.Fatalf("second message %q", entries[1].Message)
	}
}
