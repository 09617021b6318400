package kubernetes

import (
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile/regularfiletest"
)

// A kubeconfig that is a named pipe (client-go's loader blocked on it for
// good, and validate or start-up with it), a device or a file over
// regularfile.MaxSize is refused at once by Check and Open, at the
// kubeconfig field, naming the file and what is wrong with it.
func TestKubeconfigNotSmallRegular(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range regularfiletest.Refusals(t) {
		o, err := parseYAML(t, "kubeconfig: "+tc.Path)
		if err != nil {
			t.Fatal(err)
		}
		for name, f := range map[string]func() error{
			"Check": func() error { return o.Check(dir) },
			"Open": func() error {
				reg, err := o.Open(discovery.Env{Name: "k", BaseDir: dir})
				if err == nil {
					reg.Close()
				}
				return err
			},
		} {
			done := make(chan error, 1)
			go func() { done <- f() }()
			select {
			case err := <-done:
				if want := "kubeconfig: " + tc.Want; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s with kubeconfig %s = %v; want %q", name, tc.Path, err, want)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("%s with kubeconfig %s blocked", name, tc.Path)
			}
		}
	}
}
