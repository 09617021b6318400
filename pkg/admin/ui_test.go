package admin_test

import (
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// The UI's files are served from the binary without the token; the API
// they call needs it.
func TestUIFilesAndToken(t *testing.T) {
	src := &source{table: upstream.NewTable()}
	h := admin.Handler(src, admin.Options{Token: func() string { return "s3cret" }})
	for _, tc := range []struct {
		method, path, token string
		code                int
		ctype, body         string
	}{
		{"GET", "/", "", 200, "text/html", `<script src="/ui/app.js"`},
		{"HEAD", "/", "", 200, "text/html", ""},
		{"GET", "/ui/app.js", "", 200, "text/javascript", "sessionStorage"},
		{"GET", "/ui/style.css", "", 200, "text/css", "prefers-color-scheme"},
		{"GET", "/ui/nope.js", "", 404, "", ""},
		{"POST", "/", "", 401, "", ""},
		{"GET", "/upstreams", "", 401, "application/json", "admin token required"},
		{"GET", "/upstreams", "s3cret", 200, "application/json", "[]"},
		{"GET", "/readyz", "", 200, "application/json", `"ready": true`},
		{"POST", "/drain", "", 401, "", ""},
		{"POST", "/undrain", "wrong", 401, "", ""},
	} {
		code, hdr, body := do(t, h, tc.method, tc.path, tc.token)
		if code != tc.code || !strings.HasPrefix(hdr.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s (token %q): %d %q %.80q; want %d %q containing %q", tc.method, tc.path, tc.token, code, hdr.Get("Content-Type"), body, tc.code, tc.ctype, tc.body)
		}
		if code == 200 && (tc.path == "/" || strings.HasPrefix(tc.path, "/ui/")) {
			if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
				t.Errorf("%s: content security policy %q", tc.path, csp)
			}
		}
	}
	// Nothing the page loads comes from elsewhere.
	_, _, page := do(t, h, "GET", "/", "")
	_, _, js := do(t, h, "GET", "/ui/app.js", "")
	for _, s := range []string{page, js} {
		if strings.Contains(s, "http://") || strings.Contains(s, "https://") || strings.Contains(s, "//cdn") {
			t.Errorf("the UI refers to another site: %.200s", s)
		}
	}
}
