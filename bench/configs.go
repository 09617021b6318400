package main

import (
	"fmt"
	"net"
	"strings"
)

// The three proxies get the same conditions: one worker (one thread, one
// process doing the work; GOMAXPROCS=1 for Remora), HTTP/1.1 keep-alive to
// the client and to the backends with a reused connection pool, round robin
// over the same three backends, no access log, no limit on requests per
// connection.

// upstreamHost is the Host header wrk sends: Remora routes by it; HAProxy
// and nginx ignore it.
const upstreamHost = "bench"

func haproxyConfig(listen string, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread 1
    maxconn 4096
    # no "log" line: logging off

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse always
    retries 2

frontend bench
    bind %s
    maxconn 4096
    default_backend nodes

backend nodes
    balance roundrobin
`, listen)
	for i, a := range backends {
		fmt.Fprintf(&b, "    server n%d %s\n", i+1, a)
	}
	return b.String()
}

// nginxConfig is for `nginx -p dir -e dir/error.log -c dir/nginx.conf`;
// every path it writes is under dir. nginx runs as one process (no master:
// the worker loop runs in the process the driver started, so it dies with
// the driver even on SIGKILL; one worker does the same work either way).
func nginxConfig(dir, listen string, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;

events {
    worker_connections 8192;
    use epoll;
}

http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    upstream nodes {
        # round robin is nginx's default
`, dir)
	for _, a := range backends {
		fmt.Fprintf(&b, "        server %s;\n", a)
	}
	fmt.Fprintf(&b, `        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 75s;
    }

    server {
        listen %s;
        location / {
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
`, listen)
	return b.String()
}

// remoraConfig is the equivalent Remora config: the static registry, one
// upstream named after the Host header, round robin, default proxy
// settings (keep-alive pool of 256 per node), logging at warn level (set on
// the command line; Remora writes no access log).
func remoraConfig(admin, listen string, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `admin: {address: %q}
listeners:
  - {name: outbound, address: %q}
registries:
  - name: bench
    type: static
    static:
      services:
        %s:
`, admin, listen, upstreamHost)
	for i, a := range backends {
		host, port, _ := net.SplitHostPort(a)
		fmt.Fprintf(&b, "          - {id: n%d, address: %q, port: %s}\n", i+1, host, port)
	}
	fmt.Fprintf(&b, `upstreams:
  - name: %s
    balancer: round_robin
`, upstreamHost)
	return b.String()
}
