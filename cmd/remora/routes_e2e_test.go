package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// echoBackend answers with its name, the request's path and headers.
func echoBackend(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Internal", "secret")
		json.NewEncoder(w).Encode(map[string]any{"backend": name, "uri": r.URL.RequestURI(), "header": r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

type echoAnswer struct {
	Backend string      `json:"backend"`
	URI     string      `json:"uri"`
	Header  http.Header `json:"header"`
}

// Routes on one listener of a real remora process: a path prefix to one
// upstream (prefix stripped, headers added and removed both ways), the
// rest by Host; the application's X-Forwarded-For reaches the node
// unchanged; a request ID is given once, and the node and the access log
// see the same.
func TestProcessRoutes(t *testing.T) {
	users, v2 := echoBackend(t, "users"), echoBackend(t, "v2")
	adminAddr, out := freeAddr(t), freeAddr(t)
	p := startProcess(t, adminAddr, fmt.Sprintf(`admin: {address: %q}
access_log: {enabled: true}
listeners:
  - name: outbound
    address: %q
    routes:
      - name: v2
        match: {path_prefix: /api/v2/}
        upstream: v2
        rewrite: {strip_prefix: true, prefix_rewrite: /}
        request_headers: {add: {x-route: v2}, remove: [x-secret]}
        response_headers: {remove: [x-internal]}
registries:
  - name: s
    type: static
    static: {services: {users: [{address: %q}], v2: [{address: %q}]}}
upstreams: [{name: users}, {name: v2}]
`, adminAddr, out, users, v2))
	get := func(path string, header http.Header) (*http.Response, echoAnswer) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+out+path, nil)
		req.Host = "users"
		for k, vv := range header {
			req.Header[k] = vv
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a echoAnswer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp, a
	}

	resp, a := get("/api/v2/items?x=1", http.Header{"X-Secret": {"s"}, "X-Forwarded-For": {"203.0.113.9"}})
	if a.Backend != "v2" || a.URI != "/items?x=1" {
		t.Fatalf("the route: %s got %q; want v2 with the prefix stripped", a.Backend, a.URI)
	}
	if a.Header.Get("X-Route") != "v2" || a.Header.Get("X-Secret") != "" || resp.Header.Get("X-Internal") != "" || resp.Header.Get("X-Backend") != "v2" {
		t.Fatalf("header rules: the node got %v, the client %v", a.Header, resp.Header)
	}
	if got := a.Header["X-Forwarded-For"]; len(got) != 1 || got[0] != "203.0.113.9" {
		t.Fatalf("the application's X-Forwarded-For arrived as %q", got)
	}
	id := a.Header.Get("X-Request-Id")
	if len(a.Header["X-Request-Id"]) != 1 || len(id) != 36 {
		t.Fatalf("request IDs at the node: %q", a.Header["X-Request-Id"])
	}
	eventually(t, 2*time.Second, "the access log line", func() bool { return strings.Contains(p.logs.String(), id) })
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, id) && (!strings.Contains(line, `"route":"v2"`) || !strings.Contains(line, `"request_id":"`+id+`"`)) {
			t.Fatalf("the access log line of %s: %s", id, line)
		}
	}

	if _, a := get("/other", nil); a.Backend != "users" || a.URI != "/other" || a.Header.Get("X-Route") != "" {
		t.Fatalf("no route: %s got %q with %v; want users by Host", a.Backend, a.URI, a.Header)
	}
	if _, a := get("/x", http.Header{"X-Request-Id": {"app-id-1"}}); strings.Join(a.Header["X-Request-Id"], ",") != "app-id-1" {
		t.Fatalf("the application's own request ID arrived as %q", a.Header["X-Request-Id"])
	}
}
