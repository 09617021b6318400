package nacos

import (
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/remora-mesh/remora/discovery"
)

func TestMapWeight(t *testing.T) {
	tests := []struct {
		w     float64
		scale int
		want  uint32
		why   string
	}{
		{1, 1, 1, "Nacos' default weight"},
		{5, 1, 5, "integers map to themselves"},
		{10000, 1, 10000, "Nacos' maximum"},
		{2.5, 1, 3, "halves round away from zero"},
		{2.4, 1, 2, "rounds down below .5"},
		{0.3, 1, 1, "a positive weight never rounds to 0"},
		{0.7, 1, 1, "rounds to 1"},
		{1e-9, 1, 1, "tiny but positive"},
		{0, 1, 0, "0 drains"},
		{-1, 1, 0, "negative drains"},
		{math.NaN(), 1, 0, "NaN drains"},
		{math.Inf(-1), 1, 0, "-Inf drains"},
		{math.Inf(1), 1, MaxWeight, "+Inf is capped"},
		{1e12, 1, MaxWeight, "capped"},
		{0.3, 100, 30, "scale keeps two decimals"},
		{0.7, 100, 70, ""},
		{1, 100, 100, ""},
		{0.004, 100, 1, "still at least 1"},
		{10000, 1000, MaxWeight, "the largest weight at the largest scale"},
	}
	for _, tc := range tests {
		if got := mapWeight(tc.w, tc.scale); got != tc.want {
			t.Errorf("mapWeight(%v, %d) = %d, want %d (%s)", tc.w, tc.scale, got, tc.want, tc.why)
		}
	}
}

func TestToInstance(t *testing.T) {
	meta := map[string]string{"version": "v2", "internal-nacos-cluster": "hz", "internal-nacos-service": "s", "internal-nacos-clientconnId": "x"}
	tests := []struct {
		name    string
		h       model.Instance
		want    discovery.Instance
		wantErr string
	}{
		{name: "plain", h: model.Instance{Ip: "10.0.0.1", Port: 8080, Weight: 1, Healthy: true, Enable: true},
			want: discovery.Instance{ID: "DEFAULT/10.0.0.1:8080", Address: "10.0.0.1", Port: 8080, Weight: 1, Healthy: true}},
		{name: "cluster in the ID, internal metadata dropped", h: model.Instance{Ip: "10.0.0.1", Port: 80, Weight: 2, Healthy: true, Enable: true, ClusterName: "hz", Metadata: meta},
			want: discovery.Instance{ID: "hz/10.0.0.1:80", Address: "10.0.0.1", Port: 80, Weight: 2, Healthy: true, Metadata: map[string]string{"version": "v2"}}},
		{name: "only internal metadata", h: model.Instance{Ip: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Enable: true, Metadata: map[string]string{"internal-nacos-x": "y"}},
			want: discovery.Instance{ID: "DEFAULT/10.0.0.1:80", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true}},
		{name: "unhealthy", h: model.Instance{Ip: "10.0.0.1", Port: 80, Weight: 1, Healthy: false, Enable: true},
			want: discovery.Instance{ID: "DEFAULT/10.0.0.1:80", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: false}},
		{name: "disabled", h: model.Instance{Ip: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Enable: false},
			want: discovery.Instance{ID: "DEFAULT/10.0.0.1:80", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: false}},
		{name: "weight 0 drains", h: model.Instance{Ip: "10.0.0.1", Port: 80, Weight: 0, Healthy: true, Enable: true},
			want: discovery.Instance{ID: "DEFAULT/10.0.0.1:80", Address: "10.0.0.1", Port: 80, Weight: 0, Healthy: true}},
		{name: "ipv6", h: model.Instance{Ip: "fd00::1", Port: 80, Weight: 1, Healthy: true, Enable: true},
			want: discovery.Instance{ID: "DEFAULT/[fd00::1]:80", Address: "fd00::1", Port: 80, Weight: 1, Healthy: true}},
		{name: "no ip", h: model.Instance{Port: 80}, wantErr: "empty address"},
		{name: "port 0", h: model.Instance{Ip: "10.0.0.1"}, wantErr: "port 0"},
		{name: "port too large", h: model.Instance{Ip: "10.0.0.1", Port: 70000}, wantErr: "port 70000"},
		{name: "port would wrap", h: model.Instance{Ip: "10.0.0.1", Port: 1<<32 + 80}, wantErr: "port"},
	}
	for _, tc := range tests {
		got, err := toInstance(&tc.h, 1)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%s: got %+v, %v\nwant %+v", tc.name, got, err, tc.want)
		}
	}
	// The instance's metadata map is a copy.
	h := model.Instance{Ip: "10.0.0.1", Port: 80, Metadata: map[string]string{"a": "1"}}
	in, _ := toInstance(&h, 1)
	h.Metadata["a"] = "2"
	if in.Metadata["a"] != "1" {
		t.Error("the instance shares the SDK's metadata map")
	}
}

