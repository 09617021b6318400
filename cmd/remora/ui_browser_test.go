package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/internal/testproc"
	"github.com/remora-mesh/remora/pkg/admin"
)

// chromiumPath finds Chromium: $REMORA_CHROMIUM, else what
// scripts/chromium.sh prints (it installs Debian's chromium package when
// missing). The test fails, with the reason, when there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("REMORA_CHROMIUM"); p != "" {
		return p
	}
	script, err := testproc.FindScript("scripts/chromium.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	start := time.Now()
	out, err := exec.CommandContext(ctx, "bash", script).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr.Write(ee.Stderr)
	}
	if err != nil {
		t.Fatalf("no Chromium for the browser test: %s failed (%v):\n%s\n(set $REMORA_CHROMIUM to a chromium binary to use that instead)",
			script, err, testproc.Tail(stderr.String(), 30))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Logf("scripts/chromium.sh took %v", d.Round(100*time.Millisecond))
	}
	return strings.TrimSpace(string(out))
}

// switchable is a loopback backend that answers 200, or status while
// failing is set.
type switchable struct {
	srv     *httptest.Server
	failing atomic.Bool
	status  int
}

func startSwitchable(t *testing.T, name string, status int) *switchable {
	t.Helper()
	b := &switchable{status: status}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if b.failing.Load() {
			w.WriteHeader(b.status)
			return
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *switchable) addr() string { return b.srv.Listener.Addr().String() }

// The admin UI in a real headless Chromium against a running Remora with
// its admin token: the page asks for the token, renders every upstream
// and its nodes and the registration of the local application, shows a node ejected by passive health within 2 s of the
// failure that ejected it, lifts an automatic canary rollback with its
// Resume button, and drains and undrains.
func TestAdminUIInBrowser(t *testing.T) {
	bin := chromiumPath(t)

	u1, u2 := startSwitchable(t, "u1", 503), startSwitchable(t, "u2", 503)
	stable, canaryNode := startSwitchable(t, "s1", 500), startSwitchable(t, "c1", 500)
	etcd := etcdtest.Start(t)
	local := startLocalApp(t, "app")
	const token = "ui-t0ken"
	a := startRemora(t, fmt.Sprintf(`
admin: {address: 127.0.0.1:0, token: %s}
listeners: [{name: outbound, address: 127.0.0.1:0}]
registries:
  - name: main
    type: static
    static:
      services:
        users: [{id: u1, address: %q}, {id: u2, address: %q}]
        shop: [{id: s1, address: %q}, {id: c1, address: %q, metadata: {canary: "true", canary-weight: "50"}}]
  - name: etcd
    type: etcd
    etcd: {endpoints: [%q], prefix: /services}
upstreams:
  - name: users
    registry: main
    health: {passive: {base_ejection_time: 60s}}
  - name: shop
    registry: main
    canary: {rollback: {window: 200ms, min_requests: 5}}
register:
  registry: etcd
  service: app
  id: app-1
  address: 127.0.0.1
  port: %d
  health: {path: /health, interval: 100ms, healthy_threshold: 1}
`, token, u1.addr(), u2.addr(), stable.addr(), canaryNode.addr(), etcd.Endpoint(), local.port))
	adminURL := "http://" + a.addr("admin")
	client := &http.Client{Timeout: 5 * time.Second}
	send := func(host string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	status := func(name string) admin.UpstreamStatus {
		u := a.Table().Lookup(name)
		if u == nil {
			t.Fatalf("no upstream %s", name)
		}
		return admin.Status(u)
	}

	var chromeOut syncBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.CombinedOutput(&chromeOut),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	started := time.Now()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", bin, err, testproc.Tail(chromeOut.String(), 30))
	}
	t.Logf("chromium started in %v", time.Since(started).Round(time.Millisecond))
	defer func() {
		if t.Failed() {
			hctx, hcancel := context.WithTimeout(bctx, 5*time.Second)
			defer hcancel()
			html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Logf("the page when the test failed:\n%s", html)
		}
		if p := os.Getenv("REMORA_UI_SCREENSHOT"); p != "" {
			sctx, scancel := context.WithTimeout(bctx, 5*time.Second)
			defer scancel()
			if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
				_ = os.WriteFile(p, png, 0o644)
			}
		}
	}()

	// waitFor polls the page until the JavaScript expression js is true.
	waitFor := func(what, js string, within time.Duration) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(bctx, within)
		defer wcancel()
		ok, err := chromedp.Run(wctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(within)))
		if err != nil || !ok {
			t.Fatalf("the page did not show %s within %v: %v", what, within.Round(time.Millisecond), err)
		}
	}
	exists := func(selector string) string {
		return fmt.Sprintf("document.querySelector(%q) !== null", selector)
	}
	click := func(selector string) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(bctx, 10*time.Second)
		defer ccancel()
		if err := chromedp.Do(cctx, chromedp.Click(chromedp.CSS(selector), chromedp.NodeEnabled)); err != nil {
			t.Fatalf("clicking %s: %v", selector, err)
		}
	}

	// The token, typed once.
	nctx, ncancel := context.WithTimeout(bctx, 20*time.Second)
	defer ncancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(adminURL+"/")); err != nil {
		t.Fatalf("opening %s/: %v\n%s", adminURL, err, testproc.Tail(chromeOut.String(), 30))
	}
	waitFor("the token form", `!document.getElementById("token-form").hidden`, 5*time.Second)
	if err := chromedp.Do(nctx, chromedp.SendKeys(chromedp.CSS("#token"), token)); err != nil {
		t.Fatal(err)
	}
	click(`#token-form button[type="submit"]`)

	// Every upstream and node.
	for _, sel := range []string{
		`article[data-upstream="users"] tr[data-node="u1"][data-state="available"]`,
		`article[data-upstream="users"] tr[data-node="u2"][data-state="available"]`,
		`article[data-upstream="shop"] tr[data-node="s1"]`,
		`article[data-upstream="shop"] tr[data-node="c1"]`,
		`article[data-upstream="shop"] section.canary[data-rolled-back="false"]`,
	} {
		waitFor(sel, exists(sel), 5*time.Second)
	}
	waitFor("the form hidden", `document.getElementById("token-form").hidden`, time.Second)
	waitFor("the registration held by etcd", `document.querySelector('#registration-body [data-up="true"]') !== null && document.getElementById("registration-body").textContent.includes("app-1")`, 5*time.Second)
	waitFor("readiness", `document.getElementById("readiness").dataset.state === "ready"`, 5*time.Second)

	// u2 fails: passive health ejects it after 5 gateway failures in a
	// row (the retries go to u1, so every request succeeds).
	u2.failing.Store(true)
	var ejectedAt time.Time
	for i := 0; i < 200 && ejectedAt.IsZero(); i++ {
		send("users")
		for _, n := range status("users").Nodes {
			if n.ID == "u2" && n.State == "ejected" {
				ejectedAt = time.Now()
			}
		}
	}
	if ejectedAt.IsZero() {
		t.Fatalf("u2 was not ejected after 200 requests: %+v", status("users").Nodes)
	}
	waitFor("u2 ejected", exists(`article[data-upstream="users"] tr[data-node="u2"][data-state="ejected"]`), time.Until(ejectedAt.Add(2*time.Second)))
	t.Logf("the page showed u2 ejected %v after it was", time.Since(ejectedAt).Round(time.Millisecond))
	waitFor("the eject reason", fmt.Sprintf(`document.querySelector(%q).textContent.includes("consecutive_gateway_failure")`,
		`article[data-upstream="users"] tr[data-node="u2"]`), time.Second)

	// The canary c1 answers 500: the rollback trips, and the button lifts
	// it.
	canaryNode.failing.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for {
		send("shop")
		if c := status("shop").Canary; c != nil && c.RolledBack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canary was not rolled back: %+v", status("shop").Canary)
		}
		time.Sleep(2 * time.Millisecond)
	}
	rolledBack := `article[data-upstream="shop"] section.canary[data-rolled-back="true"]`
	waitFor("the rollback", exists(rolledBack), 2*time.Second)
	waitFor("the rollback reason", fmt.Sprintf(`document.querySelector(%q).textContent.includes(%q)`, rolledBack, status("shop").Canary.RollbackReason), time.Second)
	click(`article[data-upstream="shop"] button[data-action="resume"]`)
	waitFor("the rollback lifted", exists(`article[data-upstream="shop"] section.canary[data-rolled-back="false"]`), 3*time.Second)
	waitFor("what the resume did", `document.getElementById("action-result").textContent.includes("resumed")`, time.Second)
	if c := status("shop").Canary; c.RolledBack {
		t.Fatalf("the API still reports the rollback: %+v", c)
	}

	// The raw answers, fetched with the token.
	click(`a[href="/upstreams?format=text"]`)
	waitFor("/upstreams as text", `!document.getElementById("raw").hidden && /^UPSTREAM +NODE/.test(document.getElementById("raw-body").textContent)`, 3*time.Second)
	click(`a[href="/config"]`)
	waitFor("/config", `document.getElementById("raw-body").textContent.includes("connect_timeout: 2s") && document.getElementById("raw-body").textContent.includes("token: '[redacted]'")`, 3*time.Second)
	click("#raw-close")

	// Drain and undrain.
	click("#drain")
	waitFor("draining", `document.getElementById("readiness").dataset.state === "draining"`, 3*time.Second)
	if !a.Draining() {
		t.Fatal("the Drain button did not drain")
	}
	click("#undrain")
	waitFor("ready again", `document.getElementById("readiness").dataset.state === "ready"`, 3*time.Second)
	if a.Draining() {
		t.Fatal("the Undrain button did not undrain")
	}
}
