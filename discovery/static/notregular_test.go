package static_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile"
)

// A static file that is a named pipe (os.ReadFile blocked Open, and
// start-up, for good), a device (/dev/zero exhausted memory) or a file
// over regularfile.MaxSize is not read: Open returns at once and the
// watchers report the error, naming the file and what is wrong with it,
// as for a bad file.
func TestFileNotSmallRegularIsAnError(t *testing.T) {
	dir := t.TempDir()
	fifo, huge := filepath.Join(dir, "fifo.yaml"), filepath.Join(dir, "huge.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, regularfile.MaxSize+1); err != nil { // sparse
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "read " + fifo + ": not a regular file but a named pipe"},
		{"/dev/zero", "read /dev/zero: not a regular file but a device"},
		{huge, "read " + huge + ": 16777217 bytes is over the limit of 16 MiB"},
	} {
		done := make(chan discovery.Registry, 1)
		go func() { done <- openFile(t, tc.path) }()
		var reg discovery.Registry
		select {
		case reg = <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("Open(%s) blocked", tc.path)
		}
		w, err := reg.Watch(context.Background(), "svc")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		set, err := w.Next(ctx)
		cancel()
		w.Stop()
		reg.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("first Next on %s = %d instances, %v; want %q", tc.path, len(set), err, tc.want)
		}
	}
}
