package sockio

import (
	"syscall"
	"unsafe"
)

const supported = true

// Send is send(2) on a non-blocking socket, without SIGPIPE: one call,
// which may write less than p. For a RawConn's callback.
//
// Send and Recv make the call raw, without telling the scheduler: on a
// non-blocking socket it returns as soon as the kernel has copied what it
// can, so there is nothing to hand the processor over for, and the
// bookkeeping around a scheduled call (entersyscall, exitsyscall) was
// about 1% of a proxied request's CPU. Never use them on a socket that may
// block.
func Send(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	raceRead(p)
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// Recv is recv(2) on a non-blocking socket: one call; 0 bytes and no
// error is the peer's end. For a RawConn's callback.
func Recv(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	raceWrite(p[:n])
	return int(n), 0
}

// Peek is a recv(2) with MSG_PEEK that does not wait: one call, which
// leaves what it finds in the socket; 0 bytes and no error is the peer's
// end, EAGAIN nothing there. For a RawConn's callback.
func Peek(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	raceWrite(p[:n])
	return int(n), 0
}
