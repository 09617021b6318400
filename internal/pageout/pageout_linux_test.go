package pageout

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadOnlyMappingOf(t *testing.T) {
	const exe = "/usr/local/bin/remora"
	for _, tc := range []struct {
		line       string
		start, end uint64
		ok         bool
	}{
		{"00400000-00c5e000 r-xp 00000000 fd:01 1234                               /usr/local/bin/remora", 0x400000, 0xc5e000, true},
		{"00c5e000-01a00000 r--p 0085e000 fd:01 1234                               /usr/local/bin/remora", 0xc5e000, 0x1a00000, true},
		{"01a00000-01a40000 rw-p 01600000 fd:01 1234                               /usr/local/bin/remora", 0, 0, false}, // data: written pages are anonymous
		{"c000000000-c000400000 rw-p 00000000 00:00 0 ", 0, 0, false},
		{"7f0000000000-7f0000001000 r--p 00000000 fd:01 99 /usr/lib/libc.so.6", 0, 0, false},
		{"00400000-00c5e000 r-xp 00000000 fd:01 1234 /usr/local/bin/remora (deleted)", 0, 0, false}, // another path
		{"00c5e000-00400000 r-xp 00000000 fd:01 1234 /usr/local/bin/remora", 0, 0, false},           // end before start
		{"zz-00c5e000 r-xp 00000000 fd:01 1234 /usr/local/bin/remora", 0, 0, false},
		{"00400000 r-xp 00000000 fd:01 1234 /usr/local/bin/remora", 0, 0, false},
		{"", 0, 0, false},
	} {
		start, end, ok := readOnlyMappingOf(tc.line, exe)
		if start != tc.start || end != tc.end || ok != tc.ok {
			t.Errorf("%q: %#x-%#x %v; want %#x-%#x %v", tc.line, start, end, ok, tc.start, tc.end, tc.ok)
		}
	}
}

func FuzzReadOnlyMappingOf(f *testing.F) {
	f.Add("00400000-00c5e000 r-xp 00000000 fd:01 1234 /bin/x", "/bin/x")
	f.Add("c000000000-c000400000 rw-p 00000000 00:00 0 ", "")
	f.Fuzz(func(t *testing.T, line, path string) {
		start, end, ok := readOnlyMappingOf(line, path)
		if ok && (end <= start || !strings.HasSuffix(line, path)) {
			t.Fatalf("%q: %#x-%#x accepted", line, start, end)
		}
	})
}

// rssFile reads the process's resident pages of files, in kB.
func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The test binary's own pages go back to the kernel: RssFile falls.
func TestBinaryGivesPagesBack(t *testing.T) {
	before := rssFile(t)
	n, err := Binary()
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("this kernel has no MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	t.Logf("RssFile %d kB → %d kB (%d bytes of mappings)", before, after, n)
	if n == 0 || after >= before {
		t.Fatalf("RssFile %d kB → %d kB after asking for %d bytes of mappings; want it lower", before, after, n)
	}
}
