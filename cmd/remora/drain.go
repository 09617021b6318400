package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/remora-mesh/remora/pkg/config"
)

const drainUsage = `Usage:
  remora drain -c FILE [--wait DURATION]
  remora drain [--admin HOST:PORT] [--token-file FILE] [--wait DURATION]

Tells a running Remora to drain: POST /drain on its admin API turns /readyz
off for good while it keeps serving. With -c, the admin address and token
come from that config file (an address that binds every interface is
reached on 127.0.0.1). --wait then waits that long before returning, so a
preStop hook holds back the SIGTERM. Exit status 0 when Remora drains, 1
when it could not be told.
`

// runDrain is "remora drain": the preStop hook of the native sidecar (the
// distroless image has no shell or curl). It returns the exit code.
func runDrain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("remora drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, drainUsage) }
	cfgPath := fs.String("c", "", "config file of the running Remora (admin address and token)")
	fs.StringVar(cfgPath, "config", "", "config file of the running Remora")
	adminAddr := fs.String("admin", "", "admin address, host:port (default 127.0.0.1:15000, or the config's)")
	tokenFile := fs.String("token-file", "", "file with the admin token (default: the config's)")
	wait := fs.Duration("wait", 0, "wait this long after draining before returning")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the admin API's answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "remora drain: unexpected argument %q\n%s", fs.Arg(0), drainUsage)
		return 2
	}
	addr, token := "127.0.0.1:15000", ""
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "remora drain:", err)
			return 1
		}
		addr, token = cfg.Admin.Address, cfg.Admin.Token
	}
	if *adminAddr != "" {
		addr = *adminAddr
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "remora drain: --token-file:", err)
			return 1
		}
		token = strings.TrimSpace(string(b))
	}
	addr, err := dialable(addr)
	if err != nil {
		fmt.Fprintln(stderr, "remora drain:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/drain", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "remora drain: %v\n", err)
		return 1
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	var ans struct {
		Draining bool   `json:"draining"`
		Error    string `json:"error"`
	}
	_ = json.Unmarshal(body, &ans)
	if resp.StatusCode != http.StatusOK || !ans.Draining {
		msg := ans.Error
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		fmt.Fprintf(stderr, "remora drain: %s answered %s: %s\n", addr, resp.Status, msg)
		return 1
	}
	fmt.Fprintf(stdout, "remora drain: %s is draining (readiness off, still serving)\n", addr)
	if *wait > 0 {
		time.Sleep(*wait)
	}
	return 0
}

// dialable turns an admin bind address into one to dial: a host that binds
// every interface (empty, 0.0.0.0, ::) is reached on 127.0.0.1.
func dialable(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin address %q is not host:port", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
