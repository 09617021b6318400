package kubernetes

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile"
)

// A kubeconfig that is a named pipe (client-go's loader blocked on it for
// good, and validate or start-up with it), a device or a file over
// regularfile.MaxSize is refused at once by Check and Open, at the
// kubeconfig field, naming the file and what is wrong with it.
func TestKubeconfigNotSmallRegular(t *testing.T) {
	dir := t.TempDir()
	fifo, huge := filepath.Join(dir, "fifo"), filepath.Join(dir, "huge")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, []byte(kubeconfigWith("", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, regularfile.MaxSize+1); err != nil { // sparse
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "kubeconfig: read " + fifo + ": not a regular file but a named pipe"},
		{"/dev/zero", "kubeconfig: read /dev/zero: not a regular file but a device"},
		{huge, "kubeconfig: read " + huge + ": 16777217 bytes is over the limit of 16 MiB"},
	} {
		o, err := parseYAML(t, "kubeconfig: "+tc.path)
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
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s with kubeconfig %s = %v; want %q", name, tc.path, err, tc.want)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("%s with kubeconfig %s blocked", name, tc.path)
			}
		}
	}
}
