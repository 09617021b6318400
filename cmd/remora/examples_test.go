package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/config"
)

// Every registry type remora ships (an adapter package under discovery/)
// has an example under examples/, each
// example has a README and a config that validates (TestExamplesValidate
// checks the configs through remora validate).
func TestExamplesCoverEveryRegistryType(t *testing.T) {
	fakeKubeHome(t)
	dirs, _ := filepath.Glob("../../examples/*")
	used := map[string][]string{}
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		name := filepath.Base(dir)
		if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
			t.Errorf("examples/%s has no README.md", name)
		}
		cfg, err := config.Load(filepath.Join(dir, "remora.yaml"))
		if err != nil {
			t.Errorf("examples/%s: %v", name, err)
			continue
		}
		for _, r := range cfg.Registries {
			used[r.Type] = append(used[r.Type], name)
		}
	}
	for _, typ := range discovery.Types() {
		f, _ := discovery.Lookup(typ)
		if pkg := reflect.TypeOf(f).PkgPath(); !strings.HasPrefix(pkg, "github.com/remora-mesh/remora/discovery/") {
			continue // a test's own registry type
		}
		if len(used[typ]) == 0 {
			have := make([]string, 0, len(used))
			for k := range used {
				have = append(have, k)
			}
			slices.Sort(have)
			t.Errorf("no example under examples/ uses a registry of type %q (they use %v)", typ, have)
		}
	}
}

// fakeKubeHome points $HOME at a directory holding a minimal
// ~/.kube/config: examples/kubernetes names that file, and validation
// reads it.
func fakeKubeHome(t *testing.T) {
	t.Helper()
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	const kc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
}
