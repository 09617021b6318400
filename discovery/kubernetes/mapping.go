package kubernetes

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/remora-mesh/remora/discovery"
)

// Metadata keys the adapter sets on every instance (pod labels, with pods:
// true, come first and are overridden by these).
const (
	// MetaZone is the endpoint's zone (EndpointSlice endpoints[].zone),
	// under the well-known label's name; MetaZoneShort carries it too,
	// under the key that locality: reads by default and that the other
	// registries' instances use.
	MetaZone      = "topology.kubernetes.io/zone"
	MetaZoneShort = "zone"
	// MetaNode is the name of the node the endpoint runs on.
	MetaNode = "kubernetes.io/hostname"
	// MetaPod is the name of the endpoint's target pod.
	MetaPod = "k8s.pod"
	// MetaState is the endpoint's state: StateReady, StateDraining,
	// StateNotReady or StateTerminating.
	MetaState = "k8s.state"
	// MetaHintZones and MetaHintNodes are the endpoint's topology hints
	// (hints.forZones, hints.forNodes), comma-separated.
	MetaHintZones = "k8s.hints.zones"
	MetaHintNodes = "k8s.hints.nodes"
)

// WeightAnnotation is the pod annotation that sets an endpoint's weight
// (0..4294967295; 0 drains it) when the registry reads pods.
const WeightAnnotation = "remora.io/weight"

// Endpoint states, the values of MetaState, and how they map to an
// Instance:
//
//	ready        ready                       Healthy, weight 1 (or the pod's)
//	draining     terminating, still serving  Healthy, weight 0: kept, no new requests
//	not-ready    not ready, not terminating  not Healthy, kept
//	terminating  terminating, not serving    not Healthy, weight 0, kept
//
// While no endpoint of the followed port is ready, draining ones keep
// their weight (1 or the pod's) and take the traffic, as kube-proxy falls
// back to serving terminating endpoints: a single replica's rollout, a
// Recreate one, a drained node.
const (
	StateReady       = "ready"
	StateDraining    = "draining"
	StateNotReady    = "not-ready"
	StateTerminating = "terminating"
)

// podMeta is what the adapter reads of a pod: its labels and the weight
// annotation.
type podMeta struct {
	labels    map[string]string
	weight    uint32
	hasWeight bool
}

// podLookup finds the metadata of a pod of the service's namespace by
// name; nil when the registry does not read pods.
type podLookup func(name string) (podMeta, bool)

// portSelector says which port of the slices to follow: by number (the
// endpoints' port number, which traffic goes to) or by name; the zero
// value means "the only one".
type portSelector struct {
	num  int32
	name string
	set  bool
}

func selectPort(p string) portSelector {
	if p == "" {
		return portSelector{}
	}
	num, name, _ := parsePort(p) // validated before
	return portSelector{num: num, name: name, set: true}
}

func (p portSelector) String() string {
	if p.num != 0 {
		return strconv.Itoa(int(p.num))
	}
	return p.name
}

