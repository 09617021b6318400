package static_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/static"
)

func parse(decode func(any) error) (discovery.Options, error) {
	f, ok := discovery.Lookup(static.Type)
	if !ok {
		panic("static adapter not registered")
	}
	return f.Parse(decode)
}

// fileHarness keeps the services in memory and writes them to the file the
// registry polls, as an operator editing the file would.
type fileHarness struct {
	mu       sync.Mutex
	path     string
	services map[string]map[string]discovery.Instance
}

func (h *fileHarness) write(t *testing.T) {
	t.Helper()
	fc := map[string]map[string][]map[string]any{"services": {}}
	for svc, byID := range h.services {
		list := []map[string]any{}
		for _, in := range byID {
			list = append(list, map[string]any{"id": in.ID, "address": in.Address, "port": in.Port, "weight": in.Weight, "metadata": in.Metadata})
		}
		fc["services"][svc] = list
	}
	data, err := yaml.Marshal(fc)
	if err != nil {
		t.Fatal(err)
	}
	tmp := h.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, h.path); err != nil {
		t.Fatal(err)
	}
}

func openFile(t *testing.T, path string) discovery.Registry {
	t.Helper()
	opts, err := parse(func(v any) error {
		o := v.(*static.Options)
		o.File, o.PollInterval = path, 10*time.Millisecond
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestFileConformance(t *testing.T) {
	h := &fileHarness{path: filepath.Join(t.TempDir(), "instances.yaml"), services: map[string]map[string]discovery.Instance{}}
	h.write(t)
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry { return openFile(t, h.path) },
		Register: func(t *testing.T, svc string, in discovery.Instance) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.services[svc] == nil {
				h.services[svc] = map[string]discovery.Instance{}
			}
			h.services[svc][in.ID] = in
			h.write(t)
		},
		Deregister: func(t *testing.T, svc, id string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(h.services[svc], id)
			h.write(t)
		},
		Restart: func(*testing.T) {}, // a file has no server to restart
	})
}

func TestInlineServices(t *testing.T) {
	cfg := `
services:
  users:
    - {address: 127.0.0.1, port: 8081}
    - {id: b, address: "127.0.0.1:8082", weight: 0, metadata: {canary: "true"}}
    - {address: 127.0.0.1, port: 8083, healthy: false}
`
	opts, err := discoverytest.Parse(t, static.Type, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	w, _ := reg.Watch(context.Background(), "users")
	set, err := w.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []discovery.Instance{
		{ID: "127.0.0.1:8081", Address: "127.0.0.1", Port: 8081, Weight: 1, Healthy: true},
		{ID: "127.0.0.1:8083", Address: "127.0.0.1", Port: 8083, Weight: 1, Healthy: false},
		{ID: "b", Address: "127.0.0.1", Port: 8082, Weight: 0, Healthy: true, Metadata: map[string]string{"canary": "true"}},
	}
	if !discovery.EqualSets(set, want) {
		t.Fatalf("got %s\nwant %s", discoverytest.Describe(set), discoverytest.Describe(want))
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"missing port", "services: {a: [{address: 10.0.0.1}]}", "services.a[0].port: missing; set port, or write the address as host:port"},
		{"port out of range", "services: {a: [{address: 10.0.0.1, port: 70000}]}", "port: 70000"},
		{"missing address", "services: {a: [{port: 80}]}", "services.a[0].address: missing"},
		{"bad port in address", "services: {a: [{address: 'h:x'}]}", `bad port "x"`},
		{"conflicting ports", "services: {a: [{address: 'h:80', port: 81}]}", `services.a[0].port: 81, but address "h:80" carries port 80; drop one of them`},
		{"duplicate id", "services: {a: [{address: h, port: 1}, {address: h, port: 1}]}", `services.a[1]: duplicate id "h:1"`},
		{"both sources", "{file: x.yaml, services: {a: [{address: h, port: 1}]}}", "either services or file"},
		{"negative poll", "{file: x.yaml, poll_interval: -1s}", "poll_interval"},
		{"poll without file", "{poll_interval: 5s, services: {a: [{address: h, port: 1}]}}", "poll_interval: 5s, but file is not set; poll_interval is how often file is checked: set file, or remove poll_interval"},
		{"poll alone", "{poll_interval: 1s}", "poll_interval: 1s, but file is not set"},
		{"unknown field", "{servises: {}}", "line 1, column 2: servises: unknown field; did you mean services?"},
		{"wrong types", "services: {a: [{address: h, port: x, weight: -1}]}", `line 1, column 35: services.a[0].port: "x" is not a number` + "\n" +
			"line 1, column 46: services.a[0].weight: -1 is out of range; want 0 to 4294967295"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := discoverytest.Parse(t, static.Type, tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%s) = %v; want an error containing %q", tc.doc, err, tc.want)
			}
		})
	}
}

