// Package etcd is the registry adapter for etcd v3.
//
// Key layout: <prefix>/<service>/<instance-id>, prefix defaulting to
// "/services". A value is JSON,
//
//	{"address": "10.0.0.7", "port": 8080, "weight": 10, "healthy": true, "metadata": {"canary": "true"}}
//
// (weight defaults to 1, healthy to true), or a bare "host:port" as go-zero
// writes it. Keys written with a lease vanish when the lease expires, and the
// instance with them. A malformed value is skipped with a warning naming the
// key; the rest of the service is unaffected.
//
// Each watcher lists the prefix and then follows it with an etcd watch
// from the listed revision. It lists again, and watches from the new list's
// revision, whenever the watch's history may have been lost: after a
// compaction, after the watch ended with an error, when a probe finds etcd
// behind the followed revision or with another cluster ID, and when etcd
// answers again after a probe found it unreachable. A revision names a
// point in one history only: an etcd that came back without its data keeps
// its cluster ID (derived from its peer URLs and cluster token), and once
// its other clients have written past the followed revision, a watch
// resumed from it would miss what the new history wrote below it and keep
// what it lacks. An unreachable etcd never empties the set; it is kept,
// marked stale, until the list after etcd's return.
// A panic in a watcher's goroutine (the client, a response no test
// foresaw) is logged with its stack and returned by Next as an error; the
// watcher lists again a second later.
//
// # Connecting
//
// Opening the registry never waits for etcd and never fails because etcd
// is unreachable or refuses the credentials: one goroutine creates the
// client (clientv3.New, which authenticates when a username is set, bounded
// by dial_timeout) and tries again after a backoff of 100 ms doubling to
// 1 s, with jitter, until it succeeds or the registry closes. Until then
// every watcher's Next reports why (etcd unreachable, authentication
// failed) and Register keeps its registrations waiting; once connected,
// the watchers list their services at once. A panic in creating the
// client is a failed attempt, logged with its stack. Only a config error (a
// missing password or TLS file) makes Open fail.
//
// # Registering
//
// Register writes the local instance under its key with a lease and keeps
// it there: one reconciler goroutine per registration holds the wanted value
// and converges etcd on it (see register.go). A panic in a reconciler is
// logged with its stack and makes its registration down until it has
// written the key again, a second later.
//
// The configuration is described on Options.
package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the adapter's type name in config.
const Type = "etcd"

func init() { discovery.Register(factory{}) }

var (
	_ discovery.Factory  = factory{}
	_ discovery.Options  = (*Options)(nil)
	_ discovery.Registry = (*Registry)(nil)
	_ discovery.Watcher  = (*watcher)(nil)
	_ Client             = (*clientv3.Client)(nil)
)

type factory struct{}

func (factory) Type() string { return Type }

// Registers implements discovery.RegistrarFactory.
func (factory) Registers() {}

