package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/internal/testproc"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/upstream"
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
	opts := chromeOptions(t, bin, &chromeOut)
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

// uiBrowser is a headless Chromium for the admin UI's tests. It records
// what the page should never produce: uncaught exceptions (unhandled
// promise rejections included), console errors and warnings, and the
// browser's own error log (failed loads, content security policy
// violations).
type uiBrowser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// chromeOptions are the options every browser test starts chromium bin
// with, its output going to out.
func chromeOptions(t *testing.T, bin string, out *syncBuffer) []chromedp.ExecAllocatorOption {
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.CombinedOutput(out),
	)
}

func newUIBrowser(t *testing.T) *uiBrowser {
	t.Helper()
	bin := chromiumPath(t)
	var chromeOut syncBuffer
	opts := chromeOptions(t, bin, &chromeOut)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	b := &uiBrowser{t: t, ctx: bctx}
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", bin, err, testproc.Tail(chromeOut.String(), 30))
	}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleException, chromedp.ConsoleError, chromedp.ConsoleWarning, "assert":
				b.problem(fmt.Sprintf("%s (%s %s)", m, m.Source, m.URL))
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			hctx, hcancel := context.WithTimeout(bctx, 5*time.Second)
			defer hcancel()
			if html, err := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("main"))); err == nil {
				t.Logf("the page when the test failed:\n%.4000s", html)
			}
		}
	})
	return b
}

// forget drops the problems recorded so far (after failures a test
// caused on purpose).
func (b *uiBrowser) forget() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = nil
}

// noExceptions fails the test if the page threw or left a promise
// rejection unhandled.
func (b *uiBrowser) noExceptions() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		if strings.HasPrefix(p, string(chromedp.ConsoleException)) {
			b.t.Errorf("the page threw: %s", p)
		}
	}
}

func (b *uiBrowser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, s)
}

// noProblems fails the test if the page threw, logged an error or a
// warning, or a load failed.
func (b *uiBrowser) noProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Errorf("the page reported %d problems:\n%s", len(b.problems), strings.Join(b.problems, "\n"))
	}
	b.problems = nil
}

func (b *uiBrowser) open(url string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("opening %s: %v", url, err)
	}
}

// waitFor polls the page until the JavaScript expression js is true.
func (b *uiBrowser) waitFor(what, js string, within time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+time.Second)
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil || !ok {
		b.t.Fatalf("the page did not show %s within %v: %v", what, within, err)
	}
}

// eval evaluates js in the page.
func eval[T any](b *uiBrowser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *uiBrowser) click(selector string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(selector), chromedp.NodeEnabled)); err != nil {
		b.t.Fatalf("clicking %s: %v", selector, err)
	}
}

// uiSource is an admin.Source over a table a test swaps, as a reload does.
type uiSource struct {
	table      atomic.Pointer[upstream.Table]
	draining   atomic.Bool
	undrainErr atomic.Pointer[error]
}

func (s *uiSource) Table() *upstream.Table { return s.table.Load() }
func (s *uiSource) Draining() bool         { return s.draining.Load() }
func (s *uiSource) Drain()                 { s.draining.Store(true) }
func (s *uiSource) Undrain() error {
	if err := s.undrainErr.Load(); err != nil {
		return *err
	}
	s.draining.Store(false)
	return nil
}

// uiUpstreams starts one upstream per service of reg, named as the
// service, and waits until each has its node set.
func uiUpstreams(t *testing.T, reg *discoverytest.Registry, services ...string) *upstream.Table {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var ups []*upstream.Upstream
	done := make(chan struct{}, len(services))
	for _, svc := range services {
		u := upstream.New(upstream.Config{Name: svc, Service: svc, InitialSyncTimeout: time.Hour, Canary: canary.DefaultRule()})
		w, err := reg.Watch(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		go func() { u.Run(ctx, w); done <- struct{}{} }()
		ups = append(ups, u)
	}
	t.Cleanup(func() {
		cancel()
		for range services {
			<-done
		}
	})
	table := upstream.NewTable(ups...)
	for deadline := time.Now().Add(10 * time.Second); !table.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the upstreams did not sync")
		}
	}
	return table
}

