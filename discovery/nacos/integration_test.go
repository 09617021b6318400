package nacos

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// The integration tests run against one real Nacos-protocol server per
// test binary: Polaris, from nacostest, started on first use and stopped
// when the tests end. If it cannot be built or started, the tests that need
// it fail; they are never skipped.

func TestMain(m *testing.M) {
	code := nacostest.Run(m)
	if code == 0 {
		// nacos-sdk-go's UDP push receiver is never closed (an SDK bug):
		// one goroutine per client, ignored; anything else fails.
		if err := goleak.Find(goleak.IgnoreAnyFunction(
			"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client/naming_http.(*PushReceiver).handleClient")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func polaris(t *testing.T) *nacostest.Server {
	t.Helper()
	srv := nacostest.Shared(t, nacostest.Config{})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the last lines of the Polaris server's logs:\n%s", srv.LogTail())
		}
	})
	return srv
}

// openReal opens the adapter on srv the way Remora does (Parse, then
// Open), with its data dir under t's temporary directory unless mod sets
// one. It returns the registry and the logger's hook.
func openReal(t *testing.T, srv *nacostest.Server, dataDir string, mod ...func(*Options)) (discovery.Registry, *logtest.Hook) {
	t.Helper()
	o := &Options{Servers: []string{srv.Addr()}}
	for _, m := range mod {
		m(o)
	}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	reg, err := o.Open(discovery.Env{Name: "nacos-test", DataDir: dataDir, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return reg, hook
}

// The conformance suite against the real server, including a restart.
func TestConformance(t *testing.T) {
	srv := polaris(t)
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry {
			reg, _ := openReal(t, srv, "")
			return reg
		},
		Register: func(t *testing.T, service string, in discovery.Instance) {
			srv.Register(t, service, in)
		},
		Deregister: func(t *testing.T, service, id string) { srv.Deregister(t, service, id) },
		Restart:    func(t *testing.T) { srv.Restart(t) },
		Timeout:    10 * time.Second,
	})
}

var _ = context.Background
