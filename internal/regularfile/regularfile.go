// Package regularfile reads files that Remora expects to be regular files
// (its config, the secrets and certificates it names, the on-disk
// snapshots): a named pipe, a device or a socket put in one's place would
// block the reader for good, and with it the goroutine that reads (the
// serve loop, an upstream's controller) and the shutdown that waits for
// it.
package regularfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ReadFile is os.ReadFile for a regular file. It opens path without
// blocking (a named pipe with no writer blocks an ordinary open) and
// refuses anything but a regular file, saying what it is; a symbolic link
// is followed (a Kubernetes Secret volume's files are links).
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("not a regular file but %s", kind(st.Mode()))}
	}
	return io.ReadAll(f)
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a " + m.Type().String() + " file"
}
