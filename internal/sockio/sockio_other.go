//go:build !linux

package sockio

import "syscall"

// Outside Linux a Socket is its net.Conn (see Init).
const supported = false

// Send is write(2): one call, which may write less than p.
func Send(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errnoOf(err)
}

// Recv is read(2): one call; 0 bytes and no error is the peer's end.
func Recv(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errnoOf(err)
}

// Peek is a recv(2) with MSG_PEEK that does not wait: one call, which
// leaves what it finds in the socket; 0 bytes and no error is the peer's
// end, EAGAIN nothing there.
func Peek(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, err := syscall.Recvfrom(int(fd), p, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errno, ok := err.(syscall.Errno); ok {
		return errno
	}
	return syscall.EINVAL
}
