package nacos

import (
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
}

var _ namingClient = (naming_client.INamingClient)(nil)

// sdkConfig is what the SDK client is built from; see newSDKClient.
type sdkConfig struct {
	opts      *Options
	password  string
	secretKey string
	cacheDir  string // the SDK adds naming/<namespace>
	loadCache bool   // read the on-disk cache at start
}

// clientConfig builds the SDK's client configuration. It is separate from
// newSDKClient so that tests can check it without a server.
func (c sdkConfig) clientConfig() *constant.ClientConfig {
	o := c.opts
	return constant.NewClientConfig(
		constant.WithNamespaceId(o.Namespace),
		constant.WithTimeoutMs(uint64(time.Duration(o.Timeout)/time.Millisecond)),
		constant.WithCacheDir(c.cacheDir),
		constant.WithNotLoadCacheAtStart(!c.loadCache),
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
// returns a client that keeps reconnecting in the background.
func newSDKClient(c sdkConfig) (namingClient, error) {
	var nc naming_client.INamingClient
	var err error
	sdkguard.Do(func() {
		nc, err = clients.NewNamingClient(vo.NacosClientParam{ClientConfig: c.clientConfig(), ServerConfigs: c.serverConfigs()})
	})
	return nc, err
}
