package pageout

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Binary asks the kernel to reclaim the resident pages of the running
// executable's read-only mappings (text and read-only data), and returns
// how many bytes of mappings it asked for. A kernel without
// MADV_PAGEOUT refuses it: the error says so, and nothing changed. It is
// safe to call at any time, from any goroutine.
func Binary() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var asked int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := readOnlyMappingOf(sc.Text(), exe)
		if !ok {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno != 0 {
			return asked, fmt.Errorf("madvise(MADV_PAGEOUT) on %s: %w", exe, errno)
		}
		asked += int64(end - start)
	}
	return asked, sc.Err()
}

// readOnlyMappingOf parses a line of /proc/self/maps ("start-end perms
// offset dev inode path") and reports the mapping's range when it maps
// path without write permission.
func readOnlyMappingOf(line, path string) (start, end uint64, ok bool) {
	f := strings.SplitN(line, " ", 6)
	if len(f) < 6 || strings.TrimLeft(f[5], " ") != path || len(f[1]) < 2 || f[1][1] == 'w' {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return 0, 0, false
	}
	return start, end, true
}
