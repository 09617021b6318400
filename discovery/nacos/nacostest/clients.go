package nacostest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/nacos/internal/sdkguard"
)

// DefaultGroup is the group instances are registered in unless Group says
// otherwise.
const DefaultGroup = constant.DEFAULT_GROUP

// Option changes how Register registers an instance.
type Option func(*vo.RegisterInstanceParam)

// Cluster registers the instance in cluster name (default: none, which
// Nacos calls "DEFAULT").
func Cluster(name string) Option { return func(p *vo.RegisterInstanceParam) { p.ClusterName = name } }

// Group registers the instance in group name (default DEFAULT_GROUP).
func Group(name string) Option { return func(p *vo.RegisterInstanceParam) { p.GroupName = name } }

// Weight registers the instance with weight w instead of in.Weight, for
// weights with a fraction.
func Weight(w float64) Option { return func(p *vo.RegisterInstanceParam) { p.Weight = w } }

// Disabled registers the instance with enabled=false.
func Disabled() Option { return func(p *vo.RegisterInstanceParam) { p.Enable = false } }

// client is the SDK client that registered one instance.
type client struct {
	nc    naming_client.INamingClient
	param vo.RegisterInstanceParam
}

func (c *client) close() { sdkguard.Do(c.nc.CloseClient) }

var clientSeq atomic.Int64

// NewClient returns a nacos-sdk-go naming client of the server (gRPC,
// namespace public), with its cache and log files under the server's
// directory. It is closed when t ends.
func (s *Server) NewClient(t testing.TB) naming_client.INamingClient {
	t.Helper()
	nc, err := s.newClient()
	if err != nil {
		t.Fatalf("nacostest: creating a Nacos client: %v", err)
	}
	t.Cleanup(func() { sdkguard.Do(nc.CloseClient) })
	return nc
}

