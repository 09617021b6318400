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
// Each watcher lists the prefix once and then follows it with an etcd watch
// from the listed revision. After a disconnect the watch resumes from the
// last revision it saw (etcd replays nothing twice and misses nothing); after
// a compaction it lists again. An unreachable etcd never empties the set.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/retry"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the adapter's type name in config.
const Type = "etcd"

// DefaultPrefix is the key prefix under which services live.
const DefaultPrefix = "/services"

func init() { discovery.Register(factory{}) }

type factory struct{}

func (factory) Type() string { return Type }

func (factory) Parse(decode func(any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Options configure the etcd adapter.
type Options struct {
	// Endpoints are etcd client URLs or host:port pairs.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix; default /services.
	Prefix string `yaml:"prefix"`
	// Username and Password authenticate; the password is never logged.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// PasswordFile reads the password from a file instead.
	PasswordFile string `yaml:"password_file"`
	// DialTimeout bounds connecting; default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLS configures client TLS; plain text when absent.
	TLS *TLSOptions `yaml:"tls"`
}

// TLSOptions configure TLS to etcd.
type TLSOptions = tlsfiles.Options

func (o *Options) validate() error {
	var errs []error
	if len(o.Endpoints) == 0 {
		errs = append(errs, errors.New("endpoints: at least one etcd endpoint is required (e.g. [127.0.0.1:2379])"))
	}
	for i, ep := range o.Endpoints {
		hostport := ep
		if i := strings.Index(ep, "://"); i >= 0 {
			hostport = ep[i+3:]
		}
		if _, port, err := net.SplitHostPort(hostport); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("endpoints[%d]: %q is not host:port or a URL with a port", i, ep))
		}
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	o.Prefix = strings.TrimSuffix(o.Prefix, "/")
	if !strings.HasPrefix(o.Prefix, "/") {
		errs = append(errs, fmt.Errorf("prefix: %q must start with /", o.Prefix))
	}
	if o.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("dial_timeout: %v is negative", o.DialTimeout))
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Password != "" && o.PasswordFile != "" {
		errs = append(errs, errors.New("password_file: set either password or password_file"))
	}
	if t := o.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}

// Open implements discovery.Options. It does not wait for etcd.
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             o.Username,
		Password:             o.Password,
		Logger:               zap.NewNop(),
		// Reconnect quickly once etcd is back: gRPC's default backoff
		// grows to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	if o.PasswordFile != "" {
		pw, err := os.ReadFile(tlsfiles.Resolve(env.BaseDir, o.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(pw))
	}
	if o.TLS != nil {
		tc, err := o.TLS.Config(env.BaseDir)
		if err != nil {
			return nil, fmt.Errorf("tls.%w", err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return NewRegistry(cli, o.Prefix, env), nil
}

// Client is the part of the etcd client the adapter uses;
// *clientv3.Client implements it.
type Client interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan
	Close() error
}

// Registry watches services under one prefix.
type Registry struct {
	// ProbeInterval is how often each watcher checks that etcd answers
	// (an etcd watch silently waits through an outage); 0 turns the check
	// off. Set it before the first Watch.
	ProbeInterval time.Duration

	cli    Client
	prefix string
	env    discovery.Env
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the watchers' goroutines
}

// NewRegistry returns a registry over cli; Close closes cli.
func NewRegistry(cli Client, prefix string, env discovery.Env) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), env: env, ctx: ctx, cancel: cancel, ProbeInterval: DefaultProbeInterval}
}

// DefaultProbeInterval is how often a watcher checks that etcd answers.
const DefaultProbeInterval = time.Second

// Watch implements discovery.Registry.
func (r *Registry) Watch(_ context.Context, service string) (discovery.Watcher, error) {
	if service == "" || strings.Contains(service, "/") {
		return nil, fmt.Errorf("etcd: bad service name %q", service)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	w := &watcher{
		Latest: discovery.NewLatest(),
		cli:    r.cli,
		prefix: r.prefix + "/" + service + "/",
		log:    r.env.Logger().WithFields(logrus.Fields{"registry": r.env.Name, "service": service}),
		cancel: cancel,
		nodes:  map[string]discovery.Instance{},
		probe:  r.ProbeInterval,
	}
	r.wg.Go(func() { w.run(ctx) })
	return w, nil
}

// Close stops every watcher, waits until they have ended, and closes the
// client.
func (r *Registry) Close() error {
	r.cancel()
	r.wg.Wait()
	return r.cli.Close()
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

// watcher follows one service. nodes and rev are owned by the run
// goroutine.
type watcher struct {
	*discovery.Latest
	cli    Client
	prefix string
	log    *logrus.Entry
	cancel context.CancelFunc
	nodes  map[string]discovery.Instance // by key
	rev    int64                         // last revision applied
	probe  time.Duration                 // liveness check interval, 0 off
	stale  bool                          // the last check failed
}

// Stop implements discovery.Watcher.
func (w *watcher) Stop() error {
	w.cancel()
	return w.Latest.Stop()
}

var errCompacted = errors.New("etcd: watch revision compacted")

func (w *watcher) run(ctx context.Context) {
	go func() {
		select {
		case <-w.Done():
			w.cancel()
		case <-ctx.Done():
			_ = w.Latest.Stop()
		}
	}()
	delay := newBackoff()
	listed := false
	for ctx.Err() == nil {
		if !listed {
			if err := w.list(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.Fail(fmt.Errorf("etcd: listing %s: %w", w.prefix, err))
				retry.Sleep(ctx, delay.next())
				continue
			}
			listed = true
		}
		err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errCompacted) {
			w.log.Infof("etcd: watch of %s compacted past revision %d; listing again", w.prefix, w.rev)
			listed = false
			continue
		}
		if err != nil {
			w.Fail(fmt.Errorf("etcd: watching %s: %w", w.prefix, err))
			retry.Sleep(ctx, delay.next())
			continue
		}
		delay.reset()
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
	w.rev = resp.Header.GetRevision()
	w.publish()
	return nil
}

// follow watches from the revision after the last one applied until the
// watch ends. It returns errCompacted when etcd no longer has that revision.
func (w *watcher) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1))
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
		case <-tick:
			w.check(ctx)
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
		if len(resp.Events) > 0 || w.stale {
			w.stale = false
			w.publish()
		}
	}
	return errors.New("watch channel closed")
}

// check asks etcd for a count of the service's keys: a watch waits through
// an outage without a word, so this is how a watcher notices one (and
// reports it: the upstream is marked stale, its nodes kept) and its end (the
// current set is published again).
func (w *watcher) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.probe)
	defer cancel()
	_, err := w.cli.Get(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
	case err != nil:
		if !w.stale {
			w.log.WithError(err).Warn("etcd: not answering; keeping the last known instances")
		}
		w.stale = true
		w.Fail(fmt.Errorf("etcd: %s unreachable: %w", w.prefix, err))
	case w.stale:
		w.stale = false
		w.log.Info("etcd: answering again")
		w.publish()
	}
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

type expBackoff struct{ cur time.Duration }

func newBackoff() *expBackoff { return &expBackoff{} }

// next returns the next delay: 100ms doubling to 5s, with ±20% jitter.
func (b *expBackoff) next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = 100 * time.Millisecond
	case b.cur < 5*time.Second:
		b.cur = min(2*b.cur, 5*time.Second)
	}
	return time.Duration(float64(b.cur) * (0.8 + 0.4*rand.Float64()))
}

func (b *expBackoff) reset() { b.cur = 0 }
