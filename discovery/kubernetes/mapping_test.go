package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

func ptr[T any](v T) *T { return &v }

type ep struct {
	pod, addr            string
	ready, serv, term    *bool
	zone, node           string
	hintZones, hintNodes []string
	kind                 string // target kind; "" = Pod when pod is set
	extraAddr            string
}

func (e ep) endpoint() discoveryv1.Endpoint {
	out := discoveryv1.Endpoint{
		Addresses:  []string{e.addr},
		Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serv, Terminating: e.term},
	}
	if e.extraAddr != "" {
		out.Addresses = append(out.Addresses, e.extraAddr)
	}
	if e.pod != "" {
		kind := e.kind
		if kind == "" {
			kind = "Pod"
		}
		out.TargetRef = &corev1.ObjectReference{Kind: kind, Name: e.pod}
	}
	if e.zone != "" {
		out.Zone = &e.zone
	}
	if e.node != "" {
		out.NodeName = &e.node
	}
	if len(e.hintZones)+len(e.hintNodes) > 0 {
		out.Hints = &discoveryv1.EndpointHints{}
		for _, z := range e.hintZones {
			out.Hints.ForZones = append(out.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
		for _, n := range e.hintNodes {
			out.Hints.ForNodes = append(out.Hints.ForNodes, discoveryv1.ForNode{Name: n})
		}
	}
	return out
}

type port struct {
	name  string
	num   int32 // 0: no number (the API's "all ports")
	proto corev1.Protocol
}

func slice(name string, typ discoveryv1.AddressType, ports []port, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, AddressType: typ}
	for _, p := range ports {
		var ep discoveryv1.EndpointPort
		if p.num != 0 {
			ep.Port = ptr(p.num)
		}
		if p.name != "" {
			ep.Name = ptr(p.name)
		}
		if p.proto != "" {
			ep.Protocol = ptr(p.proto)
		}
		s.Ports = append(s.Ports, ep)
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, e.endpoint())
	}
	return s
}

var (
	yes, no  = ptr(true), ptr(false)
	httpPort = []port{{name: "http", num: 8080}}
	v4, v6   = discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
)

func inst(id, addr string, port int, weight uint32, healthy bool, meta ...string) discovery.Instance {
	m := map[string]string{}
	for i := 0; i+1 < len(meta); i += 2 {
		m[meta[i]] = meta[i+1]
	}
	return discovery.Instance{ID: id, Address: addr, Port: port, Weight: weight, Healthy: healthy, Metadata: m}
}

