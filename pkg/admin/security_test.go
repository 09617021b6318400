package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Every answer, the API's (errors and 401s included) as well as the UI's,
// tells the browser not to sniff it, not to frame it and not to send a
// referrer; the API's answers are never cached (they are live, and with
// a token they are authenticated) and run nothing if a browser opens
// them as a page.
func TestSecurityHeaders(t *testing.T) {
	src := &undrainSource{}
	src.table = upstream.NewTable(upstream.New(upstream.Config{Name: "users"}))
	for _, token := range []string{"", "s3cret"} {
		opts := admin.Options{Config: func(string) ([]byte, error) { return []byte("admin: {}\n"), nil }}
		if token != "" {
			opts.Token = func() string { return token }
		}
		h := admin.Handler(src, opts)
		for _, tc := range []struct {
			method, path string
			ui           bool
		}{
			{"GET", "/", true},
			{"GET", "/ui/app.js", true},
			{"GET", "/ui/nope.css", true},
			{"GET", "/healthz", false},
			{"GET", "/readyz", false},
			{"GET", "/upstreams", false},
			{"GET", "/upstreams?format=text", false},
			{"GET", "/upstreams/users", false},
			{"GET", "/upstreams/nope", false},
			{"GET", "/register", false},
			{"GET", "/routes", false},
			{"GET", "/config", false},
			{"GET", "/metrics", false},
			{"GET", "/nope", false},
			{"GET", "/drain", false},
			{"POST", "/undrain", false},
			{"POST", "/upstreams/nope/canary/resume", false},
		} {
			for _, auth := range []string{"", token} {
				code, hdr, _ := do(t, h, tc.method, tc.path, auth)
				what := tc.method + " " + tc.path + " (token " + auth + ")"
				if got := hdr.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("%s: %d, X-Content-Type-Options %q", what, code, got)
				}
				if got := hdr.Get("X-Frame-Options"); got != "DENY" {
					t.Errorf("%s: %d, X-Frame-Options %q", what, code, got)
				}
				if got := hdr.Get("Referrer-Policy"); got != "no-referrer" {
					t.Errorf("%s: %d, Referrer-Policy %q", what, code, got)
				}
				csp := hdr.Get("Content-Security-Policy")
				if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
					t.Errorf("%s: %d, Content-Security-Policy %q", what, code, csp)
				}
				if tc.ui {
					continue
				}
				if got := hdr.Get("Cache-Control"); !strings.Contains(got, "no-store") {
					t.Errorf("%s: %d, Cache-Control %q", what, code, got)
				}
				if strings.Contains(csp, "script-src") {
					t.Errorf("%s: %d, the API's answers must not allow script: %q", what, code, csp)
				}
			}
		}
	}
}

// A page on another origin cannot make the browser drain, undrain or
// resume a canary: a form POST or a fetch from elsewhere carries
// Sec-Fetch-Site (or, in older browsers, an Origin that is not the admin
// address) and is refused, with or without a token, before anything is
// done. curl and the kubelet's pre-stop hook send neither and pass.
func TestCrossSiteRequestsRefused(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		src := &undrainSource{}
		src.table = upstream.NewTable()
		opts := admin.Options{}
		if token != "" {
			opts.Token = func() string { return token }
		}
		h := admin.Handler(src, opts)
		post := func(path string, header map[string]string) (int, http.Header, string) {
			req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:15000"+path, strings.NewReader("x=1"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range header {
				req.Header.Set(k, v)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec.Code, rec.Header(), rec.Body.String()
		}
		for _, hdr := range []map[string]string{
			{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
			{"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:8080"},
			{"Sec-Fetch-Site": "cross-site", "Origin": "null"},
			{"Origin": "http://evil.example"},
			{"Origin": "http://127.0.0.1:8080"},
		} {
			for _, path := range []string{"/drain", "/undrain", "/upstreams/users/canary/resume"} {
				code, rh, body := post(path, hdr)
				if code != http.StatusForbidden || !strings.Contains(body, "cross-origin") {
					t.Errorf("token %q: POST %s with %v: %d %q; want 403", token, path, hdr, code, body)
				}
				if rh.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("POST %s refused without the security headers: %v", path, rh)
				}
			}
			if src.Draining() {
				t.Fatalf("token %q: a cross-site POST with %v drained", token, hdr)
			}
		}
		// The page itself, and clients that are not browsers.
		for _, hdr := range []map[string]string{
			{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:15000"},
			{"Origin": "http://127.0.0.1:15000"},
			{},
		} {
			src.draining.Store(false)
			if code, _, body := post("/drain", hdr); code != 200 || !src.Draining() {
				t.Errorf("token %q: POST /drain with %v: %d %s; want it drained", token, hdr, code, body)
			}
		}
	}
}