func (factory) Parse(decode func(any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.normalize(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Check implements discovery.Checker: password_file and the TLS files are
// read and parsed as Open reads them, relative to baseDir.
func (o *Options) Check(baseDir string) error {
	_, _, err := o.files(baseDir)
	return err
}

// files reads the password file and the TLS files, relative to baseDir:
// the password ("" without password_file) and the TLS config (nil without
// tls). A missing, unreadable, empty or malformed file is an error naming
// its field; every file is tried and the errors are joined.
func (o *Options) files(baseDir string) (password string, tc *tls.Config, err error) {
	var errs []error
	if o.PasswordFile != "" {
		password, err = secret.ReadFile("password_file", tlsfiles.Resolve(baseDir, o.PasswordFile), "the etcd password")
		errs = append(errs, err)
	}
	if o.TLS != nil {
		tc, err = o.TLS.Config(baseDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.%w", err))
		}
	}
	return password, tc, errors.Join(errs...)
}

// maxAnswerBytes bounds one answer of etcd (a range of a service's keys,
// a watch's events). A service of thousands of instances takes a few MiB;
// a huge value (a bug, a hostile write) would otherwise be read whole,
// and again at every change, until the sidecar ran out of memory. Over
// it, the read fails as a registry error (the upstream keeps its nodes,
// stale). A variable for tests.
var maxAnswerBytes = 64 << 20

// Open implements discovery.Options. It reads the password and TLS files
// (it fails only when a file that Check accepted cannot be read any more)
// and returns at once: the client is created in the background and retried
// until etcd answers and accepts the credentials (see the package doc).
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          time.Duration(o.DialTimeout),
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             o.Username,
		Password:             string(o.Password),
		Logger:               zap.NewNop(),
		MaxCallRecvMsgSize:   maxAnswerBytes, // clientv3's default is 2 GiB

		// Reconnect quickly once etcd is back: gRPC's default backoff
		// grows to two minutes. 800 ms + 20% jitter keeps a reconnect
		// within a second of etcd answering.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 800 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	pw, tc, err := o.files(env.BaseDir)
	if err != nil {
		return nil, err
	}
	if o.PasswordFile != "" {
		cfg.Password = pw
	}
	cfg.TLS = tc
	connect := func(ctx context.Context) (Client, error) {
		c := cfg
		c.Context = ctx
		cli, err := clientv3.New(c)
		if err != nil {
			return nil, describeConnectError(err, cfg.Username, cfg.DialTimeout)
		}
		return cli, nil
	}
	return newRegistry(connect, o.Prefix, env), nil
}

// describeConnectError says what failed when clientv3.New did: with a user
// name, New authenticates and waits for etcd up to the dial timeout.
func describeConnectError(err error, user string, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer within dial_timeout %s: %w", timeout, err)
	case user != "" && (errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrUserNotFound) ||
		errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrPermissionDenied)):
		return fmt.Errorf("authenticating as user %q: %w (check username and password)", user, err)
	}
	return err
}

// Client is the part of the etcd client the adapter uses;
// *clientv3.Client implements it.
type Client interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan
	Close() error
}

// Timing defaults.
const (
	// DefaultProbeInterval is how often a watcher checks that etcd answers.
	DefaultProbeInterval = time.Second
	// DefaultRegistrationTTL is the lease of a registered instance: its
	// key vanishes this long after Remora stops keeping it alive.
	DefaultRegistrationTTL = 10 * time.Second

	backoffBase = 100 * time.Millisecond
	backoffMax  = time.Second // a returning etcd is seen within a second
)

// Registry watches services under one prefix and registers instances there.
//
// The client is created by one connector goroutine (Open) or given
// (NewRegistry); until it exists, watchers report the connector's last error
// and registrations wait for it. mu guards cli, connErr, closed and regs;
// cli is immutable once set, and ready is closed then. ProbeInterval and
// RegistrationTTL are set before the first Watch or Register and read-only
// after.
type Registry struct {
	// ProbeInterval is how often each watcher checks that etcd answers
	// (an etcd watch silently waits through an outage); 0 turns the check
	// off. Set it before the first Watch.
	ProbeInterval time.Duration
	// RegistrationTTL is the lease TTL of registered instances, rounded up
	// to whole seconds (etcd may raise it to its minimum). Set it before
	// the first Register.
	RegistrationTTL time.Duration

	prefix string
	env    discovery.Env
	log    *logrus.Entry
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the connector's, watchers' and registrations' goroutines
	ready  chan struct{}  // closed when cli is set

	mu      sync.Mutex
	cli     Client
	connErr error // the connector's last failure, while cli is nil
	closed  bool
	regs    map[string]*registration // live registrations by key
}

func newRegistryBase(prefix string, env discovery.Env) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{
		ProbeInterval: DefaultProbeInterval, RegistrationTTL: DefaultRegistrationTTL,
		prefix: strings.TrimSuffix(prefix, "/"), env: env,
		log: env.Logger().WithField("registry", env.Name), ctx: ctx, cancel: cancel,
		ready: make(chan struct{}), regs: map[string]*registration{},
	}
}

// NewRegistry returns a registry over a ready client; Close closes cli.
func NewRegistry(cli Client, prefix string, env discovery.Env) *Registry {
	r := newRegistryBase(prefix, env)
	r.cli = cli
	close(r.ready)
	return r
}

// newRegistry returns a registry whose client connect creates in the
// background, retried with backoff until it succeeds or the registry
// closes.
func newRegistry(connect func(context.Context) (Client, error), prefix string, env discovery.Env) *Registry {
	r := newRegistryBase(prefix, env)
	r.wg.Go(func() { r.connectLoop(connect) })
	return r
}