// instances maps the EndpointSlices of one service to its instance set
// (not sorted). Slices of another address type than addressType (when set)
// and FQDN slices are ignored; so is a port with a protocol other than TCP.
// An endpoint whose target pod pods does not know (yet) is left out, so
// that it never joins without its labels. A service without endpoints has
// the empty set; one whose slices have endpoints but none that can be
// followed is an error that says why: the slices' address types, the
// ports there are when none is the selected one, or no ports at all (a
// Service without ports, followed on a port number only).
func instances(slicesIn []*discoveryv1.EndpointSlice, sel portSelector, addressType string, pods podLookup) ([]discovery.Instance, error) {
	ss := slices.Clone(slicesIn)
	slices.SortFunc(ss, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })

	withEndpoints, portless := false, true
	for _, s := range ss {
		if len(s.Endpoints) > 0 && usable(s, addressType) {
			withEndpoints = true
			portless = portless && len(s.Ports) == 0
		}
	}
	if !withEndpoints {
		return unread(ss, addressType)
	}
	if portless && sel.num == 0 {
		// A Service without ports (a headless one may have none): its
		// endpoints listen on ports it does not say, so only a number
		// can name one.
		what := "no ports"
		if sel.set {
			what = "no port " + sel.name + ", nor any other"
		}
		return nil, fmt.Errorf("the service's endpoints have %s (a Service without ports, as a headless one may be); name the number they listen on: SERVICE:NUMBER, or port: in the registry", what)
	}

	if !sel.set {
		// No port named: the service's only one that can be followed
		// (a TCP port with a number: a Service's UDP port beside it, as
		// DNS has, leaves no choice).
		names := map[string]bool{}
		for _, s := range ss {
			if len(s.Endpoints) == 0 || !usable(s, addressType) {
				continue
			}
			for _, p := range s.Ports {
				if followable(p) {
					names[portName(p)] = true
				}
			}
		}
		switch len(names) {
		case 0:
			return nil, fmt.Errorf("the service's endpoints have no TCP port with a number; they have %s", describePorts(ss, addressType, false))
		case 1:
			for n := range names {
				sel = portSelector{name: n, set: true}
			}
		default:
			return nil, fmt.Errorf("the service has several ports (%s); name one: SERVICE:PORT, or port: in the registry", describePorts(ss, addressType, true))
		}
	}

	type cand struct {
		in     discovery.Instance
		rank   int
		weight uint32 // when it serves
		ipv6   bool
	}
	byID := map[string]int{}
	var out []cand
	onPort := false // a slice with endpoints has the port
	for _, s := range ss {
		if len(s.Endpoints) == 0 || !usable(s, addressType) {
			continue
		}
		port, ok := int(sel.num), true // a Service without ports: the number named
		if !portless {
			port, ok = findPort(s, sel)
		}
		if !ok {
			continue
		}
		onPort = true
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			in, rank, weight, ok := instance(ep, port, pods)
			if !ok {
				continue
			}
			c := cand{in: in, rank: rank, weight: weight, ipv6: s.AddressType == discoveryv1.AddressTypeIPv6}
			if j, dup := byID[in.ID]; dup {
				// The same pod in two slices (dual stack, or a move
				// between slices): keep the more useful one.
				o := out[j]
				if c.rank > o.rank || c.rank == o.rank && o.ipv6 && !c.ipv6 {
					out[j] = c
				}
				continue
			}
			byID[in.ID] = len(out)
			out = append(out, c)
		}
	}
	if !onPort {
		return nil, fmt.Errorf("the service's endpoints have no TCP port %s; they have %s", sel, describePorts(ss, addressType, false))
	}
	// kube-proxy's fallback, decided as it does over the whole set (all
	// zones) of the port: when no endpoint is ready, the draining ones
	// serve; once one is ready, they drain again.
	fallback := !slices.ContainsFunc(out, func(c cand) bool { return c.rank == rankReady })
	set := make([]discovery.Instance, len(out))
	for i, c := range out {
		if fallback && c.rank == rankDraining {
			c.in.Weight = c.weight
		}
		set[i] = c.in
	}
	return set, nil
}

// usable reports whether a slice's address type is read.
func usable(s *discoveryv1.EndpointSlice, addressType string) bool {
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		return addressType == "" || string(s.AddressType) == addressType
	}
	return false
}

func portName(p discoveryv1.EndpointPort) string {
	if p.Name == nil {
		return ""
	}
	return *p.Name
}

func isTCP(p discoveryv1.EndpointPort) bool {
	return p.Protocol == nil || *p.Protocol == "TCP"
}

// followable reports whether a port can be followed: TCP, with a number
// (the API's port without one means "all ports", which kube-proxy ignores
// too).
func followable(p discoveryv1.EndpointPort) bool {
	return p.Port != nil && isTCP(p)
}

// findPort returns the slice's port number for sel.
func findPort(s *discoveryv1.EndpointSlice, sel portSelector) (int, bool) {
	for _, p := range s.Ports {
		if !followable(p) {
			continue
		}
		if sel.num != 0 && *p.Port == sel.num || sel.num == 0 && portName(p) == sel.name {
			return int(*p.Port), true
		}
	}
	return 0, false
}

// unread is the outcome when no slice with endpoints is read: the empty
// set when the slices have no endpoints, else an error that says why
// those they have are not followed.
func unread(ss []*discoveryv1.EndpointSlice, addressType string) ([]discovery.Instance, error) {
	var why []string
	for _, s := range ss {
		if len(s.Endpoints) == 0 {
			continue
		}
		var w string
		switch s.AddressType {
		case discoveryv1.AddressTypeFQDN:
			w = "FQDN names (the kubernetes registry follows IP addresses; a dns registry can follow a name)"
		case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
			w = fmt.Sprintf("%s addresses (address_type: %s leaves them out; set it to %[1]s, or leave it out for both)", s.AddressType, addressType)
		default:
			w = fmt.Sprintf("of address type %q, which the kubernetes registry does not follow", s.AddressType)
		}
		why = append(why, w)
	}
	if len(why) == 0 {
		return []discovery.Instance{}, nil
	}
	slices.Sort(why)
	return nil, fmt.Errorf("the service's endpoints are all %s", strings.Join(slices.Compact(why), ", or "))
}

