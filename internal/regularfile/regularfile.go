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

// MaxSize is the size cap of the files Remora reads with ReadFileMax
// unless it has a reason for another: its secrets, certificates, static
// registry files and the like are a few kilobytes; 16 MiB leaves room for
// any of them and still keeps a runaway file from exhausting memory.
const MaxSize = 16 << 20

// ReadFile is os.ReadFile for a regular file. It opens path without
// blocking (a named pipe with no writer blocks an ordinary open) and
// refuses anything but a regular file, saying what it is; a symbolic link
// is followed (a Kubernetes Secret volume's files are links).
func ReadFile(path string) ([]byte, error) {
	return read(path, -1)
}

// ReadFileMax is ReadFile for a file of at most max bytes: a larger one
// (or one that grows past max while it is read) is refused, with an error
// that names it and its size, before it is read into memory.
func ReadFileMax(path string, max int64) ([]byte, error) {
	return read(path, max)
}

// Check reports whether ReadFileMax(path, max) would find a regular file
// of at most max bytes at path, without reading it: for a path handed to
// a library that reads it itself (and would block on a named pipe). The
// file may of course change between the check and the read.
func Check(path string, max int64) error {
	f, err := open(path, max)
	if err != nil {
		return err
	}
	return f.Close()
}

// open opens path without blocking and returns it if it is a regular
// file of at most max bytes (max < 0: any size).
func open(path string, max int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("not a regular file but %s", kind(st.Mode()))}
	}
	if max >= 0 && st.Size() > max {
		f.Close()
		return nil, tooLarge(path, st.Size(), max)
	}
	return f, nil
}

func read(path string, max int64) ([]byte, error) {
	f, err := open(path, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if max < 0 {
		return io.ReadAll(f)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("grew past the limit of %s while read", limit(max))}
	}
	return data, err
}

func tooLarge(path string, size, max int64) error {
	return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%d bytes is over the limit of %s", size, limit(max))}
}

// limit spells a size cap, in MiB when it is a whole number of them.
func limit(n int64) string {
	if n > 0 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
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
