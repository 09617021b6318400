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

// drainCommand is "remora drain", the preStop hook of the native sidecar
// (the distroless image has no shell or curl): an entry of commands.
var drainCommand = &command{
	name: "drain", args: "[-c FILE] [--wait D]",
	summary: "tell a running Remora to drain (a preStop hook)",
	help: "POST /drain on the admin API of the Remora running beside: /readyz turns off for good and the\n" +
		"register: registration is withdrawn while it keeps serving. With -c, the admin address and token\n" +
		"come from that config file (an address that binds every interface is reached on 127.0.0.1);\n" +
		"--admin and --token-file override them.\n" +
		"Exit status 0 once Remora drains, 1 when it could not be told.",
	flags: func(fs *flag.FlagSet, o *cmdOpts) {
		configFlag(fs, o)
		fs.String("admin", "", "the admin address, host:port (default: the config's, else 127.0.0.1:15000)")
		fs.String("token-file", "", "a file with the admin token (default: the config's token)")
		fs.Duration("wait", 0, "wait this long after draining before returning (holds back the SIGTERM)")
		fs.Duration("timeout", 5*time.Second, "how long to wait for the admin API's answer")
	},
	run: cmdDrain,
}

func cmdDrain(o *cmdOpts, args []string, stdout, stderr io.Writer) int {
	if !noArgs("drain", args, stderr) {
		return 2
	}
	flagValue := func(name string) string { return o.fs.Lookup(name).Value.String() }
	wait, _ := time.ParseDuration(flagValue("wait"))
	timeout, _ := time.ParseDuration(flagValue("timeout"))
	return drain(o.config, flagValue("admin"), flagValue("token-file"), wait, timeout, stdout, stderr)
}

// drain posts /drain to the admin API found through cfgPath, adminAddr and
// tokenFile, and returns the exit code.
func drain(cfgPath, adminAddr, tokenFile string, wait, timeout time.Duration, stdout, stderr io.Writer) int {
	addr, token := "127.0.0.1:15000", ""
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "remora drain:", err)
			return 1
		}
		addr, token = cfg.Admin.Address, cfg.Admin.Token
	}
	if adminAddr != "" {
		addr = adminAddr
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
	if wait > 0 {
		time.Sleep(wait)
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
