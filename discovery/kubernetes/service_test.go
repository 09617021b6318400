package kubernetes

import (
	"strings"
	"testing"
)

func TestParseService(t *testing.T) {
	tests := []struct {
		in   string
		want Service
		err  string // substring of the error; "" for none
	}{
		{in: "user-service", want: Service{Name: "user-service"}},
		{in: "shop/user-service", want: Service{Namespace: "shop", Name: "user-service"}},
		{in: "shop/user-service:http", want: Service{Namespace: "shop", Name: "user-service", Port: "http"}},
		{in: "user-service:8080", want: Service{Name: "user-service", Port: "8080"}},
		{in: "a/b:65535", want: Service{Namespace: "a", Name: "b", Port: "65535"}},
		{in: "0ns/svc:grpc-web", want: Service{Namespace: "0ns", Name: "svc", Port: "grpc-web"}},
		{in: "", err: "empty"},
		{in: "User", err: `name "User" has 'U'`},
		{in: "1svc", err: "must start with a lower-case letter"},
		{in: "shop/", err: `name "" is empty`},
		{in: "/svc", err: `namespace "" is empty`},
		{in: "a/b/c", err: `name "b/c" has '/'`},
		{in: "svc:", err: "port is empty"},
		{in: "svc:0", err: `port "0"`},
		{in: "svc:080", err: "no leading zero"},
		{in: "svc:65536", err: `port "65536"`},
		{in: "svc:http:x", err: `port name "http:x" has ':'`},
		{in: "svc:-http", err: "start and end"},
		{in: "svc." + strings.Repeat("x", 10), err: `has '.'`},
		{in: strings.Repeat("s", 64), err: "64 characters long"},
	}
	for _, tc := range tests {
		got, err := ParseService(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseService(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseService(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if s := got.String(); s != tc.in {
			t.Errorf("ParseService(%q).String() = %q", tc.in, s)
		}
	}
}

// FuzzParseService: a service that parses prints as its input, and its
// parts are valid on their own.
func FuzzParseService(f *testing.F) {
	for _, s := range []string{"svc", "ns/svc", "ns/svc:http", "svc:8080", "a/b/c", "svc::", "svc:0", "-/a", "ns/Svc:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		svc, err := ParseService(in)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if svc.String() != in {
			t.Fatalf("ParseService(%q).String() = %q", in, svc.String())
		}
		if svc.Name == "" || checkLabel(svc.Name) != nil {
			t.Fatalf("ParseService(%q): bad name %q", in, svc.Name)
		}
		if svc.Namespace != "" && checkLabel(svc.Namespace) != nil {
			t.Fatalf("ParseService(%q): bad namespace %q", in, svc.Namespace)
		}
		if svc.Port != "" {
			num, name, err := parsePort(svc.Port)
			if err != nil || (num == 0) == (name == "") || num < 0 {
				t.Fatalf("ParseService(%q): bad port %q (%d %q %v)", in, svc.Port, num, name, err)
			}
		}
	})
}
