package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/pkg/config"
)

// demoRequests is how many requests the demo sends through Remora.
const demoRequests = 100

// runDemo starts three demo backends and Remora in front of them on the
// static registry, sends a burst of requests through it and prints how they
// spread. With serve it then keeps running until ctx ends.
func runDemo(ctx context.Context, out io.Writer, log *logrus.Logger, serve bool) error {
	type backend struct {
		name, addr string
		canary     bool
	}
	backends := []*backend{{name: "stable-1"}, {name: "stable-2"}, {name: "canary-1", canary: true}}
	for _, b := range backends {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		b.addr = ln.Addr().String()
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", b.name)
			fmt.Fprintf(w, "hello from %s (%s %s)\n", b.name, r.Method, r.URL.Path)
		}), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}

	adminAddr, outboundAddr := freeOr(config.DefaultAdminAddress), freeOr(config.DefaultOutboundAddress)
	var yml strings.Builder
	fmt.Fprintf(&yml, "admin: {address: %q}\nlisteners:\n  - {name: outbound, address: %q}\n", adminAddr, outboundAddr)
	yml.WriteString("registries:\n  - name: demo\n    type: static\n    static:\n      services:\n        user-service:\n")
	for _, b := range backends {
		fmt.Fprintf(&yml, "          - {id: %s, address: %q, metadata: {version: %s, canary: %q}}\n",
			b.name, b.addr, map[bool]string{false: "v1", true: "v2"}[b.canary], fmt.Sprint(b.canary))
	}
	yml.WriteString("upstreams:\n  - name: user-service\n    balancer: round_robin\n    canary: {weight: 20}\n")
	cfg, err := config.Parse([]byte(yml.String()), ".")
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	a, err := startApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.shutdown(context.Background()) //nolint:errcheck // best effort at exit

	adminURL, proxyAddr := "http://"+a.addr("admin"), a.addr("outbound")
	if err := waitReady(ctx, adminURL+"/readyz"); err != nil {
		return err
	}
	fmt.Fprintf(out, "Remora demo: 3 backends (2 stable, 1 labelled canary=true) behind Remora on %s\n", proxyAddr)
	fmt.Fprintf(out, "The canary gets 20%% of traffic (canary: {weight: 20}); the stable pool is round robin.\n")
	fmt.Fprintf(out, "Sending %d requests with Host: user-service ...\n\n", demoRequests)

	client := &http.Client{Timeout: 5 * time.Second}
	counts := map[string]int{}
	for range demoRequests {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxyAddr+"/hello", nil)
		req.Host = "user-service"
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("request through Remora: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("request through Remora: status %s", resp.Status)
		}
		counts[resp.Header.Get("X-Backend")]++
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tADDRESS\tLABELS\tREQUESTS\t")
	for _, b := range backends {
		fmt.Fprintf(tw, "%s\t%s\tcanary=%v\t%d\t%s\n", b.name, b.addr, b.canary, counts[b.name], strings.Repeat("#", counts[b.name]))
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d requests, %d backends reached, 0 errors.\n", demoRequests, len(counts))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxyAddr+"/hello", nil)
	req.Host = "user-service"
	req.Header.Set("X-Canary", "always")
	if resp, err := client.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "With the header x-canary: always the request went to %s.\n", resp.Header.Get("X-Backend"))
	}
	if !serve {
		fmt.Fprintf(out, "Run `go run ./cmd/remora demo --serve` to keep it running and try it with curl.\n")
		return nil
	}
	fmt.Fprintf(out, "\nRemora keeps running. Try:\n  curl -H 'Host: user-service' http://%s/hello\n  curl http://%s/upstreams\nPress Ctrl-C to stop.\n", proxyAddr, adminURL[len("http://"):])
	<-ctx.Done()
	return nil
}

// freeOr returns addr when it can be bound now, else an ephemeral port on
// the same host.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	ln.Close()
	return addr
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("remora not ready after 10s (%s)", url)
}
