package pageout

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Binary unmaps the resident pages of the running executable's read-only
// file mappings (text and read-only data) from the process, and returns
// how many bytes of mappings it unmapped. A mapping that holds anonymous
// pages (copies the process wrote, such as relocated read-only data of a
// dynamically linked binary) is left alone: unmapping would lose them.
// It is safe to call at any time, from any goroutine.
func Binary() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	spans, err := fileOnlyMappings(f, exe)
	if err != nil {
		return 0, err
	}
	var done int64
	for _, s := range spans {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(s.start), uintptr(s.end-s.start), unix.MADV_DONTNEED); errno != 0 {
			return done, fmt.Errorf("madvise(MADV_DONTNEED) on %s: %w", exe, errno)
		}
		done += int64(s.end - s.start)
	}
	return done, nil
}

// span is an address range, [start, end).
type span struct{ start, end uint64 }

// fileOnlyMappings reads /proc/PID/smaps and returns the read-only
// mappings of path that hold no anonymous pages.
func fileOnlyMappings(r io.Reader, path string) ([]span, error) {
	var (
		spans []span
		cur   span
		take  bool // cur maps path read-only, and no anonymous page was seen yet
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if start, end, perms, p, ok := parseMapping(line); ok {
			if take {
				spans = append(spans, cur)
			}
			cur, take = span{start, end}, p == path && len(perms) >= 2 && perms[1] != 'w'
			continue
		}
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok && take {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			take = err == nil && kb == 0 // unreadable: leave the mapping alone
		}
	}
	if take {
		spans = append(spans, cur)
	}
	return spans, sc.Err()
}

// parseMapping parses the head line of a mapping in /proc/PID/maps or
// smaps ("start-end perms offset dev inode [path]").
func parseMapping(line string) (start, end uint64, perms, path string, ok bool) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return 0, 0, "", "", false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, "", "", false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return 0, 0, "", "", false
	}
	// The path is the rest of the line after the fifth field (the inode),
	// with any spaces inside it kept.
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			rest = ""
			break
		}
		rest = rest[i:]
	}
	return start, end, f[1], strings.TrimLeft(rest, " "), true
}
