package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
)

// The proxies get the same conditions: one worker (one thread, one
// process doing the work; GOMAXPROCS=1 for Remora and Caddy), HTTP/1.1 keep-alive to
// the client and to the backends with a reused connection pool, round robin
// over the same three backends, no access log, no limit on requests per
// connection.

// upstreamHost is the Host header wrk sends: Remora routes by it; HAProxy,
// nginx and Caddy ignore it.
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
	writeRemoraHead(&b, admin, listen)
	fmt.Fprintf(&b, "        %s:\n", upstreamHost)
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

// caddyConfig is Caddy's JSON config (`caddy run --config FILE`): one HTTP
// server on listen (HTTP/1.1 only, no automatic HTTPS), reverse_proxy to
// the backends round robin over a keep-alive pool big enough for every
// connection (1024 idle per node, no limit on connections per node), the
// admin endpoint off, nothing persisted, no access log (Caddy logs none
// unless told to) and its own log at WARN, as Remora's. reverse_proxy
// would add X-Forwarded-For, -Proto and -Host, and Go's transport
// Accept-Encoding: gzip; the others send the request on without them, so
// Caddy does too (the deletions are three map lookups).
func caddyConfig(listen string, backends []string) string {
	type obj = map[string]any
	var upstreams []obj
	for _, a := range backends {
		upstreams = append(upstreams, obj{"dial": a})
	}
	cfg := obj{
		"admin":   obj{"disabled": true, "config": obj{"persist": false}},
		"logging": obj{"logs": obj{"default": obj{"level": "WARN"}}},
		"apps": obj{"http": obj{"servers": obj{"bench": obj{
			"listen":          []string{listen},
			"protocols":       []string{"h1"},
			"automatic_https": obj{"disable": true},
			"routes": []obj{{"handle": []obj{{
				"handler":        "reverse_proxy",
				"upstreams":      upstreams,
				"load_balancing": obj{"selection_policy": obj{"policy": "round_robin"}},
				"headers": obj{"request": obj{"delete": []string{
					"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}}},
				"transport": obj{
					"protocol":    "http",
					"compression": false,
					"keep_alive": obj{
						"enabled":                 true,
						"idle_timeout":            "75s",
						"max_idle_conns":          1024,
						"max_idle_conns_per_host": 1024,
					},
					"max_conns_per_host": 0, // no limit
				},
			}}}},
		}}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		panic(err) // only maps, slices, strings, numbers and booleans
	}
	return string(b) + "\n"
}

// writeRemoraHead writes what every Remora config of the bench begins
// with: the admin API and one listener, and a static registry named bench
// up to its services, which the caller lists.
func writeRemoraHead(b *strings.Builder, admin, listen string) {
	fmt.Fprintf(b, `admin: {address: %q}
listeners:
  - {name: outbound, address: %q}
registries:
  - name: bench
    type: static
    static:
      services:
`, admin, listen)
}
