// Package consul is Remora's Consul registry adapter, registered as type
// "consul". Blank-import it to make the type available:
//
//	import _ "github.com/remora-mesh/remora/discovery/consul"
//
// # Watching
//
// Each watched service is followed with blocking queries on
// /v1/health/service/<name> (WaitIndex, WaitTime = wait_time): one goroutine
// per watcher, one query in flight at a time, and at least 200 ms between
// the starts of two queries so that an index that changes all the time
// cannot make the watcher spin. Every five wait_times a query starts afresh
// (index 0), so that a server checks the token again: agents answer
// blocking queries from a streamed view that was seen to outlive a deleted
// token. An index that goes backwards, or is 0,
// restarts from 0 (a fresh read). Errors (an unreachable agent, a 5xx, an
// ACL denial) are returned by Next and never empty the set; the watcher
// retries with exponential backoff and jitter (250 ms doubling to 1 s) and
// a fresh read. A result from which Consul's ACLs removed instances is
// reported as ErrPermissionDenied instead of being published, since the set
// is incomplete. A panic in a watcher's goroutine (the client, an answer
// no test foresaw) is logged with its stack and returned by Next as an
// error like those; the watcher starts again with a fresh read a second
// later.
//
// # Mapping
//
// Only instances whose checks all pass are returned (Consul filters them),
// unless include_warning is set. Each entry becomes a discovery.Instance:
//
//   - ID: "<node name>/<service ID>", stable across changes of tags, Meta,
//     weights or address;
//   - Address: Service.Address, else Node.Address; Port: Service.Port;
//   - Weight: Service.Weights.Passing (1 if unset), or Weights.Warning for
//     an instance in "warning" (include_warning only; 0 drains it);
//   - Healthy: true (Consul's verdict decides membership);
//   - Metadata: the tags, then Service.Meta on top (Meta wins on a shared
//     key). A tag "key=value" becomes the label key=value (split at the
//     first "="); a bare tag such as "canary" becomes canary=true, so a
//     `canary` tag and a `canary: "true"` Meta entry select the same nodes;
//     a tag with an empty key is ignored.
//
// Entries without a usable address or port are left out with a warning.
//
// # Registering
//
// Register announces the local application as an agent service with a TTL
// check. One reconciler goroutine per registration keeps it there: it
// passes the check every second and registers the service again (with its
// labels and check) whenever that fails, so an agent that restarted
// without its state, or reaped the service, has it back within about a
// second of answering; and it reads the service back after each pass, so
// one that someone else changed (labels, tags, weights, address, port, its
// checks) is registered as wanted again within about two seconds (see
// register.go).
//
// The configuration is described on Options.
package consul

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/retry"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the registry type name used in the config.
const Type = "consul"

func init() { discovery.Register(factory{}) }

// ErrPermissionDenied is wrapped by the errors Next returns when Consul's
// ACLs refuse the token (HTTP 403) or hide instances from it. Consul does not
// tell a request without a token that it hid anything, so with no token
// configured an empty answer from an agent whose ACLs deny by default is
// reported as this error too; `token: anonymous` names the anonymous token
// explicitly for setups where it is meant to read the service.
var ErrPermissionDenied = errors.New("permission denied by Consul ACLs")