func TestToSet(t *testing.T) {
	hosts := []model.Instance{
		{Ip: "10.0.0.1", Port: 1, ClusterName: "a", Weight: 1, Healthy: true, Enable: true},
		{Ip: "10.0.0.2", Port: 2, ClusterName: "b", Weight: 1, Healthy: true, Enable: true},
		{Ip: "10.0.0.3", Port: 3, Weight: 1, Healthy: true, Enable: true},
		{Ip: "10.0.0.1", Port: 1, ClusterName: "a", Weight: 9, Healthy: true, Enable: true}, // duplicate ID
		{Ip: "", Port: 4, ClusterName: "a"},                                                 // unusable
	}
	ids := func(set []discovery.Instance) []string {
		out := []string{}
		for _, in := range set {
			out = append(out, in.ID)
		}
		slices.Sort(out)
		return out
	}
	set, skipped := toSet(hosts, nil, 1)
	if got := ids(set); !slices.Equal(got, []string{"DEFAULT/10.0.0.3:3", "a/10.0.0.1:1", "b/10.0.0.2:2"}) || len(skipped) != 1 {
		t.Fatalf("all clusters: %v, skipped %v", got, skipped)
	}
	if set[0].Weight != 1 {
		t.Fatalf("the first of two duplicates wins: %+v", set[0])
	}
	set, _ = toSet(hosts, []string{"a", "DEFAULT"}, 1)
	if got := ids(set); !slices.Equal(got, []string{"DEFAULT/10.0.0.3:3", "a/10.0.0.1:1"}) {
		t.Fatalf("clusters a and DEFAULT: %v", got)
	}
	if set, _ := toSet(nil, nil, 1); set == nil || len(set) != 0 {
		t.Fatalf("no hosts: %#v; want an empty, non-nil set", set)
	}
}

