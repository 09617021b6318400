package pageout

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseMapping(t *testing.T) {
	for _, tc := range []struct {
		line        string
		start, end  uint64
		perms, path string
		ok          bool
	}{
		{"00400000-00c5e000 r-xp 00000000 fd:01 1234                               /usr/local/bin/remora", 0x400000, 0xc5e000, "r-xp", "/usr/local/bin/remora", true},
		{"00400000-00c5e000 r-xp 00000000 fd:01 0 /tmp/a b (deleted)", 0x400000, 0xc5e000, "r-xp", "/tmp/a b (deleted)", true},
		{"c000000000-c000400000 rw-p 00000000 00:00 0 ", 0xc000000000, 0xc000400000, "rw-p", "", true},
		{"c000000000-c000400000 rw-p 00000000 00:00 0", 0xc000000000, 0xc000400000, "rw-p", "", true},
		{"00c5e000-00400000 r-xp 00000000 fd:01 1234 /bin/x", 0, 0, "", "", false}, // end before start
		{"zz-00c5e000 r-xp 00000000 fd:01 1234 /bin/x", 0, 0, "", "", false},
		{"Anonymous:             0 kB", 0, 0, "", "", false},
		{"VmFlags: rd ex mr mw me", 0, 0, "", "", false},
		{"", 0, 0, "", "", false},
	} {
		start, end, perms, path, ok := parseMapping(tc.line)
		if start != tc.start || end != tc.end || perms != tc.perms || path != tc.path || ok != tc.ok {
			t.Errorf("%q: %#x-%#x %q %q %v; want %#x-%#x %q %q %v", tc.line, start, end, perms, path, ok, tc.start, tc.end, tc.perms, tc.path, tc.ok)
		}
	}
}

func TestFileOnlyMappings(t *testing.T) {
	const smaps = `00400000-00c5e000 r-xp 00000000 fd:01 1234 /bin/remora
Size:               8568 kB
Rss:                4000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw
00c5e000-01a00000 r--p 0085e000 fd:01 1234 /bin/remora
Anonymous:             0 kB
01a00000-01a10000 r--p 01600000 fd:01 1234 /bin/remora
Anonymous:            12 kB
01a10000-01a40000 rw-p 01610000 fd:01 1234 /bin/remora
Anonymous:             0 kB
01a40000-01a50000 r--p 00000000 fd:01 99 /lib/libc.so.6
Anonymous:             0 kB
01a50000-01a60000 r--p 00000000 fd:01 1234 /bin/remora
`
	got, err := fileOnlyMappings(strings.NewReader(smaps), "/bin/remora")
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0xc5e000}, {0xc5e000, 0x1a00000}, {0x1a50000, 0x1a60000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%x; want %x (not the one with anonymous pages, not the writable one, not another file's)", got, want)
	}
}

func FuzzParseMapping(f *testing.F) {
	f.Add("00400000-00c5e000 r-xp 00000000 fd:01 1234 /bin/x")
	f.Add("c000000000-c000400000 rw-p 00000000 00:00 0 ")
	f.Fuzz(func(t *testing.T, line string) {
		start, end, _, path, ok := parseMapping(line)
		if ok && (end <= start || !strings.HasSuffix(line, path)) {
			t.Fatalf("%q: %#x-%#x %q accepted", line, start, end, path)
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

// The test binary's own pages are unmapped (RssFile falls), and the
// process goes on running the code it unmapped.
func TestBinaryGivesPagesBack(t *testing.T) {
	before := rssFile(t)
	n, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	t.Logf("RssFile %d kB → %d kB (%d bytes of mappings)", before, after, n)
	if n == 0 || after >= before {
		t.Fatalf("RssFile %d kB → %d kB after unmapping %d bytes of mappings; want it lower", before, after, n)
	}
	if _, err := os.Getwd(); err != nil { // code and data mapped back
		t.Fatal(err)
	}
}
