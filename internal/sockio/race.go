//go:build race

package sockio

import (
	"runtime"
	"unsafe"
)

// The race detector learns what the kernel read and wrote, as it does
// for package syscall's Read and Write.

func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}

func raceWrite(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
}
