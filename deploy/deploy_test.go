package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/restmapper"

	_ "github.com/remora-mesh/remora/discovery/kubernetes"
	"github.com/remora-mesh/remora/discovery/kubernetes/kubetest"
	"github.com/remora-mesh/remora/internal/testproc"
	"github.com/remora-mesh/remora/pkg/config"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// HelmEnv names the environment variable with the path of a helm binary to
// use instead of building one with scripts/helm.sh.
const HelmEnv = "REMORA_HELM_BIN"

var helmBinary = testproc.Binary{Env: HelmEnv, Script: "scripts/helm.sh", What: "helm", Kind: "helm"}

const chart = "helm/remora"

// helm runs helm with args in a home of its own and returns its standard
// output, failing t with its standard error.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := helmRun(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// helmRun runs helm with args in a home of its own and returns its
// standard output, or an error with its standard error.
func helmRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := helmBinary.Path()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+home+"/cache",
		"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data", "KUBECONFIG="+home+"/none")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v\n%s%s", err, out, stderr.String())
	}
	return string(out), nil
}

// The chart's values schema refuses mistakes, naming the value.
func TestChartRejectsBadValues(t *testing.T) {
	tests := []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "admin.port=0"}, "'/admin/port': minimum"},
		{[]string{"--set", "rbac.pods=maybe"}, "'/rbac/pods': got string, want boolean"},
		{[]string{"--set", "image.pullPolicy=Sometimes"}, "'/image/pullPolicy': value must be one of"},
		{[]string{"--set", "imag.tag=1"}, "imag"},
		{[]string{"--set", "config.admin.address=0.0.0.0:1"}, "'/config'"},
		{[]string{"--set-string", "sidecar.drainWait=5"}, "'/sidecar/drainWait'"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.set, " "), func(t *testing.T) {
			out, err := helmRun(t, append([]string{"template", "rel", chart}, tc.set...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template %v: %v\n%s; want an error naming %q", tc.set, err, out, tc.want)
			}
		})
	}
}

// valueSets are the chart's renderings under test: the defaults, and every
// template turned on.
var valueSets = []struct {
	name string
	set  []string
}{
	{"defaults", nil},
	{"example, pods, another namespace", []string{"--set", "example.enabled=true,rbac.pods=true,rbac.namespaces={other}"}},
	{"existing secret, named service account", []string{"--set", "admin.existingSecret=mine,serviceAccount.name=sidecar,image.tag=0.2.0"}},
	{"pods through the registry", []string{"--set-json", `config.registries=[{"name":"k8s","type":"kubernetes","kubernetes":{"pods":true}}]`}},
}

func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out := helm(t, append([]string{"lint", "--strict", chart}, vs.set...)...)
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
		})
	}
}

// render runs helm template into namespace ns.
func render(t *testing.T, ns string, set []string) string {
	t.Helper()
	return helm(t, append([]string{"template", "rel", chart, "--namespace", ns}, set...)...)
}

// decode splits a YAML stream into objects.
func decode(t *testing.T, name, stream string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// allSources are the manifests (see manifests) and the chart rendered
// with each of valueSets, by name.
func allSources(t *testing.T) map[string]string {
	t.Helper()
	sources := manifests(t)
	for _, vs := range valueSets {
		sources["chart: "+vs.name] = render(t, "default", vs.set)
	}
	return sources
}

// manifests returns the files under kubernetes/ and the Kubernetes
// manifests among the examples, by path.
func manifests(t *testing.T) map[string]string {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) < 3 {
		t.Fatalf("kubernetes/*.yaml: %v", files)
	}
	examples, _ := filepath.Glob("../examples/kubernetes/*.yaml")
	for _, f := range examples {
		if filepath.Base(f) != "remora.yaml" {
			files = append(files, f)
		}
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	return out
}

// warnings collects the API server's warnings (pod security, deprecations).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(code int, _ string, text string) {
	if code == 299 && text != "" {
		w.mu.Lock()
		w.list = append(w.list, text)
		w.mu.Unlock()
	}
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// applier applies objects server-side as a dry run (nothing is stored):
// the API server decodes, defaults, validates and runs admission on each.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	warn   *warnings
}

