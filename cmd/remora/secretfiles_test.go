package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/pkg/config"
)

// A registry's password_file rewritten (a rotated Secret) is read again
// on SIGHUP, although the config file itself is unchanged: the registry
// is reopened with the new password.
func TestProcessRotatedPasswordFileReadOnReload(t *testing.T) {
	srv := etcdtest.Start(t)
	srv.EnableAuth("rootpw", etcdUser, etcdPassword, "/services/")
	b1, static := startBackend(t, "b1"), startBackend(t, "static")
	srv.Put("/services/user-service/b1", b1.value(""))
	app := startLocalApp(t, "app")

	adminAddr, outAddr := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "etcd-password")
	if err := os.WriteFile(pwFile, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := authEtcdConfig(adminAddr, outAddr, static.srv.Listener.Addr().String(), srv.Endpoint(), "", app.port)
	yml = strings.Replace(yml, `password: ""`, "password_file: etcd-password", 1)
	path := filepath.Join(dir, "remora.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := launchProcessAt(t, adminAddr, path)
	p.waiting(t, outAddr, fmt.Sprintf("authenticating as user %q", etcdUser), "not-the-password")

	// The Secret is updated as the kubelet does it: a new file renamed over.
	if err := os.WriteFile(pwFile+".new", []byte(etcdPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pwFile+".new", pwFile); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	took := p.synced(t, outAddr, 5*time.Second)
	t.Logf("user-service synced %v after SIGHUP with the rotated password file", took)
}

// namedFiles finds the secrets and certificates of every registry type
// that reads any, and not a static registry's file (which it polls).
func TestNamedFilesOfRegistries(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"pw", "tok", "sk", "kubeconfig", "instances.yaml"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, "instances.yaml"), []byte("services: {}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	cfg, err := config.Parse([]byte(`
registries:
  - {name: e, type: etcd, etcd: {endpoints: ["127.0.0.1:2379"], username: u, password_file: pw}}
  - {name: c, type: consul, consul: {address: "127.0.0.1:8500", token_file: tok}}
  - {name: n, type: nacos, nacos: {servers: ["127.0.0.1:8848"], username: u, password_file: pw, access_key: a, secret_key_file: sk}}
  - {name: k, type: kubernetes, kubernetes: {kubeconfig: kubeconfig}}
  - {name: s, type: static, static: {file: instances.yaml}}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"e": "[pw]", "c": "[tok]", "n": "[pw sk]", "k": "[kubeconfig]", "s": "[]"}
	for _, rc := range cfg.Registries {
		if got := fmt.Sprint(namedFiles(rc.Options)); got != want[rc.Name] {
			t.Errorf("registry %s: files %s; want %s", rc.Name, got, want[rc.Name])
		}
	}
	rc := &cfg.Registries[0]
	before := registryFiles(cfg, rc)
	os.WriteFile(filepath.Join(dir, "pw"), []byte("y\n"), 0o600)
	if registryFiles(cfg, rc) == before {
		t.Error("the digest did not change with the password file")
	}
}