// Without a token, the admin API answers only requests addressed to an IP
// address or localhost: a page on another site that makes its own name
// resolve to 127.0.0.1 (DNS rebinding) is same-origin for the browser,
// and could otherwise read /config and drain Remora. Liveness, readiness
// and the UI's files stay open; with a token, the token decides.
func TestRebindingHostRefused(t *testing.T) {
	src := &undrainSource{}
	src.table = upstream.NewTable(upstream.New(upstream.Config{Name: "users"}))
	opts := admin.Options{Config: func(string) ([]byte, error) { return []byte("admin: {}\n"), nil }}
	call := func(h http.Handler, method, host, path, auth string) int {
		req := httptest.NewRequest(method, "http://"+host+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	open := admin.Handler(src, opts)
	for _, host := range []string{"127.0.0.1:15000", "[::1]:15000", "localhost:15000", "LOCALHOST.", "app.localhost:15000", "10.0.0.7"} {
		for _, path := range []string{"/upstreams", "/config", "/status"} {
			if code := call(open, "GET", host, path, ""); code != 200 {
				t.Errorf("GET %s with Host %s: %d; want 200", path, host, code)
			}
		}
	}
	for _, host := range []string{"rebind.example:15000", "rebind.example", "127.0.0.1.nip.io:15000", "localhost.example"} {
		for _, tc := range []struct{ method, path string }{{"GET", "/upstreams"}, {"GET", "/config"}, {"GET", "/status"}, {"GET", "/metrics"}, {"POST", "/drain"}} {
			if code := call(open, tc.method, host, tc.path, ""); code != http.StatusForbidden {
				t.Errorf("%s %s with Host %s: %d; want 403", tc.method, tc.path, host, code)
			}
		}
		for _, path := range []string{"/healthz", "/readyz", "/"} {
			if code := call(open, "GET", host, path, ""); code == http.StatusForbidden {
				t.Errorf("GET %s with Host %s: 403; it must stay open", path, host)
			}
		}
	}
	if src.Draining() {
		t.Fatal("a request by name drained Remora")
	}
	opts.Token = func() string { return "s3cret" }
	withToken := admin.Handler(src, opts)
	if code := call(withToken, "GET", "remora.example:15000", "/upstreams", "s3cret"); code != 200 {
		t.Errorf("with the token, by name: %d; want 200", code)
	}
	if code := call(withToken, "GET", "remora.example:15000", "/upstreams", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token, by name: %d; want 401", code)
	}
}

// The token is taken whatever the case of its scheme's name ("bearer",
// "BEARER": RFC 9110 says it is case-insensitive), and only the token.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	src := &undrainSource{}
	src.table = upstream.NewTable(upstream.New(upstream.Config{Name: "users"}))
	h := admin.Handler(src, admin.Options{Token: func() string { return "s3cret" }})
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer s3cret", 200},
		{"bearer s3cret", 200},
		{"BEARER s3cret", 200},
		{"Bearer  s3cret", 200},
		{"Bearer s3cre", 401},
		{"Basic s3cret", 401},
		{"s3cret", 401},
		{"Bearers3cret", 401},
		{"", 401},
	} {
		req := httptest.NewRequest("GET", "http://127.0.0.1:15000/upstreams", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Authorization %q: %d; want %d", tc.auth, rec.Code, tc.want)
		}
	}
}