func newApplier(t *testing.T, srv *kubetest.Server) *applier {
	t.Helper()
	cfg := srv.RESTConfig()
	w := &warnings{}
	cfg.WarningHandler = w
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), warn: w}
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, ns string, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	ri := a.dyn.Resource(m.Resource)
	opts := metav1.ApplyOptions{FieldManager: "remora-deploy-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(ns)
		}
		_, err = ri.Namespace(obj.GetNamespace()).Apply(ctx, obj.GetName(), obj, opts)
	} else {
		_, err = ri.Apply(ctx, obj.GetName(), obj, opts)
	}
	return err
}

// namespace creates a namespace whose pods must meet the "restricted" Pod
// Security Standard: the API server warns about every workload that
// would not (and the test fails on a warning).
func namespace(t *testing.T, srv *kubetest.Server, name string) string {
	t.Helper()
	ns := srv.Namespace(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsAPI := srv.Core(t).Namespaces()
	obj, err := nsAPI.Get(ctx, ns, metav1.GetOptions{})
	if err == nil {
		obj.Labels = map[string]string{"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/enforce": "restricted"}
		_, err = nsAPI.Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// Every file under kubernetes/ and every object the chart renders passes a
// server-side dry-run apply, without a warning, in a namespace that
// enforces the restricted Pod Security Standard.
func TestDryRunApply(t *testing.T) {
	srv := kubetest.Shared(t, kubetest.Config{})
	a := newApplier(t, srv)
	ns := namespace(t, srv, "deploy")
	other := srv.Namespace(t, "other")
	sources := map[string]string{}
	for f, text := range manifests(t) {
		sources[f] = text
	}
	for _, vs := range valueSets {
		set := slices.Clone(vs.set)
		if len(set) > 0 && strings.Contains(set[len(set)-1], "rbac.namespaces={other}") {
			set[len(set)-1] = strings.Replace(set[len(set)-1], "{other}", "{"+other+"}", 1)
		}
		sources["chart: "+vs.name] = render(t, ns, set)
	}
	kinds := map[string]int{}
	for name, text := range sources {
		t.Run(name, func(t *testing.T) {
			objs := decode(t, name, text)
			if len(objs) == 0 {
				t.Fatal("no objects")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, obj := range objs {
				if err := a.apply(ctx, obj, ns, true); err != nil {
					t.Errorf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
				}
				kinds[obj.GetKind()]++
			}
			if w := a.warn.take(); len(w) > 0 {
				t.Errorf("warnings: %q", w)
			}
		})
	}
	// The check itself: a pod spec that breaks the standard (no
	// securityContext: root allowed, privilege escalation, capabilities)
	// is warned about.
	bad := decode(t, "bad", `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
		"spec": {"selector": {"matchLabels": {"app": "bad"}}, "template": {"metadata": {"labels": {"app": "bad"}},
		"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.apply(ctx, bad[0], ns, true); err != nil {
		t.Fatal(err)
	}
	if w := a.warn.take(); len(w) == 0 {
		t.Error("a Deployment without a securityContext drew no warning: the namespace does not check the restricted standard")
	}
	for _, k := range []string{"ConfigMap", "Deployment", "ServiceAccount", "Role", "RoleBinding", "Secret", "Service"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the objects applied: %v", k, kinds)
		}
	}
}

// The pod specs run Remora as a native sidecar: an init container with
// restartPolicy Always, a startupProbe on /readyz, a preStop hook that
// runs remora drain, and a numeric non-root user; the image's user is
// numeric too.
func TestNativeSidecar(t *testing.T) {
	sources := allSources(t)
	pods := 0
	for name, text := range sources {
		for _, obj := range decode(t, name, text) {
			if obj.GetKind() != "Deployment" {
				continue
			}
			inits, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "initContainers")
			if len(inits) == 0 {
				continue // the example's backend
			}
			pods++
			where := name + ": " + obj.GetName()
			c := inits[0].(map[string]any)
			str := func(path ...string) string { s, _, _ := unstructured.NestedString(c, path...); return s }
			i64 := func(path ...string) int64 {
				switch n, _, _ := unstructured.NestedFieldNoCopy(c, path...); n := n.(type) {
				case int64:
					return n
				case float64:
					return int64(n)
				}
				return -1
			}
			cmd, _, _ := unstructured.NestedStringSlice(c, "lifecycle", "preStop", "exec", "command")
			switch {
			case str("name") != "remora":
				t.Errorf("%s: the first init container is %q, not remora", where, str("name"))
			case str("restartPolicy") != "Always":
				t.Errorf("%s: restartPolicy %q; a native sidecar has Always", where, str("restartPolicy"))
			case str("startupProbe", "httpGet", "path") != "/readyz":
				t.Errorf("%s: no startupProbe on /readyz", where)
			case len(cmd) < 2 || cmd[0] != "/usr/local/bin/remora" || cmd[1] != "drain":
				t.Errorf("%s: preStop %q; want /usr/local/bin/remora drain ...", where, cmd)
			case i64("securityContext", "runAsUser") != 65532:
				t.Errorf("%s: runAsUser %d; want 65532", where, i64("securityContext", "runAsUser"))
			}
			if nonRoot, _, _ := unstructured.NestedBool(c, "securityContext", "runAsNonRoot"); !nonRoot {
				t.Errorf("%s: runAsNonRoot is not set", where)
			}
		}
	}
	if pods < 2 {
		t.Fatalf("%d pod specs with Remora checked; want the manifest's and the chart example's", pods)
	}

	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var users, froms []string
	sc := bufio.NewScanner(bytes.NewReader(df))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "USER":
			users = append(users, f[1])
		case len(f) >= 2 && f[0] == "FROM":
			froms = append(froms, f[1])
		case len(f) >= 2 && f[0] == "ARG" && strings.HasPrefix(f[1], "GO_IMAGE="):
			froms = append(froms, strings.TrimPrefix(f[1], "GO_IMAGE="))
		}
	}
	if len(users) != 1 || !regexp.MustCompile(`^\d+(:\d+)?$`).MatchString(users[0]) || strings.HasPrefix(users[0], "0") {
		t.Errorf("Dockerfile USER %q; want one numeric non-root user", users)
	}
	pinned := regexp.MustCompile(`^(scratch|\$\{GO_IMAGE\}|[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?)$`)
	for _, f := range froms {
		if !pinned.MatchString(f) {
			t.Errorf("Dockerfile base image %q is not pinned to a release (NAME:MAJOR.MINOR.PATCH...)", f)
		}
	}
}

// The Remora configs in the manifests and the chart validate as Remora
// itself would check them (remora validate).
func TestConfigsValidate(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sources := allSources(t)
	n := 0
	for name, text := range sources {
		for _, obj := range decode(t, name, text) {
			data, ok, _ := unstructured.NestedString(obj.Object, "data", "remora.yaml")
			if obj.GetKind() != "ConfigMap" || !ok {
				continue
			}
			n++
			data = strings.ReplaceAll(data, "/etc/remora-admin/token", token)
			if _, err := config.Parse([]byte(data), dir); err != nil {
				t.Errorf("%s: ConfigMap %s: %v\n%s", name, obj.GetName(), err, data)
			}
		}
	}
	if n < 2 {
		t.Fatalf("%d Remora configs found; want the manifest's and the chart's", n)
	}
}

// The RBAC that kubernetes/ and the chart grant is what the adapter needs:
// applied for real, the service account may list and watch EndpointSlices,
// and pods only with the pods grant.
func TestRBACGrants(t *testing.T) {
	srv := kubetest.Shared(t, kubetest.Config{})
	a := newApplier(t, srv)
	m := manifests(t)
	tests := []struct {
		name    string
		objects string
		sa      string
		pods    bool
	}{
		{"rbac.yaml", m["kubernetes/rbac.yaml"], "remora", false},
		{"rbac.yaml and rbac-pods.yaml", m["kubernetes/rbac.yaml"] + "\n---\n" + m["kubernetes/rbac-pods.yaml"], "remora", true},
		{"chart defaults", "", "rel-remora", false},
		{"chart with pods", "--set rbac.pods=true", "rel-remora", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := srv.Namespace(t, "rbac")
			text := tc.objects
			if strings.HasPrefix(tc.name, "chart") {
				text = render(t, ns, strings.Fields(tc.objects))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, obj := range decode(t, tc.name, text) {
				switch obj.GetKind() {
				case "ServiceAccount", "Role", "RoleBinding":
					if err := a.apply(ctx, obj, ns, false); err != nil {
						t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
					}
				}
			}
			cfg := srv.RESTConfig()
			cfg.BearerToken = srv.ServiceAccountToken(t, ns, tc.sa)
			dc, err := discoveryv1client.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := corev1client.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// The API server's authorizer learns of a new binding from
			// its informers, a moment after the apply returned.
			if err := allowedSoon(ctx, func() error {
				_, err := dc.EndpointSlices(ns).List(ctx, metav1.ListOptions{})
				return err
			}); err != nil {
				t.Fatalf("listing endpointslices as %s: %v", tc.sa, err)
			}
			w, err := dc.EndpointSlices(ns).Watch(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("watching endpointslices as %s: %v", tc.sa, err)
			}
			w.Stop()
			if tc.pods {
				err = allowedSoon(ctx, func() error {
					_, err := cc.Pods(ns).List(ctx, metav1.ListOptions{})
					return err
				})
			} else {
				_, err = cc.Pods(ns).List(ctx, metav1.ListOptions{})
			}
			if tc.pods && err != nil {
				t.Fatalf("listing pods as %s: %v", tc.sa, err)
			}
			if !tc.pods && !apierrors.IsForbidden(err) {
				t.Fatalf("listing pods as %s without the pods grant: %v; want forbidden", tc.sa, err)
			}
		})
	}
}

// allowedSoon calls call until it is not refused as forbidden, or ctx
// ends: an RBAC grant just applied takes effect once the API server's
// authorizer has seen it.
func allowedSoon(ctx context.Context, call func() error) error {
	for {
		err := call()
		if !apierrors.IsForbidden(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Every pod that gives Remora a data volume has its config keep data_dir
// there: the last good node sets then survive a restart of the sidecar,
// which the startup probe's notes and the README promise.
func TestDataDirIsOnTheDataVolume(t *testing.T) {
	sources := allSources(t)
	checked := 0
	for name, text := range sources {
		objs := decode(t, name, text)
		var dataDirs []string
		for _, obj := range objs {
			data, ok, _ := unstructured.NestedString(obj.Object, "data", "remora.yaml")
			if obj.GetKind() != "ConfigMap" || !ok {
				continue
			}
			var cfg struct {
				DataDir string `json:"data_dir"`
			}
			if err := utilyaml.Unmarshal([]byte(data), &cfg); err != nil {
				t.Fatalf("%s: ConfigMap %s: %v", name, obj.GetName(), err)
			}
			dataDirs = append(dataDirs, cfg.DataDir)
		}
		for _, obj := range objs {
			inits, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "initContainers")
			if obj.GetKind() != "Deployment" || len(inits) == 0 {
				continue
			}
			mounts, _, _ := unstructured.NestedSlice(inits[0].(map[string]any), "volumeMounts")
			for _, m := range mounts {
				m := m.(map[string]any)
				if m["name"] != "remora-data" {
					continue
				}
				checked++
				if !slices.Contains(dataDirs, m["mountPath"].(string)) {
					t.Errorf("%s: %s mounts remora-data at %s, but its config's data_dir is %q", name, obj.GetName(), m["mountPath"], dataDirs)
				}
			}
		}
	}
	if checked < 2 {
		t.Fatalf("%d pods with a data volume checked; want the manifest's and the chart example's", checked)
	}
}

// The chart example's application stops on SIGTERM though it is its
// container's PID 1 (which ignores a signal it does not handle): a pod
// deleted would otherwise spend its whole grace period on it, and leave
// Remora's drain only what the kubelet grants past it.
func TestExampleApplicationStopsOnSIGTERM(t *testing.T) {
	if err := exec.Command("unshare", "-rfp", "true").Run(); err != nil {
		t.Skipf("no PID namespace to run the command as PID 1 in (unshare -rfp: %v)", err)
	}
	var command []string
	for _, obj := range decode(t, "example", render(t, "default", []string{"--set", "example.enabled=true"})) {
		containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			c := c.(map[string]any)
			if c["name"] == "app" {
				command, _, _ = unstructured.NestedStringSlice(c, "command")
			}
		}
	}
	if len(command) == 0 {
		t.Fatal("the example has no app container with a command")
	}
	cmd := exec.Command("unshare", append([]string{"-rfp", "--kill-child"}, command...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var pid1 int // the command's PID outside its namespace: unshare's child
	for deadline := time.Now().Add(5 * time.Second); pid1 == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		fmt.Sscan(string(children), &pid1)
	}
	time.Sleep(300 * time.Millisecond) // into its loop
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		t.Fatalf("%q still runs 3 s after SIGTERM", command)
	}
}
