// Package nacos is Remora's Nacos registry adapter, registered as type
// "nacos". Blank-import it to make the type available:
//
//	import _ "github.com/remora-mesh/remora/discovery/nacos"
//
// It uses nacos-sdk-go v2: a gRPC connection to a Nacos 2.x server (HTTP
// port + 1000) over which the server pushes instance lists.
//
// # Watching
//
// Watchers are fanned out inside Remora from one SDK subscription per group
// and service, whatever their clusters: the subscription's goroutine calls
// Subscribe once, with a callback that copies the list it is handed and
// wakes the goroutine, which hands each watcher the hosts of its clusters.
// This sidesteps three SDK pitfalls:
//
//   - nacos-sdk-go#423: the SDK drops a push of an empty instance list
//     unless UpdateCacheWhenEmpty is set; it is always set, so removing
//     the last instance delivers the empty set;
//   - nacos-sdk-go#803: subscribing one service twice with different
//     clusters broke the earlier callback; clusters are filtered by the
//     adapter, and the SDK sees one subscription per service;
//   - nacos-sdk-go#845: Unsubscribe finds the callback by the address of
//     the SubscribeParam's callback field, so it needs the very param given
//     to Subscribe; each subscription keeps its own and unsubscribes with
//     it when its last watcher stops (a later watch of the service waits
//     for that to finish before it subscribes again).
//
// A Subscribe that fails is retried with backoff (250 ms doubling to 1 s).
// A panic in a subscription's goroutine (the SDK, a list no test foresaw)
// is logged with its stack and returned by its watchers' Next as an error;
// the subscription unsubscribes and subscribes again a second later. A
// panic in the callback, which would unwind the SDK's goroutine and end
// the process, is logged and reported the same way, and the SDK's copy of
// the service is read in place of the list it lost.
//
// # Connection
//
// The adapter uses an SDK client only while it is connected (see
// supervise): it creates one once a server's gRPC port accepts
// connections, checks the connection every 250 ms, and when it is lost
// closes the client, reports ErrUnreachable to every watcher (Remora keeps
// the nodes, marked stale) and starts over with a new client, on which the
// services are subscribed again; while no server answers it tries again
// with backoff capped at one second, so a returning server is used within
// about a second. The SDK's own reconnect path is not used: it races with
// requests made meanwhile (found with -race). Each SDK client also opens a
// UDP listener for Nacos 1.x pushes, which the SDK never closes; the
// adapter wakes it on close so that it ends. One SDK leak is left: a
// client closed while the SDK's own reconnect goroutine was connecting to a
// server that had just come back keeps that goroutine, blocked sending its
// CONNECTED event on a channel nobody reads any more (rpc_client.go's
// notifyConnectionChange), with the gRPC connection it made. It takes a
// close within that attempt, which a server back within a poll of the
// connection (a blink) makes possible. A panic in supervising the
// connection (the SDK creating a client or checking it) is a failed
// connection: it is logged with its stack, the client is closed, and
// another is created after the backoff.
//
// A server that restarted lists no ephemeral instances (or lists them
// unhealthy) until their applications have reconnected and registered
// them again. So in the first 30 seconds after a service is subscribed
// again, or subscribed on a start that has the last run's disk cache
// (Remora need not have seen the server down: both may have restarted at
// once), a list in which a cluster Remora had usable instances of has
// none is held for that cluster (see subscription.deliver): its nodes
// stay, marked stale, until the server lists usable instances of it or
// the 30 seconds have passed. A start while the server was down, with no
// disk cache to compare with, holds a first list without usable instances
// whole: the upstream keeps serving its own on-disk snapshot. Any other
// list is applied at once: an empty one states that every instance is
// gone.
//
// # Cold start
//
// The SDK writes each subscribed service to a file under the cache
// directory (cache_dir, else <data_dir>/nacos/<registry name>; without
// either there is no disk cache). While no server is reachable, a watch of
// a service with such a file first delivers its instances (the last run's)
// and then ErrUnreachable, so the upstream serves the last known nodes,
// marked stale, until the server answers.
//
// # Mapping
//
// Each host of the service becomes a discovery.Instance (see toInstance):
// ID "<cluster>/<ip>:<port>" (an instance without a cluster is in
// "DEFAULT"), Address Ip, Port Port, Weight round(weight × weight_scale)
// with positive weights at least 1 and 0 meaning drained (see mapWeight),
// Healthy = healthy AND enabled, Metadata the instance's metadata without
// the server's internal keys ("internal-nacos-*"). Unhealthy and disabled
// instances are delivered with Healthy=false, so they are listed in
// /upstreams but never picked; Nacos servers (and Polaris) leave disabled
// instances out of pushes altogether.
//
// An upstream's service may be written as name, group@@name or
// group@@name@@cluster1,cluster2 to override the registry's group and
// clusters for that upstream (see parseServiceKey).
//
// # Registration
//
// The registry is a discovery.Registrar: it registers the local
// application as an ephemeral instance of its client, registered again on
// every new client, and whenever the server stops listing it while the
// connection is up (see register.go). A panic in keeping a registration is
// logged with its stack and makes it down until it is announced again.
//
// # Logs and secrets
//
// The SDK's own logs go to Remora's logger, quietened and with credentials
// redacted (see sdkLog); nothing is written to the working directory or
// stdout. Password and secret key are never logged.
package nacos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/nacos/internal/sdkguard"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the registry type name used in the config.
const Type = "nacos"

