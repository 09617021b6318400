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

// ReadFileMax and Check refuse a file over the cap before reading it,
// naming it and its size, and refuse a named pipe or a device as ReadFile
// does; a file at the cap is read whole.
func TestReadFileMax(t *testing.T) {
	dir := t.TempDir()
	atCap := filepath.Join(dir, "at-cap")
	if err := os.WriteFile(atCap, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	overCap := filepath.Join(dir, "over-cap")
	if err := os.WriteFile(overCap, []byte("0123456789a"), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge") // sparse: takes no disk space
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, MaxSize+1); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		max  int64
		err  string
	}{
		{atCap, 10, ""},
		{overCap, 10, "over-cap: 11 bytes is over the limit of 10 bytes"},
		{huge, MaxSize, "huge: 16777217 bytes is over the limit of 16 MiB"},
		{fifo, MaxSize, "fifo: not a regular file but a named pipe"},
		{"/dev/zero", MaxSize, "/dev/zero: not a regular file but a device"},
	} {
		done := make(chan struct{})
		var (
			data      []byte
			err, cerr error
		)
		go func() {
			defer close(done)
			data, err = ReadFileMax(tc.path, tc.max)
			cerr = Check(tc.path, tc.max)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("ReadFileMax(%s) blocked", tc.path)
		}
		if tc.err == "" {
			if err != nil || cerr != nil || len(data) != int(tc.max) {
				t.Errorf("ReadFileMax(%s) = %d bytes, %v; Check: %v; want %d bytes", tc.path, len(data), err, cerr, tc.max)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || data != nil {
			t.Errorf("ReadFileMax(%s) = %d bytes, %v; want error %q", tc.path, len(data), err, tc.err)
		}
		if cerr == nil || cerr.Error() != err.Error() {
			t.Errorf("Check(%s) = %v; want %v", tc.path, cerr, err)
		}
	}
}
