package static_test

import (
	"context"
	"errors"
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