// connectLoop creates the client: at once when etcd answers (and accepts
// the credentials), else again after a backoff of at most a second.
//
// A panic in connect (clientv3.New, the dial, the authentication) is a
// failed attempt: it is logged with its stack (once a minute at most),
// it is the error watchers report and registrations wait on (a
// *panics.Error), and the client is created again after the backoff.
func (r *Registry) connectLoop(connect func(context.Context) (Client, error)) {
	var (
		lastMsg string
		logged  panics.Log
	)
	for attempt := 1; ; attempt++ {
		var cli Client
		var err error
		if p := panics.Catch(func() { cli, err = connect(r.ctx) }); p != nil {
			logged.Log(r.log, p, "etcd: creating the client panicked; retrying (watchers keep their last instances)")
			cli, err, lastMsg = nil, p, p.Error()
		}
		r.mu.Lock()
		if r.ctx.Err() != nil {
			r.mu.Unlock()
			if cli != nil {
				_ = cli.Close()
			}
			return
		}
		if err == nil {
			r.cli, r.connErr = cli, nil
			close(r.ready)
			r.mu.Unlock()
			if attempt > 1 {
				r.log.Info("etcd: connected")
			}
			return
		}
		r.connErr = fmt.Errorf("etcd: not connected: %w", err)
		r.mu.Unlock()
		if msg := err.Error(); msg != lastMsg {
			lastMsg = msg
			r.log.WithError(err).Warn("etcd: cannot connect yet; retrying (watchers keep their last instances)")
		}
		if !retry.Sleep(r.ctx, retry.Backoff(attempt, backoffBase, backoffMax, rand.Float64)) {
			return
		}
	}
}

// client returns the client, or why there is none yet.
func (r *Registry) client() (Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.cli != nil:
		return r.cli, nil
	case r.connErr != nil:
		return nil, r.connErr
	}
	return nil, errors.New("etcd: not connected yet: connecting")
}

