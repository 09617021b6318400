// Package regularfiletest makes the files that package regularfile
// refuses, for the tests of the readers that use it.
package regularfiletest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/remora-mesh/remora/internal/regularfile"
)

// Refusal is a file a reader must refuse at once, and the error it must
// give (to be found in the reader's error, after its own prefix).
type Refusal struct {
	Path, Want string
}

// Refusals makes, in a new temporary directory of t's, a named pipe and a
// file one byte over regularfile.MaxSize (sparse: it takes no disk space),
// and returns them with /dev/zero (a device) and the error each must
// give. A reader that blocks on one of them blocks for good: call it with
// a bound.
func Refusals(t testing.TB) []Refusal {
	t.Helper()
	dir := t.TempDir()
	fifo, huge := filepath.Join(dir, "fifo"), filepath.Join(dir, "huge")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, regularfile.MaxSize+1); err != nil {
		t.Fatal(err)
	}
	return []Refusal{
		{fifo, "read " + fifo + ": not a regular file but a named pipe"},
		{"/dev/zero", "read /dev/zero: not a regular file but a device"},
		{huge, "read " + huge + ": 16777217 bytes is over the limit of 16 MiB"},
	}
}
