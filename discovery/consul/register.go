package consul

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
)

// RegistrationTTL is the TTL of the check Remora keeps passing for a
// registered instance; Consul marks it critical when Remora stops.
const RegistrationTTL = 10 * time.Second

var _ discovery.Registrar = (*registry)(nil)

// Register implements discovery.Registrar: an agent service with a TTL
// check that Remora keeps passing until Deregister. Labels become Meta.
func (r *registry) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	if r.agent == nil {
		return nil, fmt.Errorf("consul: this registry cannot register instances")
	}
	g := &registration{agent: r.agent, service: service, id: service + "-" + inst.ID}
	if err := g.Update(ctx, inst); err != nil {
		return nil, err
	}
	tick, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() {
		t := time.NewTicker(RegistrationTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-tick.Done():
				return
			case <-t.C:
				_ = r.agent.UpdateTTL("service:"+g.id, "remora: application healthy", api.HealthPassing)
			}
		}
	}()
	return g, nil
}

type registration struct {
	agent   *api.Agent
	service string
	id      string
	cancel  context.CancelFunc
}

// Update implements discovery.Registration.
func (g *registration) Update(ctx context.Context, inst discovery.Instance) error {
	meta := map[string]string{}
	var tags []string
	for k, v := range inst.Metadata {
		meta[k] = v
		tags = append(tags, k+"="+v)
	}
	sort.Strings(tags)
	w := int(inst.Weight)
	err := g.agent.ServiceRegisterOpts(&api.AgentServiceRegistration{
		ID: g.id, Name: g.service, Address: inst.Address, Port: inst.Port, Meta: meta, Tags: tags,
		Weights: &api.AgentWeights{Passing: max(w, 1), Warning: 1},
		Check: &api.AgentServiceCheck{
			CheckID: "service:" + g.id, TTL: RegistrationTTL.String(), Status: api.HealthPassing,
			DeregisterCriticalServiceAfter: "1m",
		},
	}, api.ServiceRegisterOpts{}.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: register %s: %w", g.id, err)
	}
	return nil
}

// Deregister implements discovery.Registration.
func (g *registration) Deregister(ctx context.Context) error {
	if g.cancel != nil {
		g.cancel()
	}
	return g.agent.ServiceDeregisterOpts(g.id, (&api.QueryOptions{}).WithContext(ctx))
}