// describePorts lists the ports of the slices with endpoints (only those
// that can be followed, if followableOnly) as name=number (number alone
// for an unnamed port, /PROTOCOL after one that is not TCP), a port
// without a number in words, sorted and deduplicated.
func describePorts(ss []*discoveryv1.EndpointSlice, addressType string, followableOnly bool) string {
	var ports []string
	for _, s := range ss {
		if len(s.Endpoints) == 0 || !usable(s, addressType) {
			continue
		}
		for _, p := range s.Ports {
			if followableOnly && !followable(p) {
				continue
			}
			name := portName(p)
			var d string
			switch {
			case p.Port != nil:
				d = strconv.Itoa(int(*p.Port))
				if name != "" {
					d = name + "=" + d
				}
				if !isTCP(p) {
					d += "/" + string(*p.Protocol)
				}
			default:
				d = "a port with no number"
				if !isTCP(p) {
					d = "a " + string(*p.Protocol) + " port with no number"
				}
				if name != "" {
					d = name + " (" + d + ")"
				}
			}
			ports = append(ports, d)
		}
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	if len(ports) == 0 {
		return "none"
	}
	return strings.Join(ports, ", ")
}

// The ranks of the endpoint states: when one pod is listed twice, the
// higher one is kept.
const (
	rankTerminating = iota
	rankNotReady
	rankDraining
	rankReady
)

// instance maps one endpoint on port to an instance and ranks its state;
// weight is the weight it has when it serves (a draining one has weight 0,
// unless instances falls back on it); ok is false for an endpoint without
// an address or whose pod is not known.
func instance(ep *discoveryv1.Endpoint, port int, pods podLookup) (in discovery.Instance, rank int, weight uint32, ok bool) {
	if len(ep.Addresses) == 0 || ep.Addresses[0] == "" {
		return in, 0, 0, false
	}
	addr := ep.Addresses[0] // the API: all addresses are fungible
	in = discovery.Instance{Address: addr, Port: port, Weight: discovery.DefaultWeight}
	meta := map[string]string{}
	podName := ""
	switch ref := ep.TargetRef; {
	case ref != nil && (ref.Kind == "Pod" || ref.Kind == "") && ref.Name != "":
		podName = ref.Name
		in.ID = ref.Name
	case ref != nil && ref.Name != "":
		in.ID = ref.Kind + "/" + ref.Name
	default:
		in.ID = net.JoinHostPort(addr, strconv.Itoa(port))
	}
	if pods != nil && podName != "" {
		pm, known := pods(podName)
		if !known {
			return in, 0, 0, false
		}
		for k, v := range pm.labels {
			meta[k] = v
		}
		if pm.hasWeight {
			in.Weight = pm.weight
		}
	}

	// Conditions: ready and serving are true when absent, terminating
	// false (the API's documented defaults).
	c := ep.Conditions
	ready := c.Ready == nil || *c.Ready
	serving := c.Serving == nil || *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	weight = in.Weight
	var state string
	switch {
	case terminating && serving:
		state, rank, in.Healthy, in.Weight = StateDraining, rankDraining, true, 0
	case terminating:
		state, rank, in.Healthy, in.Weight = StateTerminating, rankTerminating, false, 0
	case ready:
		state, rank, in.Healthy = StateReady, rankReady, true
	default:
		state, rank, in.Healthy = StateNotReady, rankNotReady, false
	}
	meta[MetaState] = state
	if podName != "" {
		meta[MetaPod] = podName
	}
	if ep.Zone != nil && *ep.Zone != "" {
		meta[MetaZone], meta[MetaZoneShort] = *ep.Zone, *ep.Zone
	}
	if ep.NodeName != nil && *ep.NodeName != "" {
		meta[MetaNode] = *ep.NodeName
	}
	if h := ep.Hints; h != nil {
		if len(h.ForZones) > 0 {
			z := make([]string, len(h.ForZones))
			for i, f := range h.ForZones {
				z[i] = f.Name
			}
			meta[MetaHintZones] = strings.Join(z, ",")
		}
		if len(h.ForNodes) > 0 {
			n := make([]string, len(h.ForNodes))
			for i, f := range h.ForNodes {
				n[i] = f.Name
			}
			meta[MetaHintNodes] = strings.Join(n, ",")
		}
	}
	in.Metadata = meta
	return in, rank, weight, true
}

// parseWeight reads the weight annotation.
func parseWeight(v string) (uint32, error) {
	w, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("annotation %s: %q is not a weight (0..4294967295)", WeightAnnotation, v)
	}
	return uint32(w), nil
}
