package static

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// A panic in reading the file, in Open or in the poll's goroutine, made
// the process die. It is reported by the watchers as a bad file is (the
// last good set kept), logged once with its stack however often it comes
// again, and once reading no longer panics, the next poll applies the
// file.
func TestFilePanicIsAnErrorAndThePollGoesOn(t *testing.T) {
	tests := []struct {
		name   string
		atOpen bool // reading panics from the start; else after the first set
	}{
		{"in Open", true},
		{"while polling", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "instances.yaml")
			if err := os.WriteFile(path, []byte("services:\n  web:\n    - {address: 10.0.0.1, port: 80}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var panicking atomic.Bool
			panicking.Store(tc.atOpen)
			read := readFile
			readFile = func(name string) ([]byte, error) {
				if panicking.Load() {
					panic("injected: reading panicked")
				}
				return read(name)
			}
			t.Cleanup(func() { readFile = read })
			o := &Options{File: path, PollInterval: 10 * time.Millisecond}
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			logger, hook := logtest.NewNullLogger()
			reg, err := o.Open(discovery.Env{Name: "test", Log: logrus.NewEntry(logger)})
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			w, err := reg.Watch(context.Background(), "web")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			next := func() ([]discovery.Instance, error) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				set, err := w.Next(ctx)
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatal("Next did not return within 5s")
				}
				return set, err
			}
			if !tc.atOpen {
				if set, err := next(); err != nil || len(set) != 1 {
					t.Fatalf("first Next = %v, %v; want the file's instance", set, err)
				}
				panicking.Store(true)
			}
			set, err := next()
			var pe *panics.Error
			if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Next while reading panics = %v, %v; want a *panics.Error naming the file, no set", set, err)
			}
			time.Sleep(50 * time.Millisecond) // a few polls more, each panicking
			panicking.Store(false)
			if set, err := next(); err != nil || len(set) != 1 {
				t.Fatalf("once reading works again: Next = %v, %v; want the file's instance", set, err)
			}
			var logged []*logrus.Entry
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel {
					logged = append(logged, e)
				}
			}
			if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
				logged[0].Data["panic"] != "injected: reading panicked" {
				t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
			}
		})
	}
}
