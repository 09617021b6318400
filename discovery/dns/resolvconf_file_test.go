package dns

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// A resolv.conf that is a named pipe (os.ReadFile blocked on it for good,
// and every watcher with it), a device or a file over regularfile.MaxSize
// is an error at once that names the file and what is wrong with it, as a
// missing one is.
func TestReadResolvConfNotSmallRegular(t *testing.T) {
	dir := t.TempDir()
	fifo, huge := filepath.Join(dir, "fifo"), filepath.Join(dir, "huge")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, []byte("nameserver 192.0.2.1\n"), 0o600); err != nil {
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
		done := make(chan error, 1)
		go func() {
			_, err := readResolvConf(tc.path, "53")
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("readResolvConf(%s) = %v; want %q", tc.path, err, tc.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("readResolvConf(%s) blocked", tc.path)
		}
	}
}
