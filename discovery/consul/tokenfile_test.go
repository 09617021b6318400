package consul

import (
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/regularfile/regularfiletest"
)

// within runs f and fails the test if it has not returned within two
// seconds (a token file read with os.ReadFile blocked on a named pipe for
// good).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// A named pipe, a device or a file over the size cap as token_file is a config
// error at once, placed at the field and naming the file.
func TestCheckRefusesTokenFileNotSmallRegular(t *testing.T) {
	for _, tc := range regularfiletest.Refusals(t) {
		path, want := tc.Path, tc.Want
		o, err := parseYAML(t, "address: 192.0.2.1:1\ntoken_file: "+path)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "Check", func() { err = o.Check("") })
		if err == nil || !strings.Contains(err.Error(), "token_file: "+want) {
			t.Errorf("Check with token_file %s: %v; want %q", path, err, "token_file: "+want)
		}
	}
}

// A named pipe, a device or a file over the size cap named by
// $CONSUL_HTTP_TOKEN_FILE is the environment's: Open returns at once with
// a registry whose watchers report the error, as for a missing file.
func TestOpenWithEnvTokenFileNotSmallRegular(t *testing.T) {
	defer func(g func(string) string) { getenv = g }(getenv)
	for _, tc := range regularfiletest.Refusals(t) {
		path, want := tc.Path, tc.Want
		getenv = func(k string) string {
			if k == TokenFileEnv {
				return path
			}
			return ""
		}
		o, err := parseYAML(t, "address: 192.0.2.1:1")
		if err != nil {
			t.Fatal(err)
		}
		var reg discovery.Registry
		within(t, "Open", func() { reg, err = o.Open(discovery.Env{Name: "c"}) })
		if err != nil {
			t.Fatalf("Open with %s: %v; want a registry whose watchers report the error", path, err)
		}
		err = discoverytest.WatchError(t, reg, "web", 5*time.Second)
		reg.Close()
		if want = "$" + TokenFileEnv + ": " + want; !strings.Contains(err.Error(), want) {
			t.Errorf("Next with %s: %v; want %q", path, err, want)
		}
	}
}
