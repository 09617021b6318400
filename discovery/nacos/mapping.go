package nacos

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/remora-mesh/remora/discovery"
)

// MaxWeight caps the integer weight of an instance (Nacos allows weights up
// to 10000, times weight_scale up to 1000).
const MaxWeight = 10_000_000

// InternalMetadataPrefix starts the metadata keys that a Nacos-protocol
// server adds for its own bookkeeping (Polaris: internal-nacos-cluster,
// internal-nacos-service, internal-nacos-clientconnId); they are dropped.
const InternalMetadataPrefix = "internal-nacos-"

// mapWeight turns a Nacos weight (a float, 0..10000, default 1.0) into
// Remora's integer weight: w×scale rounded to the nearest integer (halves
// away from zero), except that
//
//   - 0, a negative weight or NaN is 0: the instance is drained (Nacos'
//     own clients never pick a weight-0 instance either);
//   - a positive weight that would round to 0 is 1, so an instance that
//     Nacos would send traffic to is never drained by rounding;
//   - the result is capped at MaxWeight (+Inf included).
//
// With the default scale 1, integer weights map to themselves and
// fractions round: 0.3 and 0.7 both become 1. weight_scale: 100 keeps two
// decimals (0.3 → 30, 0.7 → 70, 1 → 100).
func mapWeight(w float64, scale int) uint32 {
	if math.IsNaN(w) || w <= 0 {
		return 0
	}
	v := w * float64(scale)
	if v >= MaxWeight {
		return MaxWeight
	}
	return uint32(max(math.Round(v), 1))
}

// clusterOf is the cluster an instance belongs to: Nacos calls an instance
// registered without one "DEFAULT"; Polaris reports it as "".
func clusterOf(h *model.Instance) string {
	if h.ClusterName == "" {
		return DefaultCluster
	}
	return h.ClusterName
}

// instanceID is the stable identity of a Nacos instance: its cluster and
// ip:port ("DEFAULT/10.0.0.1:8080"), which is what Nacos itself keys an
// instance by within a service. It does not change with weight, metadata,
// health or enabled.
func instanceID(cluster, ip string, port int) string {
	return cluster + "/" + net.JoinHostPort(ip, strconv.Itoa(port))
}

// toInstance maps one host of a Nacos service:
//
//   - ID: "<cluster>/<ip>:<port>" (see instanceID);
//   - Address: Ip; Port: Port;
//   - Weight: mapWeight(Weight, scale);
//   - Healthy: Healthy && Enable. Both must hold for Remora to route to
//     the instance; an unhealthy or disabled instance stays in the set
//     (visible in /upstreams, its statistics kept) but is never picked;
//   - Metadata: a copy of Metadata without the server's internal keys
//     (InternalMetadataPrefix); nil when nothing is left.
//
// An error means the host is unusable (no IP, a port outside 1..65535).
func toInstance(h *model.Instance, scale int) (discovery.Instance, error) {
	if h.Port > 65535 {
		return discovery.Instance{}, fmt.Errorf("instance %s of cluster %q has port %d; want 1..65535", h.Ip, clusterOf(h), h.Port)
	}
	in := discovery.Instance{
		ID:       instanceID(clusterOf(h), h.Ip, int(h.Port)),
		Address:  h.Ip,
		Port:     int(h.Port),
		Weight:   mapWeight(h.Weight, scale),
		Healthy:  h.Healthy && h.Enable,
		Metadata: labels(h.Metadata),
	}
	if err := in.Validate(); err != nil {
		return discovery.Instance{}, err
	}
	return in, nil
}

// labels copies meta without the server's internal keys; nil when empty.
func labels(meta map[string]string) map[string]string {
	var out map[string]string
	for k, v := range meta {
		if strings.HasPrefix(k, InternalMetadataPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(meta))
		}
		out[k] = v
	}
	return out
}

// toSet maps the hosts of a service that belong to one of clusters (all
// when clusters is empty). Duplicates of an ID keep the first; skipped
// holds why unusable hosts were left out.
func toSet(hosts []model.Instance, clusters []string, scale int) (set []discovery.Instance, skipped []error) {
	set = make([]discovery.Instance, 0, len(hosts))
	seen := make(map[string]bool, len(hosts))
	for i := range hosts {
		h := &hosts[i]
		if len(clusters) > 0 && !slices.Contains(clusters, clusterOf(h)) {
			continue
		}
		in, err := toInstance(h, scale)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("skipping a Nacos instance: %w", err))
			continue
		}
		if seen[in.ID] {
			continue
		}
		seen[in.ID] = true
		set = append(set, in)
	}
	return set, skipped
}

// serviceKey names what one watch follows: a service in a group, limited to
// some clusters (sorted, no duplicates; empty means all).
type serviceKey struct {
	Group    string
	Service  string
	Clusters []string
}

// String renders the key in Nacos' own form, group@@service[@@c1,c2].
func (k serviceKey) String() string {
	s := k.Group + sep + k.Service
	if len(k.Clusters) > 0 {
		s += sep + strings.Join(k.Clusters, ",")
	}
	return s
}

// subKey is the SDK subscription a watch shares: one per group and
// service, whatever the clusters (see the package doc).
func (k serviceKey) subKey() string { return k.Group + sep + k.Service }

const sep = "@@"

// parseServiceKey reads the service name of an upstream. Besides a plain
// name it accepts Nacos' own key forms, which override the registry's group
// and clusters for that upstream:
//
//	orders                       group and clusters from the options
//	pay@@orders                  group "pay"
//	pay@@orders@@hz-a,hz-b       group "pay", clusters hz-a and hz-b
//	pay@@orders@@                group "pay", every cluster
//
// It is a parser of user input, fuzzed by FuzzParseServiceKey.
func parseServiceKey(s, group string, clusters []string) (serviceKey, error) {
	parts := strings.Split(s, sep)
	if len(parts) > 3 {
		return serviceKey{}, fmt.Errorf("service %q: too many %q; write name, group@@name or group@@name@@cluster1,cluster2", s, sep)
	}
	k := serviceKey{Group: group, Service: parts[len(parts)-1], Clusters: clusters}
	if len(parts) >= 2 {
		k.Group, k.Service = parts[0], parts[1]
		if k.Group == "" {
			return serviceKey{}, fmt.Errorf("service %q: empty group before %q", s, sep)
		}
	}
	if len(parts) == 3 {
		k.Clusters = nil
		if parts[2] != "" {
			k.Clusters = strings.Split(parts[2], ",")
		}
	}
	if k.Service == "" {
		return serviceKey{}, fmt.Errorf("service %q: empty service name", s)
	}
	for _, f := range [][2]string{{"group", k.Group}, {"service name", k.Service}} {
		if err := checkName(f[1]); err != nil {
			return serviceKey{}, fmt.Errorf("service %q: %s %q %v", s, f[0], f[1], err)
		}
	}
	cs := make([]string, 0, len(k.Clusters))
	for _, c := range k.Clusters {
		if c == "" {
			return serviceKey{}, fmt.Errorf("service %q: empty cluster name in the cluster list", s)
		}
		if err := checkName(c); err != nil {
			return serviceKey{}, fmt.Errorf("service %q: cluster %q %v", s, c, err)
		}
		cs = append(cs, c)
	}
	slices.Sort(cs)
	k.Clusters = slices.Compact(cs)
	if len(k.Clusters) == 0 {
		k.Clusters = nil
	}
	return k, nil
}