func TestInstances(t *testing.T) {
	pods := map[string]podMeta{
		"a": {labels: map[string]string{"app": "web", "canary": "true", MetaState: "spoofed"}},
		"b": {labels: map[string]string{"app": "web"}, weight: 5, hasWeight: true},
		"z": {weight: 0, hasWeight: true},
	}
	lookup := func(name string) (podMeta, bool) { pm, ok := pods[name]; return pm, ok }
	tests := []struct {
		name     string
		slices   []*discoveryv1.EndpointSlice
		port     string
		addrType string
		pods     podLookup
		want     []discovery.Instance
		err      string
	}{
		{
			name:   "ready endpoints with zone, node and hints",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, httpPort, ep{pod: "a", addr: "10.0.0.1", ready: yes, zone: "z1", node: "n1", hintZones: []string{"z1", "z2"}, hintNodes: []string{"n1"}})},
			want: []discovery.Instance{inst("a", "10.0.0.1", 8080, 1, true,
				MetaState, StateReady, MetaPod, "a", MetaZone, "z1", MetaZoneShort, "z1", MetaNode, "n1", MetaHintZones, "z1,z2", MetaHintNodes, "n1")},
		},
		{
			name: "conditions: absent means ready; terminating serving drains; not ready and terminating are kept",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, httpPort,
				ep{pod: "a", addr: "10.0.0.1"},
				ep{pod: "b", addr: "10.0.0.2", ready: no, serv: yes, term: yes},
				ep{pod: "c", addr: "10.0.0.3", ready: no, serv: no, term: no},
				ep{pod: "d", addr: "10.0.0.4", ready: no, serv: no, term: yes},
				ep{pod: "e", addr: "10.0.0.5", ready: no, term: yes}, // serving absent: true
			)},
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, MetaState, StateReady, MetaPod, "a"),
				inst("b", "10.0.0.2", 8080, 0, true, MetaState, StateDraining, MetaPod, "b"),
				inst("c", "10.0.0.3", 8080, 1, false, MetaState, StateNotReady, MetaPod, "c"),
				inst("d", "10.0.0.4", 8080, 0, false, MetaState, StateTerminating, MetaPod, "d"),
				inst("e", "10.0.0.5", 8080, 0, true, MetaState, StateDraining, MetaPod, "e"),
			},
		},
		{
			name: "no endpoint ready: the serving terminating ones serve with their weight, still draining (kube-proxy's fallback)",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", v4, httpPort,
					ep{pod: "a", addr: "10.0.0.1", ready: no, serv: yes, term: yes, zone: "z1"},
					ep{pod: "b", addr: "10.0.0.2", ready: no, serv: yes, term: yes},
					ep{addr: "10.0.0.3", ready: no, serv: no, term: no},
					ep{addr: "10.0.0.4", ready: no, serv: no, term: yes}),
				slice("s2", v4, httpPort, ep{pod: "z", addr: "10.0.0.26", ready: no, serv: yes, term: yes, zone: "z2"}),
			},
			pods: lookup,
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, "app", "web", "canary", "true", MetaState, StateDraining, MetaPod, "a", MetaZone, "z1", MetaZoneShort, "z1"),
				inst("b", "10.0.0.2", 8080, 5, true, "app", "web", MetaState, StateDraining, MetaPod, "b"),
				inst("10.0.0.3:8080", "10.0.0.3", 8080, 1, false, MetaState, StateNotReady),
				inst("10.0.0.4:8080", "10.0.0.4", 8080, 0, false, MetaState, StateTerminating),
				inst("z", "10.0.0.26", 8080, 0, true, MetaState, StateDraining, MetaPod, "z", MetaZone, "z2", MetaZoneShort, "z2"),
			},
		},
		{
			name: "one endpoint ready, in another slice and zone: the serving terminating ones drain",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", v4, httpPort, ep{pod: "a", addr: "10.0.0.1", ready: no, serv: yes, term: yes, zone: "z1"}),
				slice("s2", v4, httpPort, ep{pod: "b", addr: "10.0.0.2", zone: "z2"}),
			},
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 0, true, MetaState, StateDraining, MetaPod, "a", MetaZone, "z1", MetaZoneShort, "z1"),
				inst("b", "10.0.0.2", 8080, 1, true, MetaState, StateReady, MetaPod, "b", MetaZone, "z2", MetaZoneShort, "z2"),
			},
		},
		{
			name: "identity: pod name, kind/name, or address:port; first address",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, httpPort,
				ep{pod: "vm-1", kind: "VirtualMachineInstance", addr: "10.0.0.1"},
				ep{addr: "10.0.0.2", extraAddr: "10.0.0.3"},
				ep{addr: ""},
			)},
			want: []discovery.Instance{
				inst("VirtualMachineInstance/vm-1", "10.0.0.1", 8080, 1, true, MetaState, StateReady),
				inst("10.0.0.2:8080", "10.0.0.2", 8080, 1, true, MetaState, StateReady),
			},
		},
		{
			name: "pods: labels and weight; adapter keys win; unknown pod left out",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, httpPort,
				ep{pod: "a", addr: "10.0.0.1"}, ep{pod: "b", addr: "10.0.0.2"}, ep{pod: "new", addr: "10.0.0.9"},
				ep{pod: "z", addr: "10.0.0.26"}, ep{addr: "10.0.0.3"})},
			pods: lookup,
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, "app", "web", "canary", "true", MetaState, StateReady, MetaPod, "a"),
				inst("b", "10.0.0.2", 8080, 5, true, "app", "web", MetaState, StateReady, MetaPod, "b"),
				inst("z", "10.0.0.26", 8080, 0, true, MetaState, StateReady, MetaPod, "z"),
				inst("10.0.0.3:8080", "10.0.0.3", 8080, 1, true, MetaState, StateReady),
			},
		},
		{
			name: "port by name, by number, only UDP ignored",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", v4, []port{{name: "http", num: 8080}, {name: "metrics", num: 9090}, {name: "dns", num: 53, proto: corev1.ProtocolUDP}}, ep{pod: "a", addr: "10.0.0.1"}),
			},
			port: "9090",
			want: []discovery.Instance{inst("a", "10.0.0.1", 9090, 1, true, MetaState, StateReady, MetaPod, "a")},
		},
		{
			name: "named port resolved per slice (pods with different container ports)",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", v4, []port{{name: "http", num: 8080}}, ep{pod: "a", addr: "10.0.0.1"}),
				slice("s2", v4, []port{{name: "http", num: 8081}}, ep{pod: "b", addr: "10.0.0.2"}),
			},
			port: "http",
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, MetaState, StateReady, MetaPod, "a"),
				inst("b", "10.0.0.2", 8081, 1, true, MetaState, StateReady, MetaPod, "b"),
			},
		},
		{
			name:   "the only port, unnamed",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{num: 80}}, ep{addr: "10.0.0.1"})},
			want:   []discovery.Instance{inst("10.0.0.1:80", "10.0.0.1", 80, 1, true, MetaState, StateReady)},
		},
		{
			name:   "several ports and none named",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "http", num: 8080}, {name: "grpc", num: 9000}}, ep{addr: "10.0.0.1"})},
			err:    "the service has several ports (grpc=9000, http=8080); name one",
		},
		{
			name:   "one TCP port beside a UDP one, none named: the TCP one",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "dns-tcp", num: 53}, {name: "dns", num: 53, proto: corev1.ProtocolUDP}}, ep{pod: "a", addr: "10.0.0.1"})},
			want:   []discovery.Instance{inst("a", "10.0.0.1", 53, 1, true, MetaState, StateReady, MetaPod, "a")},
		},
		{
			name:   "one TCP port beside one with no number, none named: the TCP one",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "all"}, {num: 8080, proto: corev1.ProtocolTCP}}, ep{pod: "a", addr: "10.0.0.1"})},
			want:   []discovery.Instance{inst("a", "10.0.0.1", 8080, 1, true, MetaState, StateReady, MetaPod, "a")},
		},
		{
			name:   "several TCP ports beside a UDP one: the TCP ones listed",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "http", num: 8080}, {name: "grpc", num: 9000}, {name: "dns", num: 53, proto: corev1.ProtocolUDP}}, ep{addr: "10.0.0.1"})},
			err:    "the service has several ports (grpc=9000, http=8080); name one",
		},
		{
			name:   "only UDP, none named",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "dns", num: 53, proto: corev1.ProtocolUDP}}, ep{addr: "10.0.0.1"})},
			err:    "the service's endpoints have no TCP port with a number; they have dns=53/UDP",
		},
		{
			name:   "ports with no number, in words",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{}, {name: "all"}, {name: "dns", proto: corev1.ProtocolUDP}, {name: "http", num: 80}}, ep{addr: "10.0.0.1"})},
			port:   "8080",
			err:    "the service's endpoints have no TCP port 8080; they have a port with no number, all (a port with no number), dns (a UDP port with no number), http=80",
		},
		{
			name:   "only a port with no number, none named",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{}}, ep{addr: "10.0.0.1"})},
			err:    "the service's endpoints have no TCP port with a number; they have a port with no number",
		},
		{
			name:   "no such port",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, []port{{name: "http", num: 8080}, {name: "dns", num: 53, proto: corev1.ProtocolUDP}}, ep{addr: "10.0.0.1"})},
			port:   "grpc",
			err:    "no TCP port grpc; they have dns=53/UDP, http=8080",
		},
		{
			name:   "empty slices: the empty set, no error",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, nil)},
			port:   "grpc",
			want:   []discovery.Instance{},
		},
		{
			name:   "no ports (a headless Service without any), none named: say to name a number",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, nil, ep{addr: "10.0.0.1"}), slice("s2", v4, []port{}, ep{addr: "10.0.0.2"})},
			err:    "the service's endpoints have no ports (a Service without ports, as a headless one may be); name the number they listen on: SERVICE:NUMBER, or port: in the registry",
		},
		{
			name:   "no ports, a port name: the same",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, nil, ep{addr: "10.0.0.1"})},
			port:   "http",
			err:    "the service's endpoints have no port http, nor any other (a Service without ports",
		},
		{
			name:   "no ports, a port number: the endpoints on it",
			slices: []*discoveryv1.EndpointSlice{slice("s1", v4, nil, ep{pod: "a", addr: "10.0.0.1"}, ep{addr: "10.0.0.2"})},
			port:   "8080",
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, MetaState, StateReady, MetaPod, "a"),
				inst("10.0.0.2:8080", "10.0.0.2", 8080, 1, true, MetaState, StateReady),
			},
		},
		{
			name: "a number on a Service with ports is one of them, not any",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", v4, nil, ep{pod: "a", addr: "10.0.0.1"}),
				slice("s2", v4, httpPort, ep{pod: "b", addr: "10.0.0.2"}),
			},
			port: "9090",
			err:  "no TCP port 9090; they have http=8080",
		},
		{
			name:   "FQDN endpoints only: say so",
			slices: []*discoveryv1.EndpointSlice{slice("s1", discoveryv1.AddressTypeFQDN, httpPort, ep{addr: "backend.example.com"})},
			port:   "http",
			err:    "the service's endpoints are all FQDN names (the kubernetes registry follows IP addresses; a dns registry can follow a name)",
		},
		{
			name: "no slice of the address type read: say which there are",
			slices: []*discoveryv1.EndpointSlice{
				slice("s1", discoveryv1.AddressTypeFQDN, httpPort, ep{addr: "backend.example.com"}),
				slice("s2", v4, httpPort, ep{addr: "10.0.0.1"}),
				slice("s3", v4, httpPort, ep{addr: "10.0.0.2"}),
				slice("s4", v6, httpPort),
			},
			addrType: AddressTypeIPv6,
			err:      "the service's endpoints are all FQDN names (the kubernetes registry follows IP addresses; a dns registry can follow a name), or IPv4 addresses (address_type: IPv6 leaves them out; set it to IPv4, or leave it out for both)",
		},
		{
			name:     "no endpoints, of any address type: the empty set, no error",
			slices:   []*discoveryv1.EndpointSlice{slice("s1", discoveryv1.AddressTypeFQDN, httpPort), slice("s2", v4, nil), slice("s3", v4, httpPort)},
			addrType: AddressTypeIPv6,
			want:     []discovery.Instance{},
		},
		{
			name: "dual stack: one instance per pod, IPv4 first; the ready one over a terminating one",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-v6", v6, httpPort, ep{pod: "a", addr: "fd00::1"}, ep{pod: "b", addr: "fd00::2"}),
				slice("b-v4", v4, httpPort, ep{pod: "a", addr: "10.0.0.1"}, ep{pod: "b", addr: "10.0.0.2", ready: no, serv: yes, term: yes}),
				slice("c-fqdn", discoveryv1.AddressTypeFQDN, httpPort, ep{pod: "c", addr: "c.example"}),
			},
			want: []discovery.Instance{
				inst("a", "10.0.0.1", 8080, 1, true, MetaState, StateReady, MetaPod, "a"),
				inst("b", "fd00::2", 8080, 1, true, MetaState, StateReady, MetaPod, "b"),
			},
		},
		{
			name: "address_type IPv6",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-v6", v6, httpPort, ep{pod: "a", addr: "fd00::1"}),
				slice("b-v4", v4, httpPort, ep{pod: "a", addr: "10.0.0.1"}),
			},
			addrType: AddressTypeIPv6,
			want:     []discovery.Instance{inst("a", "fd00::1", 8080, 1, true, MetaState, StateReady, MetaPod, "a")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := instances(tc.slices, selectPort(tc.port), tc.addrType, tc.pods)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			discovery.SortByID(got)
			discovery.SortByID(tc.want)
			if !discovery.EqualSets(got, tc.want) {
				t.Fatalf("got  %s\nwant %s", discoverytest.Describe(got), discoverytest.Describe(tc.want))
			}
		})
	}
}

func TestParseWeight(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1": 1, " 20 ": 20, "4294967295": 4294967295, "-1": -1, "x": -1, "4294967296": -1, "": -1} {
		w, err := parseWeight(in)
		if want < 0 {
			if err == nil || !strings.Contains(err.Error(), WeightAnnotation) {
				t.Errorf("parseWeight(%q) = %d, %v; want an error naming the annotation", in, w, err)
			}
			continue
		}
		if err != nil || int64(w) != want {
			t.Errorf("parseWeight(%q) = %d, %v; want %d", in, w, err, want)
		}
	}
}
