package nacos

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func newTestSDKLogger(level logrus.Level) (*sdkLogger, *logtest.Hook, *time.Time) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(level)
	now := time.Unix(1000, 0)
	s := &sdkLogger{target: l, last: map[string]*limitState{}, secrets: map[string]int{}, now: func() time.Time { return now }}
	return s, hook, &now
}

// SDK levels map one step down; debug and info are only seen at debug.
func TestSDKLogLevels(t *testing.T) {
	s, hook, _ := newTestSDKLogger(logrus.InfoLevel)
	s.Debugf("d %d", 1)
	s.Infof("i %d", 1)
	s.Info("i")
	if n := len(hook.AllEntries()); n != 0 {
		t.Fatalf("%d SDK debug/info lines logged at info level", n)
	}
	s.Warnf("w %d", 1)
	s.Errorf("e %d", 1)
	es := hook.AllEntries()
	if len(es) != 2 || es[0].Level != logrus.InfoLevel || es[1].Level != logrus.WarnLevel ||
		es[0].Message != "w 1" || es[0].Data["component"] != "nacos-sdk" {
		t.Fatalf("entries %+v", es)
	}
	s2, hook2, _ := newTestSDKLogger(logrus.DebugLevel)
	s2.Infof("service key:%s was updated to:%s", "k", "{}")
	if e := hook2.LastEntry(); e == nil || e.Level != logrus.DebugLevel || e.Message != "service key:k was updated to:{}" {
		t.Fatalf("info at debug level: %+v", e)
	}
}

// One warning or error format is logged at most once a minute, with the
// number of repeats left out.
func TestSDKLogRateLimit(t *testing.T) {
	s, hook, now := newTestSDKLogger(logrus.InfoLevel)
	for i := range 100 {
		s.Errorf("Send request fail, request=%s, retryTimes=%v", "SubscribeServiceRequest", i)
		s.Warn("reconnect failed ", i)
	}
	if n := len(hook.AllEntries()); n != 2 {
		t.Fatalf("%d lines for 200 repeats of 2 messages; want 2", n)
	}
	*now = now.Add(sdkLogEvery)
	s.Errorf("Send request fail, request=%s, retryTimes=%v", "x", 1)
	e := hook.LastEntry()
	if len(hook.AllEntries()) != 3 || e.Data["repeats_not_logged"] != 99 {
		t.Fatalf("after a minute: %d lines, last %+v", len(hook.AllEntries()), e)
	}
}

// Credentials never reach the log: configured secrets anywhere in a
// message, and the values of credential fields in the forms the SDK logs.
func TestSDKLogRedaction(t *testing.T) {
	s, hook, _ := newTestSDKLogger(logrus.DebugLevel)
	s.secrets["pw-123"] = 1
	s.secrets["sk-456"] = 1
	s.rebuild()
	msgs := []string{
		`api</v1/ns/operator/metrics>,method:<GET>, params:<{"accessToken":"tok-789","namespaceId":"public"}>, call domain error`,
		`login in err: password=pw-123&username=u`,
		`request=InstanceRequest, body={"headers":{"accessToken":"tok-789"}}`,
		`map[accessToken:tok-789 ak:AKID signature:sig-000]`,
		`Spas-Signature: sig-000, secretKey=sk-456`,
		`with password pw-123 in the middle`,
	}
	for _, m := range msgs {
		s.Infof("%s", m)
	}
	for _, e := range hook.AllEntries() {
		for _, secret := range []string{"pw-123", "sk-456", "tok-789", "sig-000", "AKID"} {
			if strings.Contains(e.Message, secret) {
				t.Errorf("%q leaked: %s", secret, e.Message)
			}
		}
		if !strings.Contains(e.Message, redacted) {
			t.Errorf("nothing redacted in %s", e.Message)
		}
	}
	// Words that merely contain a field name are left alone.
	s.Infof("break: 1, speak=2")
	if e := hook.LastEntry(); e.Message != "break: 1, speak=2" {
		t.Errorf("over-redacted: %s", e.Message)
	}
}

// installSDKLogger counts secrets per registry: one released registry's
// secret stays redacted while another still uses it.
func TestInstallSDKLoggerSecrets(t *testing.T) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	r1 := installSDKLogger(l, "shared-secret-1", "")
	r2 := installSDKLogger(l, "shared-secret-1")
	r1()
	r1() // idempotent
	sdkLog.Infof("x shared-secret-1 y")
	if e := hook.LastEntry(); e == nil || strings.Contains(e.Message, "shared-secret-1") {
		t.Fatalf("entry %+v", e)
	}
	r2()
	sdkLog.mu.Lock()
	_, still := sdkLog.secrets["shared-secret-1"]
	sdkLog.mu.Unlock()
	if still {
		t.Fatal("the secret is still registered after both registries released it")
	}
}

// The port of a new client's UDP listener is learnt from the SDK's log.
func TestSDKLogUDPPort(t *testing.T) {
	s, _, _ := newTestSDKLogger(logrus.InfoLevel)
	s.Infof("udp server start, port: 55123")
	if p := s.takeUDPPort(); p != 55123 {
		t.Fatalf("port %d", p)
	}
	if p := s.takeUDPPort(); p != 0 {
		t.Fatalf("port %d after taking it", p)
	}
}
