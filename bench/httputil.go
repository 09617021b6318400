package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// runHTTPUtil is the reference point "plain Go": httputil.ReverseProxy with
// a tuned keep-alive transport and an atomic round robin, nothing else. It
// separates what net/http costs from what Remora adds on top
// (BENCH_PROXIES=haproxy,nginx,remora,httputil).
func runHTTPUtil(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: bench httputil LISTEN BACKEND,BACKEND,…")
	}
	nodes := strings.Split(args[1], ",")
	var next atomic.Uint64
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			n := nodes[next.Add(1)%uint64(len(nodes))]
			pr.SetURL(&url.URL{Scheme: "http", Host: n})
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}
