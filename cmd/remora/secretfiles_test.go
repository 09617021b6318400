package main

import (
	"fmt"
	"net/http"
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
	// Registered under another service, so that user-service has b1 only.
	yml = strings.Replace(yml, "  service: user-service\n", "  service: app-service\n", 1)
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

// adminStatus is the status of GET path on the admin API with token.
func adminStatus(t *testing.T, adminAddr, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The admin token_file replaced as a Kubernetes Secret volume replaces it
// (its ..data symlink swapped), the config file unchanged and no SIGHUP
// (the image has no shell to send one): the new token applies within the
// poll, and the old one no longer does.
func TestProcessRotatedAdminTokenFileApplies(t *testing.T) {
	b := startBackend(t, "b1")
	adminAddr, out := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.Mkdir(secret, 0o755)
	swap := func(name, token string) {
		t.Helper()
		os.Mkdir(filepath.Join(secret, name), 0o755)
		if err := os.WriteFile(filepath.Join(secret, name, "token"), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Symlink(name, filepath.Join(secret, "..data_tmp"))
		if err := os.Rename(filepath.Join(secret, "..data_tmp"), filepath.Join(secret, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap("..v1", "old-token")
	os.Symlink(filepath.Join("..data", "token"), filepath.Join(secret, "token"))
	yml := strings.Replace(fileTestConfig(adminAddr, out, b.srv.Listener.Addr().String(), false),
		fmt.Sprintf("admin: {address: %q}", adminAddr), fmt.Sprintf("admin: {address: %q, token_file: secret/token}", adminAddr), 1)
	path := filepath.Join(dir, "remora.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	startProcessAt(t, adminAddr, path)
	if code := adminStatus(t, adminAddr, "/upstreams", "old-token"); code != 200 {
		t.Fatalf("the first token: %d", code)
	}
	swap("..v2", "new-token")
	os.RemoveAll(filepath.Join(secret, "..v1"))
	eventually(t, 4*time.Second, "the rotated token accepted", func() bool { return adminStatus(t, adminAddr, "/upstreams", "new-token") == 200 })
	if code := adminStatus(t, adminAddr, "/upstreams", "old-token"); code != 401 {
		t.Fatalf("the old token after the rotation: %d; want 401", code)
	}
	keepServing(t, out, 200*time.Millisecond, "after the rotation")
}

// A consul registry without a token of its own reads the file that
// $CONSUL_HTTP_TOKEN_FILE names: it is watched as a named file, so that a
// token written or rotated there reopens the registry.
func TestConsulTokenFileFromTheEnvironmentIsWatched(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("a\n"), 0o600)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", tok)
	cfg, err := config.Parse([]byte(`
registries:
  - {name: env, type: consul, consul: {address: "127.0.0.1:8500"}}
  - {name: own, type: consul, consul: {address: "127.0.0.1:8500", token: t}}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(namedFiles(cfg.Registries[0].Options)); got != "["+tok+"]" {
		t.Fatalf("files of a consul registry without a token: %s; want [%s]", got, tok)
	}
	if got := namedFiles(cfg.Registries[1].Options); len(got) != 0 {
		t.Fatalf("files of a consul registry with its own token: %v; want none", got)
	}
	before := registryFiles(cfg, &cfg.Registries[0])
	os.WriteFile(tok, []byte("b\n"), 0o600)
	if registryFiles(cfg, &cfg.Registries[0]) == before {
		t.Error("the digest did not change with the token file")
	}
}
