package hashkey

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/remora-mesh/remora/pkg/balancer"
)

func TestCompile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    Spec
		want    string // Key.String, or "" for an error
		wantErr string
	}{
		{"header canonicalised", Spec{Header: "x-user-id"}, "header X-User-Id", ""},
		{"host header", Spec{Header: "host"}, "header Host", ""},
		{"cookie", Spec{Cookie: "session"}, "cookie session", ""},
		{"source ip", Spec{SourceIP: true}, "source_ip", ""},
		{"path", Spec{Path: true}, "path", ""},
		{"query", Spec{QueryParameter: "user id"}, "query_parameter user id", ""},
		{"empty", Spec{}, "", "set one of"},
		{"two keys", Spec{Header: "a", Path: true}, "", "2 keys set"},
		{"bad header", Spec{Header: "x user"}, "", "not a valid header name"},
		{"bad cookie", Spec{Cookie: "a=b"}, "", "not a valid cookie name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.spec.Compile()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Compile() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.String() != tc.want {
				t.Fatalf("String() = %q, want %q", k.String(), tc.want)
			}
		})
	}
}

func mustKey(t testing.TB, s Spec) Key {
	t.Helper()
	k, err := s.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHash(t *testing.T) {
	req := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = "10.1.2.3:5555"
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	for _, tc := range []struct {
		name string
		spec Spec
		info balancer.Info
		want string // the hashed string; "" = no key
	}{
		{"header", Spec{Header: "x-user-id"}, balancer.Info{Request: req("/", "X-User-Id", "u1", "X-User-Id", "u2")}, "u1"},
		{"header absent", Spec{Header: "x-user-id"}, balancer.Info{Request: req("/")}, ""},
		{"header empty", Spec{Header: "x-user-id"}, balancer.Info{Request: req("/", "X-User-Id", "")}, ""},
		{"host", Spec{Header: "Host"}, balancer.Info{Request: req("http://svc.local/x")}, "svc.local"},
		{"cookie", Spec{Cookie: "session"}, balancer.Info{Request: req("/", "Cookie", `a=1; session="s-9"; session=s-10`)}, "s-9"},
		{"cookie in second line", Spec{Cookie: "session"}, balancer.Info{Request: req("/", "Cookie", "a=1", "Cookie", " session = s-7 ")}, " s-7"}, // as net/http reads it,
		{"cookie invalid value skipped", Spec{Cookie: "s"}, balancer.Info{Request: req("/", "Cookie", `s=a\b; s=ok`)}, "ok"},
		{"cookie absent", Spec{Cookie: "session"}, balancer.Info{Request: req("/", "Cookie", "a=1")}, ""},
		{"source ip", Spec{SourceIP: true}, balancer.Info{Request: req("/")}, "10.1.2.3"},
		{"source ip tcp", Spec{SourceIP: true}, balancer.Info{RemoteAddr: "[fe80::1]:80"}, "fe80::1"},
		{"source ip without port", Spec{SourceIP: true}, balancer.Info{RemoteAddr: "10.9.9.9"}, "10.9.9.9"},
		{"path", Spec{Path: true}, balancer.Info{Request: req("/a%20b/c?x=1")}, "/a b/c"},
		{"query unescaped", Spec{QueryParameter: "user id"}, balancer.Info{Request: req("/?x=1&user+id=a%2Fb&user%20id=2")}, "a/b"},
		{"query bad escape skipped", Spec{QueryParameter: "u"}, balancer.Info{Request: req("/?u=%zz&u=ok")}, "ok"},
		{"query semicolon skipped", Spec{QueryParameter: "u"}, balancer.Info{Request: req("/?u=1;x&u=2")}, "2"},
		{"query empty", Spec{QueryParameter: "u"}, balancer.Info{Request: req("/?u=&u=2")}, ""},
		{"query absent", Spec{QueryParameter: "u"}, balancer.Info{Request: req("/?uu=1")}, ""},
		{"no request", Spec{Header: "x"}, balancer.Info{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := mustKey(t, tc.spec).Hash(tc.info)
			if tc.want == "" {
				if ok {
					t.Fatalf("Hash() = %x, true; want no key", h)
				}
				return
			}
			if !ok || h != String(tc.want) {
				t.Fatalf("Hash() = %x, %v; want String(%q) = %x", h, ok, tc.want, String(tc.want))
			}
		})
	}
}

// TestStringStable pins the hash function: consistent hashing across
// sidecars and releases depends on it never changing.
func TestStringStable(t *testing.T) {
	for s, want := range map[string]uint64{
		"":         0xefd01f60ba992926,
		"user-42":  0xa39532c7ab051e8d,
		"node-7_3": 0x9eb0163e7e5040cb,
	} {
		if got := String(s); got != want {
			t.Errorf("String(%q) = %#x, want %#x", s, got, want)
		}
	}
}

func TestHashNoAllocs(t *testing.T) {
	r := httptest.NewRequest("GET", "/p?a=1&user=abc%20d", nil)
	r.Header.Set("X-User-Id", "u-123")
	r.Header.Add("Cookie", "a=b; session=xyz")
	info := balancer.Info{Request: r}
	for _, spec := range []Spec{{Header: "x-user-id"}, {Cookie: "session"}, {SourceIP: true}, {Path: true}, {QueryParameter: "user"}} {
		k := mustKey(t, spec)
		if a := testing.AllocsPerRun(200, func() { k.Hash(info) }); a != 0 {
			t.Errorf("%v: %v allocs per Hash", k, a)
		}
	}
}

// FuzzCookie checks the in-place cookie scan against net/http.
func FuzzCookie(f *testing.F) {
	f.Add("session", `a=1; session="x"`)
	f.Add("s", ` s = v ;s=w`)
	f.Add("s", "s=\x7f; s=ok")
	f.Fuzz(func(t *testing.T, name, line string) {
		if !httpguts.ValidHeaderFieldName(name) || strings.Count(line, ";") > 1000 {
			return
		}
		r := &http.Request{Header: http.Header{"Cookie": {line}}}
		want := ""
		if c, err := r.Cookie(name); err == nil {
			want = c.Value
		}
		if got := cookie(r.Header["Cookie"], name); got != want {
			t.Fatalf("cookie(%q, %q) = %q, net/http says %q", line, name, got, want)
		}
	})
}

// FuzzQuery checks the in-place query scan against url.ParseQuery.
func FuzzQuery(f *testing.F) {
	f.Add("u", "u=1&u=2")
	f.Add("a b", "a+b=%41&x=;y")
	f.Add("u", "u=%4&u=%41")
	f.Fuzz(func(t *testing.T, name, raw string) {
		if name == "" || strings.Count(raw, "&") > 1000 {
			return
		}
		vals, _ := url.ParseQuery(raw)
		want := vals.Get(name)
		h, ok := query(raw, name)
		if want == "" {
			if ok {
				t.Fatalf("query(%q, %q) found a key; url.ParseQuery finds none", raw, name)
			}
			return
		}
		if !ok || h != String(want) {
			t.Fatalf("query(%q, %q) = %x, %v; want hash of %q", raw, name, h, ok, want)
		}
	})
}

// FuzzSpec compiles arbitrary specs and hashes arbitrary requests with them.
func FuzzSpec(f *testing.F) {
	f.Add("x-user-id", "", false, false, "", "/a?b=c", "v")
	f.Add("", "sid", false, false, "", "/", "sid=1")
	f.Add("", "", true, true, "q", "/?q=1", "")
	f.Fuzz(func(t *testing.T, header, cookieName string, sourceIP, path bool, param, target, value string) {
		k, err := Spec{Header: header, Cookie: cookieName, SourceIP: sourceIP, Path: path, QueryParameter: param}.Compile()
		if err != nil {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{URL: u, Header: http.Header{}, RemoteAddr: value}
		r.Header.Set("Cookie", value)
		if header != "" {
			r.Header.Set(header, value)
		}
		h1, ok1 := k.Hash(balancer.Info{Request: r})
		h2, ok2 := k.Hash(balancer.Info{Request: r})
		if h1 != h2 || ok1 != ok2 {
			t.Fatal("Hash is not deterministic")
		}
	})
}
