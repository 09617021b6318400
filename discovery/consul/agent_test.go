package consul

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
)

// The integration tests run against real Consul agents from consultest:
// one plain agent shared by most tests (and restarted by the conformance
// suite), one with ACLs in default-deny mode. Both are started on first use
// and stopped when the tests end (consultest.Main). If the agent cannot be
// built or started, the tests that need it fail; they are never skipped.

func TestMain(m *testing.M) {
	// The adapter and the Consul API client read these; the tests decide.
	for _, k := range []string{TokenEnv, TokenFileEnv, "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL",
		"CONSUL_NAMESPACE", "CONSUL_PARTITION", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"} {
		os.Unsetenv(k)
	}
	code := consultest.Run(m)
	if code == 0 {
		// The API client's idle keep-alive connections are not leaks.
		if err := goleak.Find(goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func mainAgent(t testing.TB) *consultest.Agent {
	t.Helper()
	return consultest.Shared(t, consultest.Config{Name: "main"})
}

func aclAgent(t testing.TB) *consultest.Agent {
	t.Helper()
	return consultest.Shared(t, consultest.Config{Name: "acl", ACL: true})
}

// open makes a registry on agent a through the "consul" factory, from an
// options block with the agent's address prepended.
func open(t *testing.T, a *consultest.Agent, extra string) discovery.Registry {
	t.Helper()
	o, err := parseYAML(t, "address: "+a.Addr()+"\n"+extra)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	reg, err := o.Open(discovery.Env{Name: "test", BaseDir: t.TempDir(), Log: testLog})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return reg
}

// watch opens a registry on a and a watcher on service, both closed at
// cleanup.
func watch(t *testing.T, a *consultest.Agent, service, extra string) discovery.Watcher {
	t.Helper()
	reg := open(t, a, extra)
	t.Cleanup(func() { _ = reg.Close() })
	w, err := reg.Watch(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

// testLog is the registries' logger: warnings go to stderr (shown when a
// test fails) and into testLogs, where tests look for leaked secrets.
var testLog, testLogs = func() (*logrus.Entry, *logtest.Hook) {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(os.Stderr)
	return logrus.NewEntry(l).WithField("test", "consul"), logtest.NewLocal(l)
}()
