package etcd

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery"
)

// RegistrationTTL is the lease of a registered instance, in seconds: the key
// vanishes this long after Remora stops keeping it alive.
const RegistrationTTL = 10

var _ discovery.Registrar = (*Registry)(nil)

// leaser is what registration needs beyond Client; *clientv3.Client has it.
type leaser interface {
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
	Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error)
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
	KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error)
	Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error)
}

// Register implements discovery.Registrar: the instance is written under
// <prefix>/<service>/<id> with a lease kept alive until Deregister.
func (r *Registry) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	cli, ok := r.cli.(leaser)
	if !ok {
		return nil, fmt.Errorf("etcd: this client cannot register instances")
	}
	lease, err := cli.Grant(ctx, RegistrationTTL)
	if err != nil {
		return nil, fmt.Errorf("etcd: lease: %w", err)
	}
	keepCtx, cancel := context.WithCancel(r.ctx)
	reg := &registration{cli: cli, key: r.prefix + "/" + service + "/" + inst.ID, lease: lease.ID, cancel: cancel}
	if err := reg.Update(ctx, inst); err != nil {
		cancel()
		return nil, err
	}
	ch, err := cli.KeepAlive(keepCtx, lease.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("etcd: keep-alive: %w", err)
	}
	go func() {
		for range ch { // drain the keep-alive answers until cancelled
		}
	}()
	return reg, nil
}

type registration struct {
	cli    leaser
	key    string
	lease  clientv3.LeaseID
	cancel context.CancelFunc
}

// Update implements discovery.Registration.
func (g *registration) Update(ctx context.Context, inst discovery.Instance) error {
	w := int64(inst.Weight)
	healthy := true
	data, err := json.Marshal(Value{Address: inst.Address, Port: inst.Port, Weight: &w, Healthy: &healthy, Metadata: inst.Metadata})
	if err != nil {
		return err
	}
	if _, err := g.cli.Put(ctx, g.key, string(data), clientv3.WithLease(g.lease)); err != nil {
		return fmt.Errorf("etcd: put %s: %w", g.key, err)
	}
	return nil
}

// Deregister implements discovery.Registration.
func (g *registration) Deregister(ctx context.Context) error {
	g.cancel()
	_, err := g.cli.Delete(ctx, g.key)
	_, _ = g.cli.Revoke(ctx, g.lease)
	return err
}