func init() { discovery.Register(factory{}) }

// ErrUnreachable is wrapped by the errors Next returns while the SDK has no
// connection to any Nacos server.
var ErrUnreachable = errors.New("no connection to the Nacos server")

var (
	_ discovery.Factory  = factory{}
	_ discovery.Options  = (*Options)(nil)
	_ discovery.Registry = (*registry)(nil)
	_ discovery.Watcher  = (*watcher)(nil)
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

// Check implements discovery.Checker: password_file and secret_key_file
// are read as Open reads them, and cache_dir, relative to baseDir, must be
// a directory or a path where one can be made (not under a file). Whether
// it can be written depends on who runs Remora: Open copes with that.
func (o *Options) Check(baseDir string) error {
	_, _, err := o.credentials(baseDir)
	if o.CacheDir != "" {
		err = errors.Join(err, checkDir("cache_dir", tlsfiles.Resolve(baseDir, o.CacheDir)))
	}
	return err
}

// checkDir refuses dir when it, or the nearest of its parents that exists,
// is not a directory.
func checkDir(field, dir string) error {
	for p := filepath.Clean(dir); ; {
		if fi, err := os.Stat(p); err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: %s is not a directory", field, p)
			}
			return nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// Open implements discovery.Options: it reads the secret files (it fails
// only when a file that Check accepted cannot be read any more), prepares
// the cache directory and starts connecting in the background; it does
// not wait for the server.
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	password, secretKey, err := o.credentials(env.BaseDir)
	if err != nil {
		return nil, err
	}
	log := env.Logger().WithField("registry", env.Name)
	cacheDir, persistent, cleanup := o.cacheDir(env, log)
	if !persistent && o.CacheDir == "" && env.DataDir == "" {
		log.Debug("nacos: no cache_dir and no data_dir: the instance lists are not kept on disk, so a start while the server is down has no nodes")
	}
	release := installSDKLogger(env.Logger().Logger, password, secretKey, o.AccessKey)
	cfg := sdkConfig{opts: o, password: password, secretKey: secretKey, cacheDir: cacheDir}
	r := newRegistry(o, log, func() (namingClient, error) { return newSDKClient(cfg) })
	r.probe = func() error { return probeServers(o.servers, o.GRPCPortOffset, time.Duration(o.Timeout)) }
	if persistent {
		r.diskCache = func(group, service string) ([]model.Instance, bool) {
			return readDiskCache(cacheDir, o.Namespace, group, service)
		}
	}
	r.cleanup = func() {
		release()
		cleanup()
	}
	if o.tune != nil {
		o.tune(r)
	}
	r.start()
	return r, nil
}

// cacheDir decides where the SDK keeps its files: cache_dir, else
// <data_dir>/nacos/<registry name>, else a temporary directory removed on
// Close (persistent is then false). A cache_dir or data_dir that cannot be
// created (a read-only file system, no permission) is logged and replaced
// by a temporary directory: the cache only helps a start while the server
// is down, and never stops Remora from serving. If no temporary directory
// can be made either, the SDK is given one that does not exist: its cache
// writes fail (and are logged).
func (o *Options) cacheDir(env discovery.Env, log *logrus.Entry) (dir string, persistent bool, cleanup func()) {
	field := "cache_dir"
	switch {
	case o.CacheDir != "":
		dir = tlsfiles.Resolve(env.BaseDir, o.CacheDir)
	case env.DataDir != "":
		field = "data_dir"
		dir = filepath.Join(tlsfiles.Resolve(env.BaseDir, env.DataDir), "nacos", safeName(env.Name))
	}
	if dir != "" {
		err := os.MkdirAll(dir, 0o750)
		if err == nil {
			return dir, true, func() {}
		}
		log.WithError(fmt.Errorf("%s: %w", field, err)).Warn("nacos: cannot create the cache directory; using a temporary one, so the instance lists are not kept for a start while the server is down")
	}
	tmp, err := os.MkdirTemp("", "remora-nacos-")
	if err != nil {
		log.WithError(err).Warn("nacos: cannot create a temporary cache directory either; the SDK's cache writes will fail")
		return filepath.Join(os.TempDir(), "remora-nacos-unavailable"), false, func() {}
	}
	return tmp, false, func() { _ = os.RemoveAll(tmp) }
}

// safeName makes a registry name usable as one path element.
func safeName(name string) string {
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	if name == "" || name == "." || name == ".." {
		return "default"
	}
	return name
}

// Timing defaults.
const (
	defaultPollUp      = 250 * time.Millisecond // connection checks (an atomic read while it is up)
	defaultBackoffBase = 250 * time.Millisecond
	defaultBackoffMax  = time.Second           // a returning server is seen within about a second
	defaultSettle      = 50 * time.Millisecond // after a client connects, before it is used
	// defaultEmptyGrace is how long a restarted server's list may lack an
	// application's instances (see subscription.deliver): an SDK client
	// tries to reconnect up to 5 s apart after a long outage and registers
	// again on its next redo round; 30 s covers both with room for a
	// loaded server.
	defaultEmptyGrace = 30 * time.Second
	maxProbeTimeout   = time.Second

	// defaultReadBack is how often each registration is looked for in the
	// server's pushed list of its service (see registration.verify): a
	// read of memory, the list being kept current by the server's pushes.
	defaultReadBack = time.Second
	// defaultReadBackGrace: a registration announced less than this long
	// ago is not looked for yet, as the server's push of it may not have
	// come (Polaris pushes on a one-second tick).
	defaultReadBackGrace = 3 * time.Second
)

// registry follows services of one Nacos cluster through one SDK client at
// a time (see supervise).
//
// The configuration fields are set by newRegistry (and by tests before
// start) and read-only after. client, gen, haveClient, downErr, subs,
// retiring, regs and closed are guarded by mu; no SDK call and no I/O is
// made while holding mu. Registrations have their own lock, taken before
// mu (see registration).
type registry struct {
	group       string
	clusters    []string
	scale       int
	timeout     time.Duration // one request to the server
	log         *logrus.Entry
	dial        func() (namingClient, error)
	probe       func() error                                         // nil: always try to dial
	diskCache   func(group, service string) ([]model.Instance, bool) // nil: no disk cache
	cleanup     func()
	pollUp      time.Duration
	settle      time.Duration
	backoffBase time.Duration
	backoffMax  time.Duration
	emptyGrace  time.Duration // see subscription.deliver; 0 turns holding off
	rand        func() float64
	sleep       func(context.Context, time.Duration) bool // supervise's backoff: retry.Sleep

	// readBack is how often the registrations are looked for in their
	// services' lists, readBackGrace how long after an announcement one is
	// first looked for (see registration.verify); readBack 0 turns the
	// checks off, and the registrations then do not follow their services.
	readBack      time.Duration
	readBackGrace time.Duration

	ctx     context.Context // ends on Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // subscriptions
	regWG   sync.WaitGroup // keepRegistered
	regWake chan struct{}  // capacity 1: a new client, or a registration to announce again
	// withdrawMu is held while flushWithdrawals calls the server.
	withdrawMu sync.Mutex

	mu         sync.Mutex
	client     namingClient             // connected client, or nil
	gen        int                      // counts clients; a subscription resubscribes on a new one
	haveClient chan struct{}            // closed when client is set; replaced when it is cleared
	downErr    error                    // why there is no client, once known
	downFirst  bool                     // a connection failed before the first client: the server was down at the start
	subs       map[string]*subscription // by serviceKey.subKey()
	retiring   map[string]*subscription // unsubscribing after their last watcher left
	regs       map[string]*registration // live registrations, by serviceKey.subKey()
	// withdrawals are deregistrations to make on the next connection (see
	// withdrawLater), by withdrawalKey.
	withdrawals map[string]vo.DeregisterInstanceParam
	closed      bool
}

func newRegistry(o *Options, log *logrus.Entry, dial func() (namingClient, error)) *registry {
	ctx, cancel := context.WithCancel(context.Background())
	return &registry{
		group:       o.Group,
		clusters:    o.Clusters,
		scale:       o.WeightScale,
		timeout:     time.Duration(o.Timeout),
		log:         log,
		dial:        dial,
		cleanup:     func() {},
		pollUp:      defaultPollUp,
		settle:      defaultSettle,
		backoffBase: defaultBackoffBase,
		backoffMax:  defaultBackoffMax,
		emptyGrace:  defaultEmptyGrace,
		sleep:       retry.Sleep,
		rand:        rand.Float64,
		ctx:         ctx,
		cancel:      cancel,
		haveClient:  make(chan struct{}),
		subs:        map[string]*subscription{},
		retiring:    map[string]*subscription{},
		regs:        map[string]*registration{},
		withdrawals: map[string]vo.DeregisterInstanceParam{},
		regWake:     make(chan struct{}, 1),

		readBack:      defaultReadBack,
		readBackGrace: defaultReadBackGrace,
	}
}

// start begins connecting in the background.
func (r *registry) start() {
	r.regWG.Add(1)
	go r.keepRegistered()
	go r.supervise()
}

// supervise owns the SDK client. It only ever hands the subscriptions a
// client that is connected, and closes it as soon as its connection is
// lost:
//
//   - while no server's gRPC port accepts a TCP connection, it creates no
//     client (each SDK client leaks a UDP listener and its goroutine when
//     closed) and retries with backoff capped at backoffMax (a second), so
//     a returning server is seen within about a second;
//   - a new client that did not connect on start-up is closed again, and
//     the next one created after backoff capped at five times backoffMax:
//     a server that accepts connections but cannot serve them is not
//     loaded with a new client (a login, three connection attempts) every
//     second by every sidecar;
//   - a client whose connection is lost is closed, and a fresh one created.
//
// The SDK would reconnect a client by itself, but its reconnect path has
// data races with every request made meanwhile (RpcClient.reconnect writes
// the current connection that Request and the connection-event goroutine
// read); a client that is only used while connected never takes it.
//
// supervise is not waited for by Close: creating a client may block for
// seconds (login, three connection attempts); a client created after Close
// is closed here.
//
// A panic in a session (the SDK creating a client or answering
// ServerHealthy, closing one, Remora's own code) is treated as a failed
// connection: it is logged with its stack (once a minute at most), the
// session's client, if one was created, stops being used and is closed
// (retire), every watcher reports the panic (a *panics.Error) and every
// registration is down with it, and a new client is created after the
// backoff of a client that did not connect; the registrations are
// announced again on it. A panic in retiring the client is logged as
// well; the client is then left to the SDK.
func (r *registry) supervise() {
	var logged panics.Log
	for attempt := 1; ; attempt++ {
		var (
			c    namingClient // the session's client, until it is closed
			stop bool
			err  error
		)
		if p := panics.Catch(func() { stop, err = r.session(&c) }); p != nil {
			logged.Log(r.log, p, "nacos: supervising the connection panicked; it is treated as a failed connection: the client is closed, and another created after a backoff")
			err = fmt.Errorf("%w: %w", ErrUnreachable, p)
			if p := panics.Catch(func() { r.retire(&c, err) }); p != nil {
				logged.Log(r.log, p, "nacos: closing the client after a panic panicked too; it is left to the SDK")
			}
		}
		switch {
		case stop:
			return
		case err == nil: // the connection was lost: connect again at once
			attempt = 0
			continue
		}
		ceiling := r.backoffMax
		if !errors.Is(err, errNoServer) {
			ceiling *= 5
		}
		if !r.sleep(r.ctx, retry.Backoff(attempt, r.backoffBase, ceiling, r.rand)) {
			return
		}
	}
}

// session is one round of supervise: it connects (err says why it could
// not), hands the client to the subscriptions and registrations, and
// watches its connection until it is lost (it then retires the client and
// returns nil) or the registry closes (stop). *c is the client from its
// creation until it is closed, for supervise to retire should session
// panic.
func (r *registry) session(c *namingClient) (stop bool, err error) {
	if err := r.connect(c); err != nil {
		r.setDown(err)
		return false, err
	}
	if !r.setClient(*c) {
		closeClient(take(c)) // closed meanwhile
		return true, nil
	}
	if !r.watchConnection(*c) {
		return true, nil // Close closes the client
	}
	r.retire(c, fmt.Errorf("%w: lost the connection", ErrUnreachable))
	return false, nil
}

// retire records that there is no client, because of err, waits for the
// registrations' requests on *c to end, and closes *c, if set.
func (r *registry) retire(c *namingClient, err error) {
	r.setDown(err)
	r.fenceRegistrations() // no registration request is still running on c
	if *c != nil {
		closeClient(take(c))
	}
}

// take returns *c and clears it: a client is closed once, even should
// closing it panic.
func take(c *namingClient) namingClient {
	old := *c
	*c = nil
	return old
}

// noServerError is a probe's error; it is errNoServer too, and prints as
// the probe's error alone.
type noServerError struct{ error }

func (e *noServerError) Unwrap() []error { return []error{e.error, errNoServer} }

// connect sets *c to a connected client, or returns why it could not (and
// *c is nil). *c is set as soon as the client is created.
func (r *registry) connect(c *namingClient) error {
	if r.probe != nil {
		if err := r.probe(); err != nil {
			return &noServerError{err}
		}
	}
	var err error
	if *c, err = r.dial(); err != nil {
		*c = nil
		return fmt.Errorf("nacos: creating the SDK client: %w", err)
	}
	if !(*c).ServerHealthy() {
		closeClient(take(c))
		return fmt.Errorf("%w: the SDK client did not connect", ErrUnreachable)
	}
	// Let the SDK handle its own "connected" event first: it resubscribes
	// whatever is in its redo list, which would otherwise be sent
	// concurrently with (and duplicate) the subscriptions made next.
	if !retry.Sleep(r.ctx, r.settle) {
		closeClient(take(c))
		return r.ctx.Err()
	}
	return nil
}

// errNoServer is wrapped by connect's error when no server accepted a TCP
// connection (and no client was created).
var errNoServer = errors.New("no server accepts connections")

// probeServers reports whether the gRPC port of any server accepts a TCP
// connection.
func probeServers(servers []server, offset int, timeout time.Duration) error {
	var errs []error
	for _, s := range servers {
		addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port+offset))
		conn, err := net.DialTimeout("tcp", addr, min(timeout, maxProbeTimeout))
		if err == nil {
			conn.Close()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, errors.Join(errs...))
}