// Watch implements discovery.Registry. It does not wait for etcd.
func (r *Registry) Watch(_ context.Context, service string) (discovery.Watcher, error) {
	if err := checkService(service); err != nil {
		return nil, fmt.Errorf("etcd: service %w", err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	w := &watcher{
		Latest: discovery.NewLatest(),
		reg:    r,
		prefix: r.prefix + "/" + service + "/",
		log:    r.log.WithField("service", service),
		cancel: cancel,
		nodes:  map[string]discovery.Instance{},
		probe:  r.ProbeInterval,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		cancel()
		return nil, fmt.Errorf("etcd: watch %q: registry closed", service)
	}
	r.wg.Go(func() { w.run(ctx) })
	return w, nil
}

// Close stops every watcher and registration, waits until their goroutines
// have ended, and closes the client. Registered keys are not deleted: their
// leases are no longer kept alive and expire after the registration TTL
// (Deregister deletes at once).
func (r *Registry) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	cli := r.cli
	r.mu.Unlock()
	if cli == nil {
		return nil
	}
	return cli.Close()
}

// Value is the JSON form of an instance in etcd.
type Value struct {
	Address  string            `json:"address"`
	Port     int               `json:"port"`
	Weight   *int64            `json:"weight,omitempty"`
	Healthy  *bool             `json:"healthy,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Decode turns a value stored under key into an instance with id. It
// accepts the JSON form and a bare "host:port".
func Decode(id string, val []byte) (discovery.Instance, error) {
	in := discovery.Instance{ID: id, Weight: discovery.DefaultWeight, Healthy: true}
	s := strings.TrimSpace(string(val))
	if !strings.HasPrefix(s, "{") {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return in, fmt.Errorf("value %q is neither JSON nor host:port", truncate(s))
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return in, fmt.Errorf("value %q has a bad port", truncate(s))
		}
		in.Address, in.Port = host, p
		return in, in.Validate()
	}
	var v Value
	if err := json.Unmarshal(val, &v); err != nil {
		return in, fmt.Errorf("value is not valid JSON: %v", err)
	}
	in.Address, in.Port, in.Metadata = v.Address, v.Port, v.Metadata
	if v.Weight != nil {
		if *v.Weight < 0 || *v.Weight > math.MaxUint32 {
			return in, fmt.Errorf("weight %d out of range 0..%d", *v.Weight, uint32(math.MaxUint32))
		}
		in.Weight = uint32(*v.Weight)
	}
	if v.Healthy != nil {
		in.Healthy = *v.Healthy
	}
	return in, in.Validate()
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// watcher follows one service. cli, nodes, rev, cluster, stale and
// progressed are owned by the run goroutine.
type watcher struct {
	*discovery.Latest
	reg    *Registry
	cli    Client // nil until the registry has connected
	prefix string
	log    *logrus.Entry
	cancel context.CancelFunc
	nodes  map[string]discovery.Instance // by key
	rev    int64                         // last revision applied
	// cluster is the ID of the cluster the last list read (0: unknown).
	cluster uint64
	probe   time.Duration // liveness check interval, 0 off
	// stale: a check found etcd unreachable since the last list. The set
	// is kept, reported stale; the next answer of etcd (a check that
	// succeeds, a watch response) is not trusted but makes the watcher
	// list again, since the watch may have resumed in another history.
	stale bool
	// progressed: follow applied a response since run last looked.
	progressed bool
}

// Stop implements discovery.Watcher.
func (w *watcher) Stop() error {
	w.cancel()
	return w.Latest.Stop()
}

var errCompacted = errors.New("etcd: watch revision compacted")

// errBehind ends a watch whose etcd is behind the revision it follows.
var errBehind = errors.New("etcd: the cluster is behind the watched revision")

// errReconnected ends a watch whose etcd answers again after a check found
// it unreachable: the prefix is listed again rather than the watch trusted.
var errReconnected = errors.New("etcd: answering again after it was unreachable")

// run is the watcher's producer goroutine. A panic in its loop (the etcd
// client, a response no test foresaw) is logged with its stack, reported
// by Next as an error (the set is kept, marked stale), and the loop starts
// again after discovery.PanicPause, listing the prefix afresh.
func (w *watcher) run(ctx context.Context) {
	go func() {
		select {
		case <-w.Done():
			w.cancel()
		case <-ctx.Done():
			_ = w.Latest.Stop()
		}
	}()
	discovery.Rerun(w.log, func(err error) { w.Fail(fmt.Errorf("etcd: watching %s: %w", w.prefix, err)) },
		func() bool { return retry.Sleep(ctx, discovery.PanicPause) }, func() { w.loop(ctx) })
}

// loop lists the prefix, then follows it, until ctx ends.
func (w *watcher) loop(ctx context.Context) {
	failures := 0
	pause := func() bool {
		failures++
		return retry.Sleep(ctx, retry.Backoff(failures, backoffBase, backoffMax, rand.Float64))
	}
	listed := false
	for ctx.Err() == nil {
		if w.cli == nil {
			cli, err := w.reg.client()
			if err != nil {
				// Stale until connected; wake at once when it is.
				w.Fail(fmt.Errorf("%w (watching %s)", err, w.prefix))
				failures++
				t := time.NewTimer(retry.Backoff(failures, backoffBase, backoffMax, rand.Float64))
				select {
				case <-w.reg.ready:
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
				continue
			}
			w.cli, failures = cli, 0
		}
		if !listed {
			if err := w.list(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.Fail(fmt.Errorf("etcd: listing %s: %w", w.prefix, err))
				pause()
				continue
			}
			listed, failures = true, 0
		}
		err := w.follow(ctx)
		if w.progressed {
			w.progressed, failures = false, 0
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errCompacted) {
			w.log.Infof("etcd: watch of %s compacted past revision %d; listing again", w.prefix, w.rev)
			listed = false
			continue
		}
		if errors.Is(err, errBehind) {
			w.log.Warnf("etcd: the cluster behind %s is not the one whose revision %d was followed (restored or started without its data); listing again", w.prefix, w.rev)
			listed = false
			continue
		}
		if errors.Is(err, errReconnected) {
			w.log.Infof("etcd: answering again; listing %s again (it may have restarted without its data)", w.prefix)
			listed = false
			continue
		}
		// Not resumed from w.rev: the error may hide a restart of etcd
		// without its data (see the package doc).
		w.Fail(fmt.Errorf("etcd: watching %s: %w", w.prefix, err))
		listed = false
		pause()
	}
}

// list reads the whole prefix and publishes it.
func (w *watcher) list(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	clear(w.nodes)
	for _, kv := range resp.Kvs {
		w.put(string(kv.Key), kv.Value)
	}
	w.rev, w.cluster = resp.Header.GetRevision(), resp.Header.GetClusterId()
	w.stale = false // what is published now is fresh
	w.publish()
	return nil
}

// follow watches from the revision after the last one applied until the
// watch ends. It returns errCompacted when etcd no longer has that revision,
// errBehind when check finds etcd behind it, and errReconnected when etcd
// answers again (a check, a watch response) after it was unreachable.
//
// clientv3's Watch waits until the client's watch stream is open, which in
// an outage that began after the list means until etcd is back. It is
// called on a goroutine of its own so that the checks go on meanwhile (the
// outage is reported, and noticed: etcd may come back without its data);
// follow waits for that goroutine before it returns (Watch returns once
// its context ends). A panic in Watch is raised again on the caller's
// goroutine.
func (w *watcher) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opening := make(chan opened, 1)
	go func() {
		var o opened
		o.panicked = panics.Catch(func() { o.ch = w.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1)) })
		opening <- o
	}()
	defer func() {
		cancel()
		if opening != nil {
			<-opening
		}
	}()
	var wch clientv3.WatchChan // nil until opened
	var tick <-chan time.Time
	if w.probe > 0 {
		t := time.NewTicker(w.probe)
		defer t.Stop()
		tick = t.C
	}
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case o := <-opening:
			opening = nil
			if o.panicked != nil {
				panic(o.panicked)
			}
			wch = o.ch
			continue
		case <-tick:
			if err := w.check(ctx); err != nil {
				return err
			}
			continue
		case resp, ok = <-wch:
		}
		if !ok {
			break
		}
		if resp.CompactRevision != 0 {
			return errCompacted
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if w.stale {
			// clientv3 resumed the watch from its last revision when it
			// reconnected: the events may be another history's.
			return errReconnected
		}
		w.progressed = true
		for _, ev := range resp.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				w.put(string(ev.Kv.Key), ev.Kv.Value)
			case clientv3.EventTypeDelete:
				delete(w.nodes, string(ev.Kv.Key))
			}
		}
		if rev := resp.Header.GetRevision(); rev > w.rev {
			w.rev = rev
		}
		if len(resp.Events) > 0 {
			w.publish()
		}
	}
	return errors.New("watch channel closed")
}

// check asks etcd for a count of the service's keys: a watch waits through
// an outage without a word, so this is how a watcher notices one (and
// reports it: the upstream is marked stale, its nodes kept) and its end
// (errReconnected: the watcher lists again, for etcd may have come back
// without its data and with the same cluster ID, its revisions already
// past the one followed).
//
// It also returns errBehind for an etcd that is no longer the one
// followed: a cluster with another ID, or a revision below the one applied
// (the Get is linearizable, so a member that merely lags cannot answer
// one). That is an etcd started without its data or restored from an older
// backup; a watch on it waits, without a word, for a revision it may not
// reach for days.
func (w *watcher) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.probe)
	defer cancel()
	resp, err := w.cli.Get(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case err == nil:
		h := resp.Header
		if h.GetRevision() < w.rev || w.cluster != 0 && h.GetClusterId() != 0 && h.GetClusterId() != w.cluster {
			return errBehind
		}
		if w.stale {
			return errReconnected
		}
		return nil
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		return nil // the watcher is stopping
	}
	if !w.stale {
		w.log.WithError(err).Warn("etcd: not answering; keeping the last known instances")
	}
	w.stale = true
	w.Fail(fmt.Errorf("etcd: %s unreachable: %w", w.prefix, err))
	return nil
}

// put records the instance under key, or drops the key with a warning when
// its value is malformed.
func (w *watcher) put(key string, val []byte) {
	id := strings.TrimPrefix(key, w.prefix)
	in, err := Decode(id, val)
	if id == "" {
		err = errors.New("the key has no instance id after the service")
	}
	if err != nil {
		delete(w.nodes, key)
		w.log.WithField("key", key).Warnf("etcd: skipping malformed instance: %v", err)
		return
	}
	w.nodes[key] = in
}

func (w *watcher) publish() {
	set := make([]discovery.Instance, 0, len(w.nodes))
	for _, in := range w.nodes {
		set = append(set, in)
	}
	w.Publish(set)
}
