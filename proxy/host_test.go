package proxy

import (
	"strings"
	"testing"
)

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"users": "users", "users:8080": "users", "USERS.": "users", "[::1]:80": "::1", "[::1]": "::1",
		"Users.Default.Svc:443": "users.default.svc", "": "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q; want %q", in, got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { hostOnly("users:8080") }); a != 0 {
		t.Fatalf("hostOnly allocates %v times for a lower-case host", a)
	}
}

// The Host header (or the authority of an absolute-form request) is
// untrusted input: parsing it never panics and never yields a name with a
// port or upper case, so lookups cannot be tricked into a different
// upstream.
func FuzzHostOnly(f *testing.F) {
	for _, s := range []string{"users", "users:80", "[::1]:80", "a.b.c.", "UPPER", ":", "[", "]:", "x:y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got := hostOnly(host)
		if got != strings.ToLower(got) {
			t.Fatalf("hostOnly(%q) = %q is not lower case", host, got)
		}
		if !strings.Contains(host, "[") && strings.Count(host, ":") == 1 && strings.Contains(got, ":") {
			t.Fatalf("hostOnly(%q) = %q kept the port", host, got)
		}
	})
}
