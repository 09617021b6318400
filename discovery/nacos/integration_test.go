package nacos

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
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
		opts := []goleak.Option{goleak.IgnoreAnyFunction(
			"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client/naming_http.(*PushReceiver).handleClient")}
		if n := stuckSDKReconnects(); n > 0 {
			// Another SDK bug: a client closed while its own reconnect
			// was connecting to a server just back stays blocked in
			// notifyConnectionChange, with the callback goroutines of
			// the gRPC connection it made (three each). Only those.
			fmt.Fprintf(os.Stderr, "goleak: ignoring %d nacos-sdk-go reconnect goroutine(s) blocked after their client closed, and their gRPC connections' callback goroutines\n", n)
			opts = append(opts,
				goleak.IgnoreAnyFunction("github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc.(*RpcClient).reconnect"),
				goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
			if k := countGoroutines("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run("); k > 3*n {
				fmt.Fprintf(os.Stderr, "goleak: %d gRPC callback goroutines left, more than the %d of %d blocked SDK reconnects\n", k, 3*n, n)
				code = 1
			}
		}
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// stuckSDKReconnects counts the SDK's reconnect goroutines blocked in
// notifyConnectionChange: rpc_client.go sends the CONNECTED event on a
// channel of one that nobody reads once the client is closed.
func stuckSDKReconnects() int {
	return countGoroutines("rpc.(*RpcClient).notifyConnectionChange(", "rpc.(*RpcClient).reconnect(")
}

// countGoroutines counts the goroutines whose stack holds every one of
// frames (in any order).
func countGoroutines(frames ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			count++
		}
	}
	return count
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
