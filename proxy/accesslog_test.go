package proxy_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// Every answer gets one access log line, Remora's own included, with its
// reason; Remora's own answers write nothing to the process log.
func TestAccessLogForEveryAnswer(t *testing.T) {
	procLog, proc := logtest.NewNullLogger()
	procLog.SetLevel(logrus.InfoLevel)
	accessLog, access := logtest.NewNullLogger()
	reg := discoverytest.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var ups []*upstream.Upstream
	for _, name := range []string{"users", "empty"} {
		u := upstream.New(upstream.Config{Name: name})
		w, _ := reg.Watch(ctx, name)
		go u.Run(ctx, w)
		ups = append(ups, u)
	}
	p := proxy.New(proxy.Options{Log: logrus.NewEntry(procLog), AccessLog: logrus.NewEntry(accessLog)})
	p.SetTable(upstream.NewTable(ups...))
	t.Cleanup(p.Close)
	b := newBackend(t, "b", nil)
	reg.Set("users", b.instance())
	reg.Set("empty", discovery.Instance{ID: "drained", Address: "127.0.0.1", Port: 1, Weight: 0, Healthy: true})
	front := serveFront(t, p.Listener("out", proxy.ListenerOptions{RequestID: true}))
	for _, u := range ups {
		for u.Snapshot().Version == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	proc.Reset()
	for _, tc := range []struct {
		host         string
		status       int
		reason, flag string
	}{
		{"users", 200, "", ""},
		{"nobody", 404, "no_route", "NR"},
		{"empty", 503, "no_healthy_node", "UH"},
	} {
		access.Reset()
		req, _ := http.NewRequest(http.MethodGet, "http://"+front.Listener.Addr().String()+"/x", nil)
		req.Host = tc.host
		resp, _ := do(t, req)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: %d; want %d", tc.host, resp.StatusCode, tc.status)
		}
		entries := access.AllEntries()
		if len(entries) != 1 {
			t.Fatalf("%s: %d access log lines; want 1", tc.host, len(entries))
		}
		f := entries[0].Data
		if f["status"] != tc.status || (tc.reason != "" && (f["reason"] != tc.reason || f["flag"] != tc.flag)) || tc.reason == "" && f["reason"] != nil ||
			f["client"] == nil || f["path"] != "/x" {
			t.Fatalf("%s: access log fields %v", tc.host, f)
		}
		if tc.status == 200 && (f["request_id"] == nil || f["upstream_addr"] == nil || f["bytes_out"] == nil || f["upstream_ms"] == nil) {
			t.Fatalf("%s: access log fields %v", tc.host, f)
		}
	}
	if n := len(proc.AllEntries()); n != 0 {
		t.Fatalf("%d process log lines for three requests: %v", n, proc.AllEntries()[0].Message)
	}
}