func (s *Server) newClient() (naming_client.INamingClient, error) {
	dir := filepath.Join(s.dir, "clients", fmt.Sprint(clientSeq.Add(1)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cc := constant.NewClientConfig(
		constant.WithTimeoutMs(5000),
		constant.WithCacheDir(filepath.Join(dir, "cache")),
		constant.WithNotLoadCacheAtStart(true),
		constant.WithUpdateCacheWhenEmpty(true),
		constant.WithLogDir(filepath.Join(dir, "log")), // unused: see sdklog.go
		constant.WithLogLevel("warn"),
		constant.WithTLS(constant.TLSConfig{Appointed: true}),
	)
	var nc naming_client.INamingClient
	var err error
	sdkguard.Do(func() {
		nc, err = clients.NewNamingClient(vo.NacosClientParam{
			ClientConfig: cc,
			ServerConfigs: []constant.ServerConfig{{
				IpAddr: "127.0.0.1", Port: uint64(s.httpPort), GrpcPort: uint64(s.GRPCPort()),
			}},
		})
	})
	if err == nil {
		// Let the client handle its "connected" event before it is used:
		// the SDK then registers again whatever it has cached, which a
		// registration made meanwhile would be (and a deregistration
		// overtaken by that would be undone).
		time.Sleep(100 * time.Millisecond)
	}
	return nc, err
}

// Register creates or replaces instance in of service, as an ephemeral
// instance registered over gRPC by an SDK client of its own (one per
// service and in.ID, kept until Deregister or Close), with in's address,
// port, weight, metadata and healthy flag (enabled unless Disabled). It
// fails t on error.
func (s *Server) Register(t testing.TB, service string, in discovery.Instance, opts ...Option) {
	t.Helper()
	p := vo.RegisterInstanceParam{
		Ip: in.Address, Port: uint64(in.Port), Weight: float64(in.Weight), Enable: true, Healthy: in.Healthy,
		Metadata: maps.Clone(in.Metadata), ServiceName: service, GroupName: DefaultGroup, Ephemeral: true,
	}
	if p.Metadata == nil {
		p.Metadata = map[string]string{}
	}
	for _, o := range opts {
		o(&p)
	}
	key := service + "\x00" + in.ID
	s.mu.Lock()
	c := s.clients[key]
	closed := s.closed
	s.mu.Unlock()
	if closed {
		t.Fatalf("nacostest: Register on closed Polaris server %q", s.cfg.Name)
	}
	if c != nil && (c.param.Ip != p.Ip || c.param.Port != p.Port || c.param.ClusterName != p.ClusterName || c.param.GroupName != p.GroupName) {
		s.Deregister(t, service, in.ID) // moved: remove the old registration
		c = nil
	}
	if c == nil {
		nc, err := s.newClient()
		if err != nil {
			t.Fatalf("nacostest: creating a Nacos client for %s/%s: %v", service, in.ID, err)
		}
		c = &client{nc: nc}
	}
	ok, err := RegisterInstance(c.nc, p)
	if err != nil || !ok {
		c.close()
		t.Fatalf("nacostest: registering %s/%s (%s:%d): ok=%v, %v", service, in.ID, p.Ip, p.Port, ok, err)
	}
	c.param = p
	s.mu.Lock()
	s.clients[key] = c
	s.mu.Unlock()
}

// RegisterInstance registers p with nc, trying again on a refusal: a new SDK client
// registers its instance again when its connection event arrives, and
// Polaris, which batches registrations for 32 ms, refuses the second of two
// concurrent requests for one instance ("the same instance request"; Nacos
// takes both).
func RegisterInstance(nc naming_client.INamingClient, p vo.RegisterInstanceParam) (ok bool, err error) {
	for attempt := 1; ; attempt++ {
		ok, err = nc.RegisterInstance(p)
		if (ok && err == nil) || attempt == 5 {
			return ok, err
		}
		time.Sleep(50 * time.Millisecond) // past Polaris' 32 ms batch
	}
}

// dropClients closes the client of every registered instance (the
// server must be stopped: a client still trying to reconnect must not
// succeed) and returns them, for registerAgain.
func (s *Server) dropClients() map[string]*client {
	s.mu.Lock()
	old := s.clients
	s.clients = map[string]*client{}
	s.mu.Unlock()
	for _, c := range old {
		c.close()
	}
	return old
}

// registerAgain registers the instances of dropped clients, each by a new
// client.
func (s *Server) registerAgain(old map[string]*client) error {
	var errs []error
	for key, c := range old {
		nc, err := s.newClient()
		if err == nil {
			var ok bool
			if ok, err = RegisterInstance(nc, c.param); err == nil && !ok {
				err = errors.New("refused")
			}
			if err != nil {
				sdkguard.Do(nc.CloseClient)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("registering %s:%d of %s again: %w", c.param.Ip, c.param.Port, c.param.ServiceName, err))
			continue
		}
		s.mu.Lock()
		s.clients[key] = &client{nc: nc, param: c.param}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Deregister removes instance id of service (as registered by Register,
// whose client it closes, or RegisterHTTP), failing t on error. An unknown
// id is an error.
func (s *Server) Deregister(t testing.TB, service, id string) {
	t.Helper()
	if ok, err := s.deregisterHTTP(service, id); ok {
		if err != nil {
			t.Fatalf("nacostest: deregistering %s/%s over HTTP: %v", service, id, err)
		}
		return
	}
	key := service + "\x00" + id
	s.mu.Lock()
	c := s.clients[key]
	delete(s.clients, key)
	s.mu.Unlock()
	if c == nil {
		t.Fatalf("nacostest: Deregister(%q, %q): no such instance was registered", service, id)
	}
	defer c.close()
	ok, err := c.nc.DeregisterInstance(vo.DeregisterInstanceParam{
		Ip: c.param.Ip, Port: c.param.Port, Cluster: c.param.ClusterName,
		ServiceName: service, GroupName: c.param.GroupName, Ephemeral: true,
	})
	if err != nil || !ok {
		t.Fatalf("nacostest: deregistering %s/%s: ok=%v, %v", service, id, ok, err)
	}
}
