package secret

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// readFile runs ReadFile and fails the test if it has not returned within
// two seconds (os.ReadFile blocked on a named pipe for good).
func readFile(t *testing.T, path string) (string, error) {
	t.Helper()
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := ReadFile("token_file", path, "the token")
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(2 * time.Second):
		t.Fatalf("ReadFile(%s) blocked", path)
		return "", nil
	}
}

// A named pipe, a device or a directory in place of a secret file is an
// error at once that names the option and the file and says what it is.
func TestReadFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "token_file: read " + fifo + ": not a regular file but a named pipe"},
		{dir, "token_file: read " + dir + ": not a regular file but a directory"},
		{"/dev/zero", "token_file: read /dev/zero: not a regular file but a device"},
	} {
		if v, err := readFile(t, tc.path); err == nil || err.Error() != tc.want {
			t.Errorf("ReadFile(%s) = %q, %v; want error %q", tc.path, v, err, tc.want)
		}
	}
}

// A secret file over regularfile.MaxSize is refused without being read.
func TestReadFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := readFile(t, path); err != nil || v != "secret" {
		t.Fatalf("ReadFile = %q, %v; want the secret", v, err)
	}
	if err := os.Truncate(path, regularfile.MaxSize+1); err != nil { // sparse
		t.Fatal(err)
	}
	want := "token_file: read " + path + ": 16777217 bytes is over the limit of 16 MiB"
	if v, err := readFile(t, path); err == nil || err.Error() != want {
		t.Errorf("ReadFile = %d bytes, %v; want error %q", len(v), err, want)
	}
}
