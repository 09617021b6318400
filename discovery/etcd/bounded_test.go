package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

// An answer of etcd is bounded: a huge value (a bug, a hostile write) was
// read whole, at every change, until the sidecar ran out of memory. A
// range over the bound fails as a registry error, naming the size; the
// upstream keeps its nodes, stale.
func TestAnswerIsBounded(t *testing.T) {
	defer func(old int) { maxAnswerBytes = old }(maxAnswerBytes)
	maxAnswerBytes = 64 << 10
	srv := etcdtest.Start(t)
	srv.Put(DefaultPrefix+"/small/a", "127.0.0.1:9001")
	big := `{"address": "127.0.0.1", "port": 9002, "metadata": {"k": "` + strings.Repeat("x", 100<<10) + `"}}`
	srv.Put(DefaultPrefix+"/big/a", big)
	f, _ := discovery.Lookup(Type)
	opts, err := f.Parse(func(v any) error {
		v.(*Options).Endpoints = []string{srv.Endpoint()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{Name: "e"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	next := func(svc string) ([]discovery.Instance, error) {
		w, err := reg.Watch(context.Background(), svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			set, err := w.Next(ctx)
			if err == nil || strings.Contains(err.Error(), "larger than max") || ctx.Err() != nil {
				return set, err
			}
		}
	}
	if set, err := next("small"); err != nil || len(set) != 1 {
		t.Fatalf("a small service: %v, %v", set, err)
	}
	if set, err := next("big"); err == nil || !strings.Contains(err.Error(), "larger than max") {
		t.Fatalf("a service of a %d-byte value with a %d-byte bound: %d instances, %v; want the error naming the size", len(big), maxAnswerBytes, len(set), err)
	}
}