func TestParseServiceKey(t *testing.T) {
	def := []string{"x"}
	tests := []struct {
		in      string
		want    serviceKey
		wantErr string
	}{
		{in: "orders", want: serviceKey{Group: "G", Service: "orders", Clusters: def}},
		{in: "pay@@orders", want: serviceKey{Group: "pay", Service: "orders", Clusters: def}},
		{in: "pay@@orders@@b,a,b", want: serviceKey{Group: "pay", Service: "orders", Clusters: []string{"a", "b"}}},
		{in: "pay@@orders@@", want: serviceKey{Group: "pay", Service: "orders"}},
		{in: "DEFAULT_GROUP@@orders.v1:http", want: serviceKey{Group: "DEFAULT_GROUP", Service: "orders.v1:http", Clusters: def}},
		{in: "", wantErr: "empty service name"},
		{in: "pay@@", wantErr: "empty service name"},
		{in: "@@orders", wantErr: "empty group"},
		{in: "a@@b@@c@@d", wantErr: "too many"},
		{in: "pay@@orders@@a,", wantErr: "empty cluster"},
		{in: " orders", wantErr: "white space"},
		{in: "pay@@ord\x00ers", wantErr: "control character"},
		{in: "pay@@orders@@a b ", wantErr: "white space"},
	}
	for _, tc := range tests {
		got, err := parseServiceKey(tc.in, "G", def)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Group != tc.want.Group || got.Service != tc.want.Service || !slices.Equal(got.Clusters, tc.want.Clusters) {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// A parsed key renders in Nacos' form and parses back to itself.
func FuzzParseServiceKey(f *testing.F) {
	for _, s := range []string{"orders", "pay@@orders", "pay@@orders@@a,b", "pay@@orders@@", "@@", "a@@b@@c@@d", ",", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseServiceKey(s, DefaultGroup, nil)
		if err != nil {
			return
		}
		if k.Group == "" || k.Service == "" || strings.Contains(k.Service, sep) || strings.Contains(k.Group, sep) {
			t.Fatalf("%q parsed to %+v", s, k)
		}
		for _, c := range k.Clusters {
			if c == "" || strings.ContainsAny(c, ",") || strings.Contains(c, sep) {
				t.Fatalf("%q: cluster %q", s, c)
			}
		}
		if !slices.IsSorted(k.Clusters) || len(slices.Compact(slices.Clone(k.Clusters))) != len(k.Clusters) {
			t.Fatalf("%q: clusters %v not sorted and unique", s, k.Clusters)
		}
		back, err := parseServiceKey(k.String(), "other", []string{"z"})
		if err != nil || back.Group != k.Group || back.Service != k.Service || !slices.Equal(back.Clusters, k.Clusters) && len(k.Clusters) > 0 {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, k, k.String(), back, err)
		}
	})
}

func TestParseServer(t *testing.T) {
	tests := []struct {
		in   string
		want server
	}{
		{"10.0.0.1", server{"http", "10.0.0.1", 8848, "/nacos"}},
		{"10.0.0.1:9000", server{"http", "10.0.0.1", 9000, "/nacos"}},
		{"nacos.internal", server{"http", "nacos.internal", 8848, "/nacos"}},
		{"http://nacos:8848", server{"http", "nacos", 8848, "/nacos"}},
		{"HTTP://nacos:8848/", server{"http", "nacos", 8848, ""}},
		{"http://nacos:8848/my/ctx/", server{"http", "nacos", 8848, "/my/ctx"}},
		{"[::1]:8848", server{"http", "::1", 8848, "/nacos"}},
		{"::1", server{"http", "::1", 8848, "/nacos"}},
		{"[fd00::1]", server{"http", "fd00::1", 8848, "/nacos"}},
		{" 10.0.0.1:1 ", server{"http", "10.0.0.1", 1, "/nacos"}},
	}
	for _, tc := range tests {
		got, err := parseServer(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseServer(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "http://", "nacos:", "nacos:0", "nacos:65536", "[::1", "a:b:c", "https://nacos", "ws://nacos", "a b:1", "nacos:1/x?y", "nacos:1//x", "user@nacos:1"} {
		if got, err := parseServer(in); err == nil {
			t.Errorf("parseServer(%q) = %+v; want an error", in, got)
		}
	}
}

// Whatever it is given, parseServer either fails or returns a server whose
// address is a valid host:port and whose URL parses back to it.
func FuzzParseServer(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8848", "http://nacos:8848/nacos", "[::1]:1", "::1", "http://h/", "h:0", "%", "http://[::1]:8848/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		srv, err := parseServer(s)
		if err != nil {
			return
		}
		if srv.Host == "" || srv.Port < 1 || srv.Port > 65535 || srv.Scheme != "http" {
			t.Fatalf("%q -> %+v", s, srv)
		}
		host, port, err := net.SplitHostPort(net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port)))
		if err != nil || host != srv.Host || port != strconv.Itoa(srv.Port) {
			t.Fatalf("%q -> %+v: not a host:port", s, srv)
		}
		if srv.ContextPath != "" && (!strings.HasPrefix(srv.ContextPath, "/") || strings.HasSuffix(srv.ContextPath, "/")) {
			t.Fatalf("%q -> context path %q", s, srv.ContextPath)
		}
		back, err := parseServer(srv.String())
		if err != nil || back != srv {
			// A context path of "" renders without a trailing slash,
			// which parses back to the default; anything else must match.
			if !(srv.ContextPath == "" && err == nil && back.ContextPath == DefaultContextPath) {
				t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, srv, srv.String(), back, err)
			}
		}
	})
}