// serveUI serves the admin API over src on 127.0.0.1, as Remora does.
func serveUI(t *testing.T, src admin.Source, opts admin.Options) string {
	t.Helper()
	srv := httptest.NewServer(admin.Handler(src, opts))
	t.Cleanup(srv.Close)
	return srv.URL
}

// 200 upstreams of 50 nodes each, every counter growing between polls:
// the page shows all 10,000 nodes, updates them in place (a poll adds
// no elements for nodes it already shows), does not freeze and answers a
// click on Drain at once. It used to rebuild every upstream whose rates changed, every
// second: seconds of script per poll, and a page that froze.
func TestUIManyUpstreamsAndNodes(t *testing.T) {
	reg := discoverytest.NewRegistry()
	var names []string
	for i := range 200 {
		name := fmt.Sprintf("svc-%03d", i)
		names = append(names, name)
		var set []discovery.Instance
		for j := range 50 {
			set = append(set, discoverytest.Instance(fmt.Sprintf("%s-node-%02d", name, j), 10000+j, map[string]string{"zone": "a", "version": "v1"}))
		}
		reg.Set(name, set...)
	}
	src := &uiSource{}
	src.table.Store(uiUpstreams(t, reg, names...))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, u := range src.Table().All() {
				for _, n := range u.Snapshot().Nodes {
					n.Stats.Requests.Add(7)
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	url := serveUI(t, src, admin.Options{})
	b := newUIBrowser(t)
	b.open(url + "/")
	b.waitFor("every node", `document.querySelectorAll("#upstreams tr[data-node]").length === 10000`, 30*time.Second)
	b.waitFor("rates", `document.querySelector('article[data-upstream="svc-199"] tr[data-node="svc-199-node-49"] td:nth-child(8)').textContent !== "–"`, 30*time.Second)
	// What the polls do to the page: elements added (a poll that rebuilds
	// adds thousands), and tasks that held the main thread.
	eval[bool](b, `window.__long = []; window.__added = 0;
		new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration) }).observe({type: "longtask"});
		new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes) if (n.nodeType === 1) window.__added += 1 + n.querySelectorAll("*").length })
			.observe(document.getElementById("upstreams"), {childList: true, subtree: true}); true`)
	time.Sleep(4 * time.Second)
	// Long tasks are logged, not judged: their length is the machine's
	// as much as the page's. The count of elements added is the page's.
	t.Logf("tasks over 50 ms in 4 s of polls: %v", eval[[]float64](b, `window.__long`))
	if added := eval[int](b, `window.__added`); added > 1000 {
		t.Errorf("4 s of polls added %d elements to the page: they rebuild it instead of updating it", added)
	}
	start := time.Now()
	b.click("#drain")
	b.waitFor("draining", `document.getElementById("readiness").dataset.state === "draining"`, 30*time.Second) // generous: a poll of 10,000 nodes under -race on a busy machine takes seconds
	t.Logf("the page showed the drain %v after the click", time.Since(start).Round(time.Millisecond))
	b.noProblems()
}

// hostile are strings a registry may hold: markup, script, quotes,
// unicode (emoji, right-to-left override, zero width, combining), and
// very long values.
var hostile = []string{
	`<img src=x onerror="window.__pwned=1">`,
	`"><script>window.__pwned=2</script>`,
	`</td></tr></table><b id=injected>bold</b>`,
	`<svg onload="window.__pwned=3"></svg>`,
	`javascript:window.__pwned=4`,
	"ノード-😀-\u202eevil\u200b-e\u0301",
	`{{constructor.constructor('window.__pwned=5')()}}`,
	strings.Repeat("long-", 20000),
}

// Whatever a registry holds — service names, node ids, addresses,
// metadata keys and values — is shown as text: nothing runs, no element
// comes from it, the page keeps its width, and every value, metadata
// included, is on the page as it was registered.
func TestUIHostileStrings(t *testing.T) {
	reg := discoverytest.NewRegistry()
	var set []discovery.Instance
	for i, s := range hostile {
		set = append(set, discovery.Instance{
			ID: s, Address: s, Port: 8000 + i, Weight: 1, Healthy: true,
			Metadata: map[string]string{s: s, "version": s, "canary": "true", "canary-weight": "10"},
		})
	}
	name := hostile[0]
	reg.Set(name, set...)
	src := &uiSource{}
	src.table.Store(uiUpstreams(t, reg, name))
	url := serveUI(t, src, admin.Options{})
	b := newUIBrowser(t)
	b.open(url + "/")
	b.waitFor("every node", fmt.Sprintf(`document.querySelectorAll("#upstreams tr[data-node]").length === %d`, len(hostile)), 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // a few polls more
	if v := eval[string](b, `String(window.__pwned)`); v != "undefined" {
		t.Errorf("script from the registry ran: window.__pwned = %s", v)
	}
	if n := eval[int](b, `document.querySelectorAll("main img, main script, main svg, main b, #injected").length`); n != 0 {
		t.Errorf("%d elements came from the registry's strings", n)
	}
	for _, s := range hostile {
		js, _ := json.Marshal(s)
		if !eval[bool](b, fmt.Sprintf(`[...document.querySelectorAll("tr[data-node]")].some((tr) => tr.dataset.node === %s && tr.querySelector("th").textContent === %s)`, js, js)) {
			t.Errorf("no row shows the node %.60q as text", s)
		}
		if !eval[bool](b, fmt.Sprintf(`[...document.querySelectorAll("tr[data-node]")].some((tr) => tr.textContent.includes(%s + "=" + %s))`, js, js)) {
			t.Errorf("the metadata %.60q=%.60q is not shown", s, s)
		}
		if !eval[bool](b, fmt.Sprintf(`document.getElementById("upstreams").textContent.includes(%s + ":")`, js)) {
			t.Errorf("the address %.60q is not shown", s)
		}
	}
	if !eval[bool](b, fmt.Sprintf(`document.querySelector("article h3").textContent === %s`, mustJSON(name))) {
		t.Errorf("the upstream's name is not shown as text")
	}
	if w := eval[[]int](b, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("the page is %d px wide in a %d px window: a long value widened it", w[0], w[1])
	}
	b.noProblems()
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// With admin.token set the page asks for the token without knocking on
// the API first, takes the token into a header only (never a URL), and
// runs without a single console error, failed load or exception through
// an upstream that is not ready, a Remora without register:, a drain and
// an undrain. A token that changes (a reload) brings the prompt back with
// a message, and takes the data off the page.
func TestUIWithTokenHasACleanConsole(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("users", discoverytest.Instance("u1", 1, nil))
	users := uiUpstreams(t, reg, "users")
	waiting := upstream.New(upstream.Config{Name: "waiting", InitialSyncTimeout: time.Hour})
	src := &uiSource{}
	src.table.Store(upstream.NewTable(append(users.All(), waiting)...))
	var token atomic.Value
	token.Store("t0ken")
	var urls syncBuffer
	h := admin.Handler(src, admin.Options{Token: func() string { return token.Load().(string) }})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(&urls, r.URL.String())
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	b := newUIBrowser(t)
	b.open(srv.URL + "/")
	b.waitFor("the token form", `!document.getElementById("token-form").hidden`, 5*time.Second)
	b.waitFor("the token field focused", `document.activeElement === document.getElementById("token")`, time.Second)
	b.waitFor("why the form is there", `document.getElementById("status").textContent.includes("token")`, time.Second)
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), "t0ken\r")); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the upstreams", `document.querySelector('article[data-upstream="users"] tr[data-node="u1"]') !== null && document.getElementById("token-form").hidden`, 5*time.Second)
	b.waitFor("not ready", `document.getElementById("readiness").dataset.state === "not_ready" && document.getElementById("readiness").textContent.includes("waiting")`, 3*time.Second)
	b.waitFor("no registration", `document.getElementById("registration-body").textContent.includes("Nothing is registered")`, 3*time.Second)
	b.click("#drain")
	b.waitFor("draining", `document.getElementById("readiness").dataset.state === "draining"`, 3*time.Second)
	time.Sleep(1500 * time.Millisecond)
	b.click("#undrain")
	b.waitFor("undrained", `document.getElementById("readiness").dataset.state === "not_ready"`, 3*time.Second)
	b.noProblems()
	if strings.Contains(urls.String(), "t0ken") {
		t.Errorf("the token went into a URL:\n%s", urls.String())
	}

	token.Store("rotated")
	b.waitFor("the prompt again", `!document.getElementById("token-form").hidden && document.getElementById("status").textContent.includes("refused")`, 5*time.Second)
	b.waitFor("the data gone", `document.querySelector("tr[data-node]") === null`, time.Second)
	b.forget() // the one 401 that told the page
	time.Sleep(2 * time.Second)
	b.noProblems() // and no knocking every second while waiting
}

// The API's errors are shown as what they say, an API that cannot be
// reached as such, and the page comes back by itself; an upstream that
// disappears between polls (a reload) disappears from the page, a new
// one appears, and nothing throws.
func TestUIErrorsAndReloads(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("users", discoverytest.Instance("u1", 1, nil))
	reg.Set("orders", discoverytest.Instance("o1", 2, nil))
	reg.Set("shop", discoverytest.Instance("s1", 3, nil))
	all := uiUpstreams(t, reg, "users", "orders", "shop")
	src := &uiSource{}
	src.table.Store(upstream.NewTable(all.Lookup("users"), all.Lookup("orders")))
	var mode atomic.Value
	mode.Store("")
	h := admin.Handler(src, admin.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && !strings.HasPrefix(r.URL.Path, "/ui/") && r.Method == http.MethodGet {
			switch mode.Load().(string) {
			case "500":
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(500)
				fmt.Fprint(w, `{"error": "the table is being rebuilt"}`)
				return
			case "502":
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				fmt.Fprint(w, `<html><body><h1>502 Bad Gateway</h1></body></html>`)
				return
			case "down":
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
					}
				}
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	b := newUIBrowser(t)
	b.open(srv.URL + "/")
	b.waitFor("two upstreams", `document.querySelectorAll("article[data-upstream]").length === 2`, 5*time.Second)

	mode.Store("500")
	b.waitFor("the API's error", `document.getElementById("status").textContent.includes("HTTP 500: the table is being rebuilt")`, 5*time.Second)
	mode.Store("502")
	b.waitFor("a gateway's error", `document.getElementById("status").textContent.includes("HTTP 502")`, 5*time.Second)
	mode.Store("down")
	b.waitFor("the API unreachable", `document.getElementById("status").textContent.includes("Cannot reach the admin API")`, 5*time.Second)
	b.waitFor("the last answer kept", `document.querySelectorAll("article[data-upstream]").length === 2`, time.Second)
	mode.Store("")
	b.waitFor("back", `document.getElementById("status").textContent === "" && document.body.dataset.api === "ok"`, 5*time.Second)

	// A reload: orders goes, shop comes.
	src.table.Store(upstream.NewTable(all.Lookup("users"), all.Lookup("shop")))
	b.waitFor("the reloaded upstreams", `document.querySelector('article[data-upstream="orders"]') === null && document.querySelector('article[data-upstream="shop"] tr[data-node="s1"]') !== null`, 5*time.Second)
	src.table.Store(upstream.NewTable())
	b.waitFor("no upstreams", `document.getElementById("upstreams").textContent.includes("No upstreams")`, 5*time.Second)
	src.table.Store(upstream.NewTable(all.Lookup("users")))
	b.waitFor("users again", `document.querySelector('article[data-upstream="users"] tr[data-node="u1"]') !== null && !document.getElementById("upstreams").textContent.includes("No upstreams")`, 5*time.Second)

	// An action the API refuses says why.
	src.draining.Store(true)
	err := errors.New("shutting down: no undrain reverses it")
	src.undrainErr.Store(&err)
	b.waitFor("draining", `document.getElementById("readiness").dataset.state === "draining"`, 5*time.Second)
	b.click("#undrain")
	b.waitFor("why the undrain failed", `document.getElementById("action-result").textContent.includes("HTTP 409: shutting down: no undrain reverses it")`, 3*time.Second)
	b.noExceptions()
}

// A page on another origin cannot drain Remora through the operator's
// browser, neither with a form POST nor with a no-cors fetch, on the
// default token-less admin address.
func TestUICrossSiteDrainRefused(t *testing.T) {
	src := &uiSource{}
	src.table.Store(upstream.NewTable())
	adminURL := serveUI(t, src, admin.Options{})
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form id=f method=POST action="%[1]s/drain"><input name=x value=1></form>
<script>
fetch("%[1]s/drain", {method: "POST", mode: "no-cors"}).catch(() => {}).finally(() => {
  fetch("%[1]s/undrain", {method: "POST", mode: "no-cors", body: "x"}).catch(() => {});
  document.title = "fetched";
  document.getElementById("f").submit();
});
</script>`, adminURL)
	}))
	t.Cleanup(evil.Close)
	b := newUIBrowser(t)
	b.open(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) + "/")
	time.Sleep(time.Second)
	if src.Draining() {
		t.Fatal("a page on another origin drained Remora")
	}
	b.open(evil.URL + "/") // same host, another port: another origin still
	time.Sleep(time.Second)
	if src.Draining() {
		t.Fatal("a page on another port drained Remora")
	}
}

// The page can be used with a keyboard and a screen reader: every button
// has a name that says what it acts on, fields have labels, each
// upstream is labelled by its heading (names with spaces too), tables
// have captions and header cells, and Drain works with Enter.
func TestUIAccessibility(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("my shop", discoverytest.Instance("s1", 1, nil), discoverytest.Instance("c1", 2, map[string]string{"canary": "true", "canary-weight": "20"}))
	reg.Set("users", discoverytest.Instance("u1", 1, nil), discoverytest.Instance("c2", 2, map[string]string{"canary": "true"}))
	src := &uiSource{}
	src.table.Store(uiUpstreams(t, reg, "my shop", "users"))
	url := serveUI(t, src, admin.Options{})
	b := newUIBrowser(t)
	b.open(url + "/")
	b.waitFor("the upstreams", `document.querySelectorAll("article[data-upstream] tr[data-node]").length === 4`, 5*time.Second)
	for what, js := range map[string]string{
		"every upstream labelled by its heading": `[...document.querySelectorAll("article[data-upstream]")].every((a) => {
			// aria-labelledby is a list of ids, separated by spaces.
			const ids = a.getAttribute("aria-labelledby").split(/\s+/);
			const hs = ids.map((id) => document.getElementById(id));
			return hs.length === 1 && hs[0] !== null && hs[0].textContent === a.dataset.upstream;
		})`,
		"every button named": `[...document.querySelectorAll("button")].every((b) => (b.getAttribute("aria-label") || b.textContent).trim() !== "")`,
		"the Resume buttons told apart": `(() => {
			const names = [...document.querySelectorAll('button[data-action="resume"]')].map((b) => b.getAttribute("aria-label") || b.textContent);
			return names.length === 2 && new Set(names).size === 2 && names.every((n) => n.includes("Resume canary"));
		})()`,
		"every field labelled":                `[...document.querySelectorAll("input, select, textarea")].every((i) => i.labels && i.labels.length > 0)`,
		"tables captioned, with header cells": `[...document.querySelectorAll("main table")].every((t) => t.caption && t.caption.textContent.trim() !== "" && t.querySelectorAll("thead th[scope=col]").length > 0)`,
		"a live status line":                  `document.querySelector('#status[role="status"]') !== null && document.querySelector('#action-result[role="status"]') !== null`,
		"the document's language":             `document.documentElement.lang !== ""`,
	} {
		if !eval[bool](b, js) {
			t.Errorf("not so: %s", what)
		}
	}
	if n := eval[int](b, `document.querySelectorAll('button[data-action="resume"]').length`); n != 2 {
		t.Errorf("%d Resume buttons: %s", n, eval[string](b, `document.getElementById("upstreams").innerText`))
	}
	eval[bool](b, `document.getElementById("drain").focus(); document.activeElement.id === "drain"`)
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	b.waitFor("draining after Enter", `document.getElementById("readiness").dataset.state === "draining"`, 3*time.Second)
	if !src.Draining() {
		t.Fatal("Enter on Drain did not drain")
	}
	b.noProblems()
}
