package nacos

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery/nacos/internal/sdkguard"
)

// namingClient is the part of the SDK's naming client the adapter uses.
// naming_client.INamingClient implements it; unit tests use a fake.
//
// The SDK identifies a subscription by the address of the SubscribeParam's
// callback field, so Unsubscribe must get the very pointer that Subscribe
// got (nacos-sdk-go#845); the adapter keeps one param per subscription.
type namingClient interface {
	Subscribe(param *vo.SubscribeParam) error
	Unsubscribe(param *vo.SubscribeParam) error
	// GetService returns the SDK's cached copy of a subscribed service
	// (asking the server only when it has none).
	GetService(param vo.GetServiceParam) (model.Service, error)
	// ServerHealthy reports whether the gRPC connection is up (and, when
	// it is not, asks the HTTP API: call it sparingly).
	ServerHealthy() bool
	CloseClient()
	// RegisterInstance and DeregisterInstance announce and withdraw the
	// local application (see register.go).
	RegisterInstance(param vo.RegisterInstanceParam) (bool, error)
	DeregisterInstance(param vo.DeregisterInstanceParam) (bool, error)
}

var _ namingClient = (naming_client.INamingClient)(nil)

// sdkConfig is what the SDK client is built from; see newSDKClient.
type sdkConfig struct {
	opts      *Options
	password  string
	secretKey string
	cacheDir  string // the SDK adds naming/<namespace>
}

// clientConfig builds the SDK's client configuration. It is separate from
// newSDKClient so that tests can check it without a server.
func (c sdkConfig) clientConfig() *constant.ClientConfig {
	o := c.opts
	return constant.NewClientConfig(
		constant.WithNamespaceId(o.Namespace),
		constant.WithTimeoutMs(uint64(time.Duration(o.Timeout)/time.Millisecond)),
		constant.WithCacheDir(c.cacheDir),
		// The adapter reads the disk cache itself, only while the server
		// is unreachable (readDiskCache): loaded into the SDK, an entry
		// from an earlier run could make the SDK drop fresh lists as "out
		// of date" (it compares the server's lastRefTime).
		constant.WithNotLoadCacheAtStart(true),
		// Without it the SDK drops a push of an empty instance list and
		// keeps the last instances (nacos-sdk-go#423).
		constant.WithUpdateCacheWhenEmpty(true),
		// The SDK's logger is replaced by installSDKLogger; these only
		// matter if something initialises the SDK's own logger first.
		constant.WithLogDir(filepath.Join(c.cacheDir, "log")),
		constant.WithLogLevel("warn"),
		constant.WithUsername(o.Username),
		constant.WithPassword(c.password),
		constant.WithAccessKey(o.AccessKey),
		constant.WithSecretKey(c.secretKey),
		constant.WithAppName("remora"),
		// Plain gRPC, decided here: left unset, the SDK reads TLS settings
		// from nacos_remote_client_rpc_tls_* variables, and a bad
		// certificate there makes it call log.Fatalf.
		constant.WithTLS(constant.TLSConfig{Appointed: true}),
	)
}

func (c sdkConfig) serverConfigs() []constant.ServerConfig {
	o := c.opts
	out := make([]constant.ServerConfig, len(o.servers))
	for i, s := range o.servers {
		out[i] = constant.ServerConfig{
			Scheme:      s.Scheme,
			ContextPath: s.ContextPath,
			IpAddr:      s.Host,
			Port:        uint64(s.Port),
			GrpcPort:    uint64(s.Port + o.GRPCPortOffset),
		}
	}
	return out
}

// newSDKClient creates the SDK's naming client. It may block for seconds:
// it logs in (with a username) and tries to connect three times before it
// returns.
func newSDKClient(c sdkConfig) (namingClient, error) {
	var nc naming_client.INamingClient
	var err error
	var port int
	sdkguard.Do(func() {
		sdkLog.takeUDPPort()
		nc, err = clients.NewNamingClient(vo.NacosClientParam{ClientConfig: c.clientConfig(), ServerConfigs: c.serverConfigs()})
		port = sdkLog.takeUDPPort()
	})
	if err != nil {
		return nil, err
	}
	return &sdkClient{INamingClient: nc, udpPort: port}, nil
}

// sdkClient is the SDK's naming client and the port of the UDP listener it
// opened. Every client opens one (for Nacos 1.x pushes; on all interfaces,
// a random port in 54951..55950) and does not close it when the client
// closes: the goroutine reading it only notices the close after the next
// datagram. CloseClient sends that datagram, so a closed client leaves
// nothing behind. The port is learnt from the SDK's log line announcing
// it (see sdkLogger.Infof); 0 if that did not happen.
type sdkClient struct {
	naming_client.INamingClient
	udpPort int
}

// CloseClient closes the client and wakes its UDP listener to end.
func (c *sdkClient) CloseClient() {
	c.INamingClient.CloseClient()
	if c.udpPort > 0 {
		wakeUDP(c.udpPort)
	}
}

// wakeUDP sends one datagram to the SDK's UDP listener on port. It is not
// a valid push, so the SDK drops it, then sees that its client is closed
// and closes the socket.
func wakeUDP(port int) {
	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("remora: client closed"))
}

// readDiskCache reads the SDK's on-disk copy of a service, written by an
// earlier run: the JSON of a model.Service in
// <cacheDir>/naming/<namespace>/<group>@@<service>. ok is false when there
// is none (or it cannot be read).
func readDiskCache(cacheDir, namespace, group, service string) (hosts []model.Instance, ok bool) {
	if namespace == "" {
		namespace = constant.DEFAULT_NAMESPACE_ID
	}
	b, err := os.ReadFile(filepath.Join(cacheDir, "naming", namespace, group+sep+service))
	if err != nil {
		return nil, false
	}
	var svc model.Service
	if err := json.Unmarshal(b, &svc); err != nil {
		return nil, false
	}
	return svc.Hosts, true
}