// setClient makes c the current client; false if the registry is closed.
func (r *registry) setClient(c namingClient) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	wasDown := r.downErr != nil
	r.client, r.downErr = c, nil
	r.gen++
	close(r.haveClient)
	r.mu.Unlock()
	if wasDown {
		r.log.Info("nacos: connected to the server")
	}
	signal(r.regWake) // announce the live registrations on c
	return true
}

// setDown records why there is no client and tells the subscriptions: a
// subscription without instances yet serves the disk cache, and every
// watcher's Next reports err (the nodes stay, marked stale).
func (r *registry) setDown(err error) {
	r.mu.Lock()
	if r.client != nil {
		r.client = nil
		r.haveClient = make(chan struct{})
	}
	first := r.downErr == nil
	same := !first && r.downErr.Error() == err.Error()
	r.downErr = err
	if r.gen == 0 {
		r.downFirst = true
	}
	subs := slices.Collect(maps.Values(r.subs))
	regs := slices.Collect(maps.Values(r.regs))
	r.mu.Unlock()
	for _, g := range regs {
		g.status.Down(err) // the server drops an ephemeral instance with its connection
	}
	if first {
		r.log.WithError(err).Warn("nacos: no connection to the server; keeping the last known instances and retrying")
	} else {
		r.log.WithError(err).Debug("nacos: still no connection to the server")
	}
	if same {
		// The watchers have this error already: once a second would flood
		// the upstreams' logs (a subscription created meanwhile reads
		// downErr itself when it starts).
		return
	}
	for _, s := range subs {
		s.down(err)
	}
}