// healthClient is the one Consul call the adapter makes: a (blocking) health
// query for one service. *api.Health implements it; unit tests use a fake.
type healthClient interface {
	Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

var (
	_ discovery.Factory  = factory{}
	_ discovery.Options  = (*Options)(nil)
	_ discovery.Registry = (*registry)(nil)
	_ discovery.Watcher  = (*watcher)(nil)
	_ healthClient       = (*api.Health)(nil)
)

type factory struct{}

func (factory) Type() string { return Type }

// Registers implements discovery.RegistrarFactory.
func (factory) Registers() {}

func (factory) Parse(decode func(v any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.normalize(); err != nil {
		return nil, err
	}
	return &o, nil
}

// getenv is os.Getenv; tests replace it.
var getenv = os.Getenv

// Check implements discovery.Checker: token_file and the TLS files are
// read and parsed as Open reads them, relative to baseDir.
// $CONSUL_HTTP_TOKEN_FILE is the environment's, not the config's: it is
// read by Open only.
func (o *Options) Check(baseDir string) error {
	var errs []error
	if o.TokenFile != "" {
		if _, err := o.token(baseDir); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := o.tlsConfig(baseDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// EnvFiles implements discovery.EnvFiler: the file $CONSUL_HTTP_TOKEN_FILE
// names, when the config gives no token (Open reads it then).
func (o *Options) EnvFiles() []string {
	f := getenv(TokenFileEnv)
	if o.Token != "" || o.TokenFile != "" || f == "" {
		return nil
	}
	if abs, err := filepath.Abs(f); err == nil {
		f = abs
	}
	return []string{f}
}

// Open implements discovery.Options: it reads the token and TLS files and
// builds the HTTP client, without contacting Consul. It fails only when a
// file that Check accepted cannot be read any more. A token file named by
// $CONSUL_HTTP_TOKEN_FILE that cannot be read does not fail it: every
// watch and registration of the registry reports that error instead (the
// registry never queries without the token it was told to use).
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	log := env.Logger().WithField("registry", env.Name)
	token, tokenErr := o.token(env.BaseDir)
	if tokenErr != nil && o.TokenFile != "" {
		return nil, tokenErr
	}
	tlsConf, err := o.tlsConfig(env.BaseDir)
	if err != nil {
		return nil, err
	}
	if tokenErr != nil {
		log.WithError(tokenErr).Error("consul: cannot read the ACL token; every watch and registration fails until it is (the file is watched)")
		r := newRegistry(failing{tokenErr}, o, log)
		r.agent = failing{tokenErr}
		return r, nil
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 64, // one long poll per watched service
		IdleConnTimeout:     90 * time.Second,
	}
	httpClient := &http.Client{Transport: boundedTransport{transport}}
	client, err := api.NewClient(&api.Config{
		Address:    o.Address,
		Scheme:     o.Scheme,
		Datacenter: o.Datacenter,
		Namespace:  o.Namespace,
		Partition:  o.Partition,
		Token:      token,
		HttpClient: httpClient,
	})
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	r := newRegistry(client.Health(), o, log)
	r.anonymous = token == ""
	r.closeIdle = transport.CloseIdleConnections
	r.agent = client.Agent()
	return r, nil
}

// tlsConfig loads the TLS files, relative to baseDir. Errors name the
// field ("tls.ca_file: ..."). A server_name with a port is used without it,
// as Consul's own client does.
func (o *Options) tlsConfig(baseDir string) (*tls.Config, error) {
	t := o.TLS
	if host, _, err := net.SplitHostPort(t.ServerName); err == nil {
		t.ServerName = host
	}
	tc, err := t.Config(baseDir)
	if err != nil {
		return nil, fmt.Errorf("tls.%w", err)
	}
	return tc, nil
}

// failing is the healthClient and agentClient of a registry that cannot
// talk to Consul at all: every call returns err.
type failing struct{ err error }

func (f failing) Service(string, string, bool, *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	return nil, nil, f.err
}

func (f failing) ServiceRegisterOpts(*api.AgentServiceRegistration, api.ServiceRegisterOpts) error {
	return f.err
}

func (f failing) ServiceDeregisterOpts(string, *api.QueryOptions) error { return f.err }

func (f failing) UpdateTTLOpts(string, string, string, *api.QueryOptions) error { return f.err }

func (f failing) AgentHealthServiceByIDOpts(string, *api.QueryOptions) (string, *api.AgentServiceChecksInfo, error) {
	return "", nil, f.err
}

func (f failing) ChecksWithFilterOpts(string, *api.QueryOptions) (map[string]*api.AgentCheck, error) {
	return nil, f.err
}

func (f failing) CheckDeregisterOpts(string, *api.QueryOptions) error { return f.err }

// token resolves the ACL token: token, else token_file, else the consul
// CLI's variables $CONSUL_HTTP_TOKEN_FILE then $CONSUL_HTTP_TOKEN (the order
// the Consul API client itself applies). "" means no token: Consul's
// anonymous token.
func (o *Options) token(baseDir string) (string, error) {
	readFile := func(field, path string) (string, error) { return secret.ReadFile(field, path, "the ACL token") }
	switch {
	case o.Token != "":
		return string(o.Token), nil
	case o.TokenFile != "":
		return readFile("token_file", tlsfiles.Resolve(baseDir, o.TokenFile))
	case getenv(TokenFileEnv) != "":
		return readFile("$"+TokenFileEnv, getenv(TokenFileEnv))
	}
	return strings.TrimSpace(getenv(TokenEnv)), nil
}

// Retry and pacing defaults.
const (
	defaultMinInterval = 200 * time.Millisecond
	defaultBackoffBase = 250 * time.Millisecond
	defaultBackoffMax  = time.Second // a returning agent is seen within a second
)

// registry follows services of one Consul agent. Its fields are set by
// newRegistry (and by tests before the first Watch) and are read-only after;
// watchers is guarded by mu.
type registry struct {
	client      healthClient
	agent       agentClient // registers the local application; nil in unit tests
	tag         string
	includeWarn bool // else passing only, filtered by Consul
	anonymous   bool // no ACL token configured
	waitTime    time.Duration
	datacenter  string
	namespace   string
	partition   string
	log         *logrus.Entry

	minInterval time.Duration // between the starts of two queries
	backoffBase time.Duration
	backoffMax  time.Duration
	now         func() time.Time
	sleep       func(ctx context.Context, d time.Duration) bool // false if ctx ended
	rand        func() float64                                  // [0,1), for jitter
	closeIdle   func()
	regTTL      time.Duration // of a registration's check
	regRefresh  time.Duration // how often a registration passes its check

	mu       sync.Mutex
	watchers map[*watcher]struct{}
	regs     map[string]*registration // live registrations by service ID
	// withdrawals are deregistrations the agent did not take, made again
	// in the background (see withdrawLater), by service ID.
	withdrawals map[string]*withdrawal
	closed      bool
	regWG       sync.WaitGroup // the registrations' reconcilers
}

func newRegistry(c healthClient, o *Options, log *logrus.Entry) *registry {
	return &registry{
		client:      c,
		tag:         o.Tag,
		includeWarn: o.IncludeWarning,
		waitTime:    time.Duration(o.WaitTime),
		datacenter:  o.Datacenter,
		namespace:   o.Namespace,
		partition:   o.Partition,
		log:         log,
		minInterval: defaultMinInterval,
		backoffBase: defaultBackoffBase,
		backoffMax:  defaultBackoffMax,
		now:         time.Now,
		sleep:       retry.Sleep,
		rand:        rand.Float64,
		closeIdle:   func() {},
		regTTL:      RegistrationTTL,
		regRefresh:  defaultTTLRefresh,
		watchers:    map[*watcher]struct{}{},
		regs:        map[string]*registration{},
		withdrawals: map[string]*withdrawal{},
	}
}

// Watch implements discovery.Registry. ctx bounds only this call; the
// watcher runs until Stop or Close.
func (r *registry) Watch(ctx context.Context, service string) (discovery.Watcher, error) {
	if service == "" {
		return nil, errors.New("consul: empty service name")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("consul: watch %q: registry closed", service)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		Latest:  discovery.NewLatest(),
		reg:     r,
		service: service,
		log:     r.log.WithField("service", service),
		cancel:  cancel,
		exited:  make(chan struct{}),
	}
	r.watchers[w] = struct{}{}
	go w.run(runCtx)
	return w, nil
}

// Close implements discovery.Registry: it stops every watcher and every
// registration's reconciler and waits for the reconcilers. Registered
// services are not deregistered (Deregister does that): their checks go
// critical after the TTL.
func (r *registry) Close() error {
	r.mu.Lock()
	r.closed = true
	ws := slices.Collect(maps.Keys(r.watchers))
	r.mu.Unlock()
	for _, w := range ws {
		_ = w.Stop()
	}
	r.stopRegistrations()
	r.closeIdle()
	return nil
}

func (r *registry) forget(w *watcher) {
	r.mu.Lock()
	delete(r.watchers, w)
	r.mu.Unlock()
}

// maxAnswerBytes bounds one answer of the agent. A service's health list
// of thousands of instances takes a few MiB; one instance with a huge
// Meta value (a bug, or a hostile registration) would otherwise be read
// whole, and again at every change, until the sidecar ran out of memory.
// A variable for tests.
var maxAnswerBytes int64 = 64 << 20

// boundedTransport fails an answer larger than maxAnswerBytes: the watch
// then reports a registry error (the upstream keeps its nodes, stale),
// naming the size.
type boundedTransport struct{ http.RoundTripper }

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.ContentLength > maxAnswerBytes {
		resp.Body.Close()
		return nil, errAnswerTooLarge{req.URL.Path, maxAnswerBytes}
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: maxAnswerBytes, path: req.URL.Path}
	return resp, nil
}

// boundedBody reads up to left bytes of an answer, and fails past them.
type boundedBody struct {
	io.ReadCloser
	left int64
	path string
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errAnswerTooLarge{b.path, maxAnswerBytes}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one more byte tells a body of exactly the limit from a larger one
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, errAnswerTooLarge{b.path, maxAnswerBytes}
	}
	return n, err
}

// errAnswerTooLarge is an answer of the agent over maxAnswerBytes.
type errAnswerTooLarge struct {
	path  string
	limit int64
}

func (e errAnswerTooLarge) Error() string {
	return fmt.Sprintf("consul: the answer to %s is larger than %d bytes; refused", e.path, e.limit)
}
