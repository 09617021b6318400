package dns

import (
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/regularfile/regularfiletest"
)

// A resolv.conf that is a named pipe (os.ReadFile blocked on it for good,
// and every watcher with it), a device or a file over regularfile.MaxSize
// is an error at once that names the file and what is wrong with it, as a
// missing one is.
func TestReadResolvConfNotSmallRegular(t *testing.T) {
	for _, tc := range regularfiletest.Refusals(t) {
		done := make(chan error, 1)
		go func() {
			_, err := readResolvConf(tc.Path, "53")
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("readResolvConf(%s) = %v; want %q", tc.Path, err, tc.Want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("readResolvConf(%s) blocked", tc.Path)
		}
	}
}
