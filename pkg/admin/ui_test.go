package admin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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

// GET /status, the UI's poll, is 200 whatever the state, with the
// readiness in the body (where /readyz answers 503) and the registration
// null without register: (where /register answers 404): the page's
// every-second poll is one request, and it fails only when something is
// wrong, so the browser's console stays clean. GET /ui/auth tells the
// page, without the token, whether it needs one.
func TestStatusForTheUI(t *testing.T) {
	waiting := upstream.New(upstream.Config{Name: "waiting", InitialSyncTimeout: time.Hour})
	src := &source{table: upstream.NewTable(waiting)}
	src.draining.Store(true)
	var token string
	h := admin.Handler(src, admin.Options{Token: func() string { return token }})
	code, hdr, body := do(t, h, "GET", "/status", "")
	var st admin.StatusView
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /status: %d %v %s", code, err, body)
	}
	if st.Ready || !st.Draining || len(st.WaitingFor) != 1 || st.WaitingFor[0] != "waiting" || len(st.Upstreams) != 1 || st.Upstreams[0].Name != "waiting" || st.Register != nil {
		t.Fatalf("GET /status: %+v", st)
	}
	if !strings.Contains(body, `"register":null`) {
		t.Errorf("no register: should be null: %s", body)
	}
	if code, _, body := do(t, h, "GET", "/ui/auth", ""); code != 200 || !strings.Contains(body, `"token_required": false`) {
		t.Errorf("GET /ui/auth without a token configured: %d %s", code, body)
	}
	token = "s3cret"
	if code, _, body := do(t, h, "GET", "/ui/auth", ""); code != 200 || !strings.Contains(body, `"token_required": true`) {
		t.Errorf("GET /ui/auth with a token configured: %d %s", code, body)
	}
	if code, _, _ := do(t, h, "GET", "/status", ""); code != 401 {
		t.Errorf("GET /status without the token: %d", code)
	}
	if code, _, _ := do(t, h, "GET", "/status", "s3cret"); code != 200 {
		t.Errorf("GET /status with the token: %d", code)
	}

	reg := &registeringSource{ok: true}
	reg.table = upstream.NewTable()
	reg.reg.Registry = "etcd"
	reg.reg.Status.Service = "app"
	_, _, body = do(t, admin.Handler(reg, admin.Options{}), "GET", "/status", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Ready || st.Register == nil || st.Register.Service != "app" || st.Upstreams == nil {
		t.Fatalf("GET /status with a registration: %v %s", err, body)
	}
}