// poll_interval defaults for a file only: the options of a static list
// (as the config view renders them) parse again.
func TestPollIntervalDefault(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want time.Duration
	}{
		{"{file: x.yaml}", static.DefaultPollInterval},
		{"{file: x.yaml, poll_interval: 5s}", 5 * time.Second},
		{"{services: {a: [{address: h, port: 1}]}}", 0},
		{"{services: {a: [{address: h, port: 1}]}, poll_interval: 0s}", 0},
	} {
		o, err := discoverytest.Parse(t, static.Type, tc.doc)
		if err != nil {
			t.Fatalf("Parse(%s): %v", tc.doc, err)
		}
		if got := o.(*static.Options).PollInterval; got != tc.want {
			t.Errorf("Parse(%s): poll_interval %v; want %v", tc.doc, got, tc.want)
		}
	}
}

func TestBadFileKeepsLastGoodSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.yaml")
	if err := os.WriteFile(path, []byte("services: {a: [{address: 127.0.0.1, port: 1}]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := openFile(t, path)
	defer reg.Close()
	w, _ := reg.Watch(context.Background(), "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if set, err := w.Next(ctx); err != nil || len(set) != 1 {
		t.Fatalf("first set = %v, %v", set, err)
	}
	if err := os.WriteFile(path, []byte("services: {a: [{address: 127.0.0.1, port: 0}]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := w.Next(ctx)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "services.a[0].port: missing") {
		t.Fatalf("Next after a bad edit = %v; want an error naming the file and the field", err)
	}
	// Fixing the file brings a new set; nothing in between emptied it.
	if err := os.WriteFile(path, []byte("services: {a: [{address: 127.0.0.1, port: 1}, {address: 127.0.0.1, port: 2}]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := discoverytest.WaitFor(t, w, 5*time.Second, "two instances", func(s []discovery.Instance) bool { return len(s) == 2 })
	if len(set) != 2 {
		t.Fatal(set)
	}
}

func TestMissingFileReportsErrorFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.yaml")
	reg := openFile(t, path)
	defer reg.Close()
	w, _ := reg.Watch(context.Background(), "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.Next(ctx); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("first Next on a missing file = %v; want a not-exist error", err)
	}
	if err := os.WriteFile(path, []byte("services: {a: [{address: 127.0.0.1, port: 1}]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitFor(t, w, 5*time.Second, "the file's instance", func(s []discovery.Instance) bool { return len(s) == 1 })
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("services: {a: [{address: 127.0.0.1, port: 1, weight: 3, metadata: {k: v}}]}"))
	f.Add([]byte("services: {a: [{address: '[::1]:80'}]}"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := static.ParseFile("f.yaml", data)
		if err != nil {
			return
		}
		for svc, set := range m {
			for _, in := range set {
				if verr := in.Validate(); verr != nil {
					t.Fatalf("accepted invalid instance in %s: %v", svc, verr)
				}
			}
		}
	})
}

// twoInstances is a static file with instances a and b of svc.
const twoInstances = "services:\n  svc:\n    - {id: a, address: 127.0.0.1, port: 8081}\n    - {id: b, address: 127.0.0.1, port: 8082}\n"

// firstSet opens a watcher of svc and returns it once it has the file's
// first set of want instances.
func firstSet(t *testing.T, reg discovery.Registry, want int) discovery.Watcher {
	t.Helper()
	w, err := reg.Watch(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if set, err := w.Next(ctx); err != nil || len(set) != want {
		t.Fatalf("first set = %s, %v; want %d instances", discoverytest.Describe(set), err, want)
	}
	return w
}

// A file truncated in place (`cat new > instances.yaml` caught between
// the truncation and the write, or a writer that stopped there) is never
// published as an empty set: an empty file is an error, the upstream
// keeps its last good set, stale.
func TestTruncatedFileKeepsLastGoodSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	if err := os.WriteFile(path, []byte(twoInstances), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := openFile(t, path)
	defer reg.Close()
	w := firstSet(t, reg, 2)
	for _, empty := range []string{"", " \n\t\n", "# being written\n"} {
		if err := os.WriteFile(path, []byte(empty), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		set, err := w.Next(ctx)
		cancel()
		if err == nil {
			t.Fatalf("file holding %q published %s; want an error and the last set kept", empty, discoverytest.Describe(set))
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("file holding %q: error %v; want one naming the file and saying it is empty", empty, err)
		}
		// Written whole again: the set is fresh again (it was kept).
		if err := os.WriteFile(path, []byte(twoInstances), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		set, err = w.Next(ctx)
		cancel()
		if err != nil || len(set) != 2 {
			t.Fatalf("file written whole again after %q: Next = %s, %v; want the 2 instances", empty, discoverytest.Describe(set), err)
		}
	}
	// services: {} still says "no instances" on purpose.
	if err := os.WriteFile(path, []byte("services: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitFor(t, w, 5*time.Second, "no instances", func(s []discovery.Instance) bool { return len(s) == 0 })
}

// A file rewritten in place in two writes 50 ms apart (a slow writer, an
// editor, config management) is applied once it has settled: the half
// written first, which parses, is never published, nor is the empty file
// between the truncation and the first write.
func TestFileWrittenInTwoStepsIsNotPublishedHalfWay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	if err := os.WriteFile(path, []byte(twoInstances), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := openFile(t, path)
	defer reg.Close()
	w := firstSet(t, reg, 2)
	for round := range 3 {
		var first, rest strings.Builder
		first.WriteString("services:\n  svc:\n")
		for i := range 6 {
			b := &first
			if i >= 3 {
				b = &rest
			}
			fmt.Fprintf(b, "    - {id: r%d-%d, address: 127.0.0.1, port: %d}\n", round, i, 9000+i)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(first.String()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if _, err := f.WriteString(rest.String()); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		set, err := w.Next(ctx)
		cancel()
		if err != nil || len(set) != 6 || set[0].ID != fmt.Sprintf("r%d-0", round) {
			t.Fatalf("round %d: after a write in two steps, Next = %s, %v; want the 6 instances of the whole file", round, discoverytest.Describe(set), err)
		}
	}
}

// A file that exists at start gives the first set at once: Open reads it
// (and lets it settle) before it returns, so the first Watch has it
// without waiting for a poll.
func TestFileAtStartIsTheFirstSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	if err := os.WriteFile(path, []byte(twoInstances), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := discoverytest.Parse(t, static.Type, fmt.Sprintf("{file: %q, poll_interval: 1h}", path))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	reg, err := opts.Open(discovery.Env{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	t.Logf("Open took %v", time.Since(start))
	w, _ := reg.Watch(context.Background(), "svc")
	defer w.Stop()
	set, ok, err := w.(discovery.Poller).Poll()
	if !ok || err != nil || len(set) != 2 {
		t.Fatalf("first Poll after Open = %s, %v, %v; want the file's 2 instances at once", discoverytest.Describe(set), ok, err)
	}
}

// A file that is empty at start is an error, as a missing one is: the
// upstream is not synced (it waits, then serves its on-disk snapshot)
// rather than synced to no instances.
func TestEmptyFileAtStartIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := openFile(t, path)
	defer reg.Close()
	w, _ := reg.Watch(context.Background(), "svc")
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if set, err := w.Next(ctx); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("first Next on an empty file = %s, %v; want an error saying it is empty", discoverytest.Describe(set), err)
	}
	if err := os.WriteFile(path, []byte(twoInstances), 0o644); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitFor(t, w, 5*time.Second, "the file's instances", func(s []discovery.Instance) bool { return len(s) == 2 })
}
