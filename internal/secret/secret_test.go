package secret

import (
	"strings"
	"testing"
)

func TestUserinfo(t *testing.T) {
	for _, tc := range []struct {
		addr, want string
		creds      bool
	}{
		{"127.0.0.1:2379", "127.0.0.1:2379", false},
		{"http://127.0.0.1:8500/", "http://127.0.0.1:8500/", false},
		{"http://root:s3cret@127.0.0.1:2379", "http://[redacted]@127.0.0.1:2379", true},
		{"root:s3cret@127.0.0.1:2379", "[redacted]@127.0.0.1:2379", true},
		{"https://tok@host:443/nacos?x=a@b", "https://[redacted]@host:443/nacos?x=a@b", true},
		{"http://host:8848/ctx@path", "http://host:8848/ctx@path", false},
		{"a:b@c@host:1", "[redacted]@host:1", true},
	} {
		got, creds := Userinfo(tc.addr)
		if got != tc.want || creds != tc.creds {
			t.Errorf("Userinfo(%q) = %q, %v; want %q, %v", tc.addr, got, creds, tc.want, tc.creds)
		}
		if err := UserinfoError(tc.addr, "x"); tc.creds && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("UserinfoError(%q) shows the password: %v", tc.addr, err)
		}
	}
}
