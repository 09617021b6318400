package kubernetes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// parseYAML runs the registered factory on an options block, decoding it the
// strict way Remora's config loader does (unknown fields are errors).
func parseYAML(t *testing.T, block string) (*Options, error) {
	t.Helper()
	o, err := discoverytest.Parse(t, Type, block)
	if err != nil {
		return nil, err
	}
	return o.(*Options), nil
}

func TestParseDefaults(t *testing.T) {
	o, err := parseYAML(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if *o != (Options{}) {
		t.Fatalf("defaults: %v", o)
	}
	if got := o.String(); got != "kubernetes{in-cluster pods=false}" {
		t.Fatalf("String: %s", got)
	}
}

func TestParseFullBlock(t *testing.T) {
	o, err := parseYAML(t, `
kubeconfig: ~/.kube/config
context: dev
namespace: shop
port: http
pods: true
address_type: ipv6
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Kubeconfig: "~/.kube/config", Context: "dev", Namespace: "shop", Port: "http", Pods: true, AddressType: AddressTypeIPv6}
	if *o != want {
		t.Fatalf("got  %#v\nwant %#v", *o, want)
	}
	if got := o.String(); got != "kubernetes{kubeconfig=~/.kube/config context=dev namespace=shop port=http address_type=IPv6 pods=true}" {
		t.Fatalf("String: %s", got)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		block string
		want  []string // every one must appear in the error
	}{
		{"context: dev", []string{"context:", `"dev"`, "kubeconfig:"}},
		{"namespace: Shop", []string{"namespace:", `"Shop"`, "lower-case"}},
		{"namespace: -shop", []string{"namespace:", "start and end"}},
		{"port: 0", []string{"port:", `"0"`, "1..65535"}},
		{"port: 70000", []string{"port:", `"70000"`}},
		{"port: http_alt", []string{"port:", `"http_alt"`}},
		{"address_type: FQDN", []string{"address_type:", `"FQDN"`, "IPv4 or IPv6"}},
		{"pods: maybe", []string{"maybe"}},
		{"kube_config: x", []string{"kube_config"}},
		// Several mistakes are reported together.
		{"namespace: A\naddress_type: x", []string{"namespace:", "address_type:"}},
	}
	for _, tc := range tests {
		_, err := parseYAML(t, tc.block)
		if err == nil {
			t.Errorf("%q: no error", tc.block)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", tc.block, err, w)
			}
		}
	}
}

// Open fails for a kubeconfig that Check accepted and that vanished or
// broke since (a race); in-cluster configuration is TestOpenOutsideAPod's.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("this: is: not a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"missing kubeconfig", Options{Kubeconfig: "nope.yaml"}, "kubeconfig: open " + filepath.Join(dir, "nope.yaml")},
		{"broken kubeconfig", Options{Kubeconfig: "bad.yaml"}, "kubeconfig: " + bad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.o.Open(discovery.Env{Name: "k8s", BaseDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestOpenKubeconfigNamespace(t *testing.T) {
	dir := t.TempDir()
	kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts:
- {name: a, context: {cluster: c, user: u, namespace: team-a}}
- {name: b, context: {cluster: c, user: u}}
current-context: a
`
	if err := os.WriteFile(filepath.Join(dir, "kc"), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		o    Options
		want string
	}{
		{Options{Kubeconfig: "kc"}, "team-a"},
		{Options{Kubeconfig: "kc", Context: "b"}, "default"},
		{Options{Kubeconfig: "kc", Namespace: "shop"}, "shop"},
	}
	for _, tc := range tests {
		reg, err := tc.o.Open(discovery.Env{Name: "k8s", BaseDir: dir})
		if err != nil {
			t.Fatalf("%v: %v", tc.o, err)
		}
		if got := reg.(*Registry).cfg.Namespace; got != tc.want {
			t.Errorf("%v: namespace %q, want %q", tc.o, got, tc.want)
		}
		reg.Close()
	}
}
