package static_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile/regularfiletest"
)

// A static file that is a named pipe (os.ReadFile blocked Open, and
// start-up, for good), a device (/dev/zero exhausted memory) or a file
// over regularfile.MaxSize is not read: Open returns at once and the
// watchers report the error, naming the file and what is wrong with it,
// as for a bad file.
func TestFileNotSmallRegularIsAnError(t *testing.T) {
	for _, tc := range regularfiletest.Refusals(t) {
		done := make(chan discovery.Registry, 1)
		go func() { done <- openFile(t, tc.Path) }()
		var reg discovery.Registry
		select {
		case reg = <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("Open(%s) blocked", tc.Path)
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
		if err == nil || !strings.Contains(err.Error(), tc.Want) {
			t.Errorf("first Next on %s = %d instances, %v; want %q", tc.Path, len(set), err, tc.Want)
		}
	}
}
