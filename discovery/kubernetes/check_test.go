package kubernetes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// kubeconfigWith is a kubeconfig of one cluster and two contexts, with
// cluster and user fields added.
func kubeconfigWith(cluster, user string) string {
	return `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"` + cluster + `}}]
users: [{name: u, user: {token: t` + user + `}}]
contexts:
- {name: a, context: {cluster: c, user: u, namespace: team-a}}
- {name: b, context: {cluster: c, user: u}}
current-context: a
`
}

// The kubeconfig, its context and the files it names are read at
// validation (Check), so that `remora validate` refuses what would stop
// `remora run`; each error is placed at its field. In-cluster
// configuration is the environment's and is not checked.
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	discoverytest.WriteCert(t, dir)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for name, content := range map[string]string{
		"kc":          kubeconfigWith("", ""),
		"kc-tls":      kubeconfigWith(", certificate-authority: cert.pem", ", client-certificate: cert.pem, client-key: key.pem"),
		"no-current":  strings.Replace(kubeconfigWith("", ""), "current-context: a\n", "", 1),
		"bad.yaml":    "this: is: not a kubeconfig",
		"ca-missing":  kubeconfigWith(", certificate-authority: missing.pem", ""),
		"ca-garbage":  kubeconfigWith(", certificate-authority: garbage.pem", ""),
		"ca-data":     kubeconfigWith(", certificate-authority-data: bm90IFBFTQ==", ""),
		"key-missing": kubeconfigWith("", ", client-certificate: cert.pem, client-key: missing.pem"),
		"key-garbage": kubeconfigWith("", ", client-certificate: cert.pem, client-key: garbage.pem"),
		"garbage.pem": "not PEM",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		block string
		want  [][2]string // field, text
	}{
		{"", nil}, // in-cluster: Open's business, not the config's
		{"kubeconfig: kc", nil},
		{"kubeconfig: kc\ncontext: b", nil},
		{"kubeconfig: kc-tls", nil},
		{"kubeconfig: missing", [][2]string{{"kubeconfig", "open " + filepath.Join(dir, "missing") + ": no such file or directory"}}},
		{"kubeconfig: bad.yaml", [][2]string{{"kubeconfig", filepath.Join(dir, "bad.yaml")}}},
		{"kubeconfig: kc\ncontext: dev", [][2]string{{"context", `"dev" is not a context of ` + filepath.Join(dir, "kc") + `; it has "a", "b"`}}},
		{"kubeconfig: no-current", [][2]string{{"kubeconfig", `no-current has no current-context; set context: to one of its contexts ("a", "b")`}}},
		{"kubeconfig: ca-missing", [][2]string{{"kubeconfig", "missing.pem"}}},
		{"kubeconfig: ca-garbage", [][2]string{{"kubeconfig", "unable to load root certificates"}}},
		{"kubeconfig: ca-data", [][2]string{{"kubeconfig", "unable to load root certificates"}}},
		{"kubeconfig: key-missing", [][2]string{{"kubeconfig", "missing.pem"}}},
		{"kubeconfig: key-garbage", [][2]string{{"kubeconfig", "key-garbage"}}},
	} {
		o, err := parseYAML(t, tc.block)
		if err != nil {
			t.Fatalf("%q: %v", tc.block, err)
		}
		var c discovery.Checker = o
		err = c.Check(dir)
		discoverytest.WantFieldErrors(t, tc.block, err, tc.want)
	}
}

// Outside a pod, without kubeconfig:, Open does not fail: the registry's
// watchers report that there is no API server to ask.
func TestOpenOutsideAPod(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	o, err := parseYAML(t, "pods: true")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{Name: "k8s"})
	if err != nil {
		t.Fatalf("Open: %v; want a registry whose watchers report the error", err)
	}
	defer reg.Close()
	err = discoverytest.WatchError(t, reg, "shop/web:80", 10*time.Second)
	if !strings.Contains(err.Error(), "not running in a pod") {
		t.Fatalf("Next: %v; want an error saying Remora is not running in a pod", err)
	}
}
