package tlsfiles

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// config runs o.Config(dir) and fails the test if it has not returned
// within two seconds (os.ReadFile blocked on a named pipe for good).
func config(t *testing.T, o Options, dir string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := o.Config(dir)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Second):
		t.Fatalf("Config(%+v) blocked", o)
		return nil
	}
}

// A named pipe or a device in place of ca_file, cert_file or key_file, or
// one of them over regularfile.MaxSize, is an error at once that names the
// field and the file and says what is wrong with it.
func TestConfigRefusesFilesThatAreNotSmallRegularFiles(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.pem")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, regularfile.MaxSize+1); err != nil { // sparse
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo, tooLarge := "not a regular file but a named pipe", "16777217 bytes is over the limit of 16 MiB"
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{CAFile: "fifo"}, "ca_file: read " + filepath.Join(dir, "fifo") + ": " + fifo},
		{Options{CAFile: "/dev/zero"}, "ca_file: read /dev/zero: not a regular file but a device"},
		{Options{CAFile: "huge.pem"}, "ca_file: read " + huge + ": " + tooLarge},
		{Options{CertFile: "fifo", KeyFile: "cert.pem"}, "cert_file/key_file: read " + filepath.Join(dir, "fifo") + ": " + fifo},
		{Options{CertFile: "cert.pem", KeyFile: "fifo"}, "cert_file/key_file: read " + filepath.Join(dir, "fifo") + ": " + fifo},
		{Options{CertFile: "huge.pem", KeyFile: "cert.pem"}, "cert_file/key_file: read " + huge + ": " + tooLarge},
		{Options{CertFile: "cert.pem", KeyFile: "huge.pem"}, "cert_file/key_file: read " + huge + ": " + tooLarge},
	} {
		if err := config(t, tc.o, dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Config(%+v) = %v; want %q", tc.o, err, tc.want)
		}
	}
}
