package consul

import (
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
)

// toInstance maps one entry of /v1/health/service/<name> to an Instance:
//
//   - ID is "<node name>/<service ID>": unique within a datacenter and stable
//     across re-registrations with new tags, metadata or weights.
//   - Address is Service.Address, or Node.Address when the service has none.
//   - Port is Service.Port.
//   - Weight is Service.Weights.Passing (1 when it is unset), or
//     Service.Weights.Warning for an instance in "warning" (returned only
//     with include_warning; Consul allows 0 there, which drains it).
//   - Healthy is true: Consul's verdict decides membership. Instances with a
//     critical check or in maintenance are never returned; instances in
//     "warning" only with include_warning, as Consul's own DNS does.
//   - Metadata is built from the tags, then Service.Meta on top (see
//     tagLabels); Meta wins when both name the same key.
//
// ok is false when the entry is left out: its checks exclude it, or it is
// unusable (no address, no port), in which case err says why.
func toInstance(e *api.ServiceEntry, includeWarning bool) (in discovery.Instance, ok bool, err error) {
	if e == nil || e.Service == nil {
		return discovery.Instance{}, false, nil
	}
	svc := e.Service
	weight := svc.Weights.Passing
	if weight <= 0 {
		weight = discovery.DefaultWeight
	}
	switch e.Checks.AggregatedStatus() {
	case api.HealthPassing:
	case api.HealthWarning:
		if !includeWarning {
			return discovery.Instance{}, false, nil
		}
		weight = max(svc.Weights.Warning, 0)
	default: // critical, maintenance
		return discovery.Instance{}, false, nil
	}

	node, nodeAddr := "", ""
	if e.Node != nil {
		node, nodeAddr = e.Node.Node, e.Node.Address
	}
	in = discovery.Instance{
		ID:       node + "/" + svc.ID,
		Address:  svc.Address,
		Port:     svc.Port,
		Weight:   uint32(min(weight, MaxWeight)),
		Healthy:  true,
		Metadata: labels(svc.Tags, svc.Meta),
	}
	if in.Address == "" {
		in.Address = nodeAddr
	}
	if err := in.Validate(); err != nil {
		return discovery.Instance{}, false, fmt.Errorf("skipping Consul service instance %q on node %q: %w", svc.ID, node, err)
	}
	return in, true, nil
}

// MaxWeight caps an instance's weight: the agent takes 1..65535, and a
// larger one written through the catalog API (Weights are plain ints
// there) counts as this much rather than wrap round, to 0 (drained) for
// 2^32.
const MaxWeight = 65535

// labels merges tags and Meta into one label map, nil when both are empty.
// Tags become labels as documented on tagLabels; Meta is copied on top.
func labels(tags []string, meta map[string]string) map[string]string {
	if len(tags) == 0 && len(meta) == 0 {
		return nil
	}
	out := make(map[string]string, len(tags)+len(meta))
	tagLabels(out, tags)
	for k, v := range meta {
		out[k] = v
	}
	return out
}

// tagLabels turns Consul tags into labels in out:
//
//   - a tag "key=value" becomes the label key=value (split at the first "=",
//     so "a=b=c" is label a with value "b=c", and "key=" is key with "");
//   - a bare tag such as "canary" becomes the label canary=true, so a
//     `canary` tag and a `canary: "true"` Meta entry select the same nodes;
//   - a tag with an empty key ("=x") or an empty tag is ignored.
//
// When two tags name the same key the later one wins.
func tagLabels(out map[string]string, tags []string) {
	for _, tag := range tags {
		k, v, hasValue := strings.Cut(tag, "=")
		if k == "" {
			continue
		}
		if !hasValue {
			v = "true"
		}
		out[k] = v
	}
}

// toSet maps a query result; skipped holds the reasons unusable entries
// were left out.
func toSet(entries []*api.ServiceEntry, includeWarning bool) (set []discovery.Instance, skipped []error) {
	set = make([]discovery.Instance, 0, len(entries))
	for _, e := range entries {
		in, ok, err := toInstance(e, includeWarning)
		if err != nil {
			skipped = append(skipped, err)
		}
		if ok {
			set = append(set, in)
		}
	}
	return set, skipped
}