// startedDown reports whether the server was down when the registry
// opened: a connection failed before the first client.
func (r *registry) startedDown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.downFirst
}

// downError is why there is no client, if there is none.
func (r *registry) downError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.downErr
}

// watchConnection checks c's connection every pollUp until it is lost
// (true) or the registry closes (false).
func (r *registry) watchConnection(c namingClient) bool {
	for {
		if !retry.Sleep(r.ctx, r.pollUp) {
			return false
		}
		if !c.ServerHealthy() {
			return true
		}
	}
}

// current returns the current client and its generation, waiting for one;
// ok is false if done or the registry's context ended first.
func (r *registry) current(done <-chan struct{}) (c namingClient, gen int, ok bool) {
	for {
		r.mu.Lock()
		c, gen, wait := r.client, r.gen, r.haveClient
		r.mu.Unlock()
		if c != nil {
			return c, gen, true
		}
		select {
		case <-wait:
		case <-done:
			return nil, 0, false
		case <-r.ctx.Done():
			return nil, 0, false
		}
	}
}

// closeClient closes an SDK client (see sdkguard).
func closeClient(c namingClient) { sdkguard.Do(c.CloseClient) }

// Watch implements discovery.Registry. ctx bounds only this call; the
// watcher runs until Stop or Close. service may be a plain name or one of
// Nacos' key forms (see parseServiceKey).
func (r *registry) Watch(ctx context.Context, service string) (discovery.Watcher, error) {
	key, err := parseServiceKey(service, r.group, r.clusters)
	if err != nil {
		return nil, fmt.Errorf("nacos: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("nacos: watch %q: registry closed", service)
	}
	return r.watchLocked(key), nil
}

// watchLocked adds a watcher of key to its subscription, starting one if
// there is none; mu must be held and the registry open.
func (r *registry) watchLocked(key serviceKey) *watcher {
	s := r.subs[key.subKey()]
	if s == nil {
		s = newSubscription(r, key.Group, key.Service, r.retiring[key.subKey()])
		r.subs[key.subKey()] = s
		r.wg.Add(1)
		go s.run()
	}
	w := &watcher{Latest: discovery.NewLatest(), sub: s, key: key}
	s.add(w)
	return w
}

// release is called by a subscription whose last watcher left: it stops
// being found by Watch and is kept in retiring until it has unsubscribed.
func (r *registry) release(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.subs[s.key] == s && s.empty() {
		delete(r.subs, s.key)
		r.retiring[s.key] = s
		s.stop()
	}
}

// retired is called by a subscription that has unsubscribed.
func (r *registry) retired(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retiring[s.key] == s {
		delete(r.retiring, s.key)
	}
}

// Close implements discovery.Registry: it deregisters the live
// registrations, stops every watcher, waits for the subscriptions to
// unsubscribe and closes the SDK client.
func (r *registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	subs := slices.Collect(maps.Values(r.subs))
	r.mu.Unlock()
	r.withdrawAll()
	for _, s := range subs {
		s.stopAll()
	}
	r.wg.Wait() // the subscriptions unsubscribe with the current client
	r.cancel()
	r.regWG.Wait()
	r.mu.Lock()
	c := r.client
	r.client = nil
	r.mu.Unlock()
	if c != nil {
		closeClient(c)
	}
	r.cleanup()
	return nil
}

// backoff is the wait after failures consecutive failed requests.
func (r *registry) backoff(failures int) time.Duration {
	return retry.Backoff(failures, r.backoffBase, r.backoffMax, r.rand)
}
