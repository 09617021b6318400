package regularfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A named pipe, a directory or a device in place of a file is refused at
// once, saying what it is; a regular file, and a link to one, is read
// whole. os.ReadFile blocked on a named pipe for good.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	want := strings.Repeat("x", 100_000)
	if err := os.WriteFile(file, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want, err string }{
		{file, want, ""},
		{link, want, ""},
		{empty, "", ""},
		{fifo, "", "not a regular file but a named pipe"},
		{dir, "", "not a regular file but a directory"},
		{"/dev/null", "", "not a regular file but a device"},
		{filepath.Join(dir, "missing"), "", "no such file"},
	} {
		done := make(chan struct{})
		var (
			data []byte
			err  error
		)
		go func() { defer close(done); data, err = ReadFile(tc.path) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("ReadFile(%s) blocked", tc.path)
		}
		switch {
		case tc.err == "" && (err != nil || string(data) != tc.want):
			t.Errorf("ReadFile(%s) = %d bytes, %v; want %d bytes", tc.path, len(data), err, len(tc.want))
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ReadFile(%s) error %v; want %q", tc.path, err, tc.err)
		}
	}
}
