package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readyzCode(t *testing.T, a *app) int {
	code, _ := readyz(t, a)
	return code
}

// runDrain runs "remora drain ARGS" as run does for a command of the
// table (main.go's commands lists drainCommand).
func runDrain(args []string, stdout, stderr io.Writer) int {
	o := &cmdOpts{}
	fs := newFlags(drainCommand, o, stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.fs = fs
	return drainCommand.run(o, fs.Args(), stdout, stderr)
}

// remora drain turns a running Remora's readiness off through its admin
// API, with the address and token given or read from the config file.
func TestDrainCommand(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBackend(t, "b")
	cfgText := func(admin string) string {
		return fmt.Sprintf(`
admin: {address: %q, token_file: %q}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {user-service: [{address: %q}]}}}]
upstreams: [{name: user-service}]
`, admin, tokenFile, b.srv.Listener.Addr().String())
	}
	tests := []struct {
		name string
		args func(a *app) []string
		code int
		out  string // in stdout (code 0) or stderr
	}{
		{"address and token file", func(a *app) []string {
			return []string{"--admin", a.addr("admin"), "--token-file", tokenFile}
		}, 0, "is draining"},
		{"config file, admin on every interface", func(a *app) []string {
			_, port, _ := strings.Cut(a.addr("admin"), ":")
			f := filepath.Join(dir, "remora.yaml")
			if err := os.WriteFile(f, []byte(cfgText("0.0.0.0:"+port)), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"-c", f}
		}, 0, "is draining"},
		{"without the token", func(a *app) []string { return []string{"--admin", a.addr("admin")} }, 1, "401 Unauthorized"},
		{"nothing listening", func(*app) []string { return []string{"--admin", "127.0.0.1:1"} }, 1, "connection refused"},
		{"bad address", func(*app) []string { return []string{"--admin", "localhost"} }, 2, "not host:port"},
		{"stray argument", func(*app) []string { return []string{"now"} }, 2, `unexpected argument "now"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startRemora(t, cfgText("127.0.0.1:0"))
			eventually(t, 5*time.Second, "ready", func() bool { return readyzCode(t, a) == 200 })
			var out, errOut bytes.Buffer
			code := runDrain(tc.args(a), &out, &errOut)
			got := out.String() + errOut.String()
			if code != tc.code || !strings.Contains(got, tc.out) {
				t.Fatalf("exit %d, output %q; want %d and %q", code, got, tc.code, tc.out)
			}
			want := 200
			if tc.code == 0 {
				want = 503
			}
			if s := readyzCode(t, a); s != want {
				t.Fatalf("/readyz %d after drain; want %d", s, want)
			}
			if tc.code == 0 {
				// Still serving.
				if counts := send(t, a, 2); counts["b"] != 2 {
					t.Fatalf("requests after drain: %v", counts)
				}
			}
		})
	}
}
