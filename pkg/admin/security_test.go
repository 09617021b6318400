package admin_test

import (
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
