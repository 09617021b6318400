// Package shortage tells Remora's own shortage of a resource from a
// node's failure. A dial that failed because Remora is out of file
// descriptors (EMFILE, ENFILE), kernel memory (ENOBUFS, ENOMEM) or
// ephemeral ports (EADDRNOTAVAIL: connect cannot assign a local address)
// says nothing about the node it was for: every node would fail the same
// way, and none must be blamed (ejected, marked down) for it.
package shortage

import (
	"errors"
	"net"
	"syscall"
)

// Is reports whether err is a dial's error that says Remora itself ran
// out of something, whatever the node.
func Is(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL:
		return true
	}
	return false
}
