package main

// These tests cover the driver's parsers and the backend. They run in
// `make test` (they are quick and start nothing but an in-process
// listener); the benchmark itself runs only with `make bench`.

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/remora-mesh/remora/discovery/static" // the registry type the configs use
	"github.com/remora-mesh/remora/internal/testnet"
	_ "github.com/remora-mesh/remora/pkg/balancer/all"
	"github.com/remora-mesh/remora/pkg/config"
)

const wrkOutput = `Running 10s test @ http://127.0.0.1:40000/64
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.51ms  512.21us  12.03ms   90.12%
    Req/Sec    25.62k     1.02k   27.10k    70.00%
  Latency Distribution
     50%  812.00us
     75%    2.70ms
     90%    2.98ms
     99%    1.20s
  254923 requests in 10.00s, 30.14MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  25489.12
Transfer/sec:      3.01MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 254923, Seconds: 10, RPS: 25489.12, P50: 812, P99: 1.2e6, SocketErr: 6, Timeouts: 3, Non2xx: 5}
	if r != want {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if _, err := parseWrk("  254923 requests in 10.00s, 30.14MB read\nRequests/sec: 1\n"); err == nil {
		t.Fatal("output without --latency accepted")
	}
}

func TestParseWrkTime(t *testing.T) {
	for in, want := range map[string]float64{"5.00us": 5, "1.50ms": 1500, "2.00s": 2e6, "1.00m": 60e6} {
		got, err := parseWrkTime(in)
		if err != nil || got != want {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWrkTime("3parsecs"); err == nil {
		t.Error("unknown unit accepted")
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	s := "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 1 0 99 1000 200 18446744073709551615"
	st, err := parseProcStat(s)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != 17 || st.UTime != 1234 || st.STime != 567 {
		t.Fatalf("got %+v", st)
	}
	if _, err := parseProcStat("4242 (x) S 1"); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestParseCPUList(t *testing.T) {
	got, err := parseCPUList("0-2,5\n")
	if err != nil || cpuListString(got) != "0,1,2,5" {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestParseCPUBusy(t *testing.T) {
	stat := "cpu  10 1 5 100 7 2 3 4 9 9\ncpu1 1 0 2 50 6 1 1 1 0 0\nintr 1\n"
	if b, err := parseCPUBusy(stat, "cpu1"); err != nil || b != 6 { // 1+0+2+1+1+1
		t.Fatalf("cpu1: %d, %v", b, err)
	}
	if b, _ := parseCPUBusy(stat, "cpu"); b != 25 {
		t.Fatalf("cpu: %d", b)
	}
	if _, err := parseCPUBusy(stat, "cpu7"); err == nil {
		t.Fatal("missing cpu accepted")
	}
}

func TestParseVmRSS(t *testing.T) {
	if got := parseVmRSS("Name:\tx\nVmRSS:\t   12345 kB\nThreads: 1\n"); got != 12345 {
		t.Fatalf("got %d", got)
	}
}

func TestMedian(t *testing.T) {
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 2, 3}) != 2.5 || median(nil) != 0 {
		t.Fatal("median")
	}
}

func TestHandlePipelinedAndPartial(t *testing.T) {
	resp := newResponses()
	in := []byte("GET /64 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /16k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /64 HTTP/1.1\r\nHo")
	out, consumed, closeAfter, err := handle(in, nil, resp)
	if err != nil || closeAfter {
		t.Fatalf("err %v close %v", err, closeAfter)
	}
	if want := bytes.Join([][]byte{resp.small, resp.large}, nil); !bytes.Equal(out, want) {
		t.Fatalf("responses: got %d bytes, want %d", len(out), len(want))
	}
	if rest := string(in[consumed:]); rest != "GET /64 HTTP/1.1\r\nHo" {
		t.Fatalf("left %q", rest)
	}
	// A body not fully arrived is not answered yet.
	_, consumed, _, _ = handle([]byte("POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc"), nil, resp)
	if consumed != 0 {
		t.Fatalf("consumed %d of an incomplete request", consumed)
	}
}

func TestHandleClose(t *testing.T) {
	resp := newResponses()
	for _, req := range []string{
		"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		out, _, closeAfter, err := handle([]byte(req), nil, resp)
		if err != nil || !closeAfter || !bytes.Equal(out, resp.small) {
			t.Errorf("%q: close %v err %v", req, closeAfter, err)
		}
	}
	if _, _, _, err := handle([]byte("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), nil, resp); err == nil {
		t.Error("chunked request accepted")
	}
}

// TestBackendServesHTTP talks to the backend with net/http's client: a
// strict HTTP/1.1 peer, as every proxy under test is.
func TestBackendServesHTTP(t *testing.T) {
	resp := newResponses()
	ln := testnet.Serve(t, func(c net.Conn) { serveConn(c, resp) })
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 {
		for _, n := range []int{smallBody, largeBody} {
			r, err := client.Get("http://" + ln.Addr().String() + pathFor(n))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 || len(body) != n {
				t.Fatalf("%s: %d, %d bytes", pathFor(n), r.StatusCode, len(body))
			}
		}
	}
}

func TestConfigs(t *testing.T) {
	backends := []string{"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"}
	h := haproxyConfig("127.0.0.1:2000", backends)
	n := nginxConfig("/tmp/x", "127.0.0.1:2001", backends)
	r := remoraConfig("127.0.0.1:2002", "127.0.0.1:2003", backends)
	for name, c := range map[string]struct {
		cfg  string
		want []string
	}{
		"haproxy": {h, []string{"nbthread 1", "balance roundrobin", "http-reuse always", "bind 127.0.0.1:2000", "server n3 127.0.0.1:1003"}},
		"nginx":   {n, []string{"worker_processes 1;", "master_process off;", "access_log off;", "keepalive 1024;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "server 127.0.0.1:1002;", "listen 127.0.0.1:2001;", "pid /tmp/x/nginx.pid;"}},
		"remora":  {r, []string{"type: static", "balancer: round_robin", `address: "127.0.0.1:2003"`, "port: 1001", "- name: bench"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.cfg, w) {
				t.Errorf("%s config lacks %q:\n%s", name, w, c.cfg)
			}
		}
	}
	if strings.Contains(h, "log ") && !strings.Contains(h, `no "log" line`) {
		t.Error("haproxy config logs")
	}
}

func TestParseOptions(t *testing.T) {
	t.Setenv("BENCH_DURATION", "5")
	o, err := parseOptions([]string{"-proxies", "remora,haproxy", "-scenarios", "16k-64c"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || strings.Join(o.proxies, ",") != "remora,haproxy" || len(o.scenarios) != 1 || o.scenarios[0].Body != largeBody {
		t.Fatalf("got %+v", o)
	}
	if o.footprint != "on" || o.footprintStarts != 10 {
		t.Fatalf("footprint default: %q × %d", o.footprint, o.footprintStarts)
	}
	t.Setenv("BENCH_PROXIES", "")
	t.Setenv("BENCH_SCENARIOS", "")
	o, err = parseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range o.scenarios {
		names = append(names, s.Name)
	}
	if got := strings.Join(o.proxies, ",") + " " + strings.Join(names, ","); got != "haproxy,nginx,caddy,remora 64b-64c,16k-64c,64b-256c,16k-256c" {
		t.Fatalf("defaults: %s", got)
	}
	t.Setenv("BENCH_FOOTPRINT", "only")
	if o, err := parseOptions([]string{"-footprint-starts", "3"}); err != nil || o.footprint != "only" || o.footprintStarts != 3 {
		t.Fatalf("footprint only: %+v, %v", o, err)
	}
	if o, err := parseOptions([]string{"-footprint", "0"}); err != nil || o.footprint != "off" {
		t.Fatalf("footprint 0: %+v, %v", o, err)
	}
	if _, err := parseOptions([]string{"-footprint", "sometimes"}); err == nil {
		t.Fatal("bad footprint mode accepted")
	}
	if _, err := parseOptions([]string{"-proxies", "envoy"}); err == nil {
		t.Fatal("unknown proxy accepted")
	}
	if _, err := parseOptions([]string{"-scenarios", "1m-1c"}); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

// The Remora configs are valid for Remora itself.
func TestRemoraConfigsParse(t *testing.T) {
	backends := []string{"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"}
	for name, c := range map[string]string{
		"bench":     remoraConfig("127.0.0.1:2002", "127.0.0.1:2003", backends),
		"footprint": footprintConfig("127.0.0.1:2004", "127.0.0.1:2005", backends),
	} {
		cfg, err := config.Parse([]byte(c), t.TempDir())
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, c)
		}
		if name == "footprint" {
			if len(cfg.Upstreams) != footprintUpstreams {
				t.Fatalf("footprint: %d upstreams, want %d", len(cfg.Upstreams), footprintUpstreams)
			}
			for _, w := range []string{"svc-9: [{id: n9, address: \"127.0.0.1\", port: 1001}]", "  - name: svc-0\n"} {
				if !strings.Contains(c, w) {
					t.Errorf("footprint config lacks %q:\n%s", w, c)
				}
			}
		}
	}
}

func TestCaddyConfig(t *testing.T) {
	c := caddyConfig("127.0.0.1:2006", []string{"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"})
	var cfg struct {
		Admin struct {
			Disabled bool
			Config   struct{ Persist *bool }
		}
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen         []string
					Protocols      []string
					AutomaticHTTPS struct{ Disable bool } `json:"automatic_https"`
					Routes         []struct {
						Handle []struct {
							Handler       string
							Upstreams     []struct{ Dial string }
							LoadBalancing struct {
								SelectionPolicy struct{ Policy string } `json:"selection_policy"`
							} `json:"load_balancing"`
							Headers struct {
								Request struct{ Delete []string }
							}
							Transport struct {
								Compression *bool
								KeepAlive   struct {
									Enabled             bool
									MaxIdleConnsPerHost int `json:"max_idle_conns_per_host"`
								} `json:"keep_alive"`
							}
						}
					}
				}
			}
		}
		Logging struct {
			Logs map[string]struct{ Level string }
		}
	}
	if err := json.Unmarshal([]byte(c), &cfg); err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	srv := cfg.Apps.HTTP.Servers["bench"]
	if len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 {
		t.Fatalf("want one route with one handler:\n%s", c)
	}
	h := srv.Routes[0].Handle[0]
	switch {
	case !cfg.Admin.Disabled || cfg.Admin.Config.Persist == nil || *cfg.Admin.Config.Persist:
		t.Error("admin endpoint on or config persisted")
	case strings.Join(srv.Listen, ",") != "127.0.0.1:2006" || strings.Join(srv.Protocols, ",") != "h1" || !srv.AutomaticHTTPS.Disable:
		t.Error("not plain HTTP/1.1 on the listen address")
	case h.Handler != "reverse_proxy" || len(h.Upstreams) != 3 || h.Upstreams[2].Dial != "127.0.0.1:1003":
		t.Error("not a reverse_proxy to the three backends")
	case h.LoadBalancing.SelectionPolicy.Policy != "round_robin":
		t.Error("not round robin")
	case !h.Transport.KeepAlive.Enabled || h.Transport.KeepAlive.MaxIdleConnsPerHost < 256:
		t.Error("upstream keep-alive pool off or too small for 256 connections")
	case h.Transport.Compression == nil || *h.Transport.Compression:
		t.Error("transport adds Accept-Encoding")
	case strings.Join(h.Headers.Request.Delete, ",") != "X-Forwarded-For,X-Forwarded-Proto,X-Forwarded-Host":
		t.Error("X-Forwarded-* added")
	case cfg.Logging.Logs["default"].Level != "WARN":
		t.Error("log level not WARN")
	}
	if t.Failed() {
		t.Log(c)
	}
}

func TestParseMemStatus(t *testing.T) {
	status := "Name:\tremora\nVmPeak:\t 1253000 kB\nVmRSS:\t   29286 kB\nRssAnon:\t    4196 kB\nRssFile:\t   25090 kB\nRssShmem:\t       0 kB\nThreads:\t5\n"
	m, err := parseMemStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if want := (memStatus{VmRSS: 29286, RssAnon: 4196, RssFile: 25090}); m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	if _, err := parseMemStatus("Name:\tx\nVmRSS:\t 100 kB\n"); err == nil {
		t.Error("status without RssAnon accepted")
	}
	if _, err := parseMemStatus(strings.Replace(status, "4196 kB", "4x96 kB", 1)); err == nil {
		t.Error("bad number accepted")
	}
}

func TestPrintFootprint(t *testing.T) {
	fp := footprint{size: 48 << 20}
	for i, ms := range []int{14, 9, 60} {
		fp.ready = append(fp.ready, time.Duration(ms)*time.Millisecond)
		fp.mem = append(fp.mem, memStatus{VmRSS: int64(28+i) << 10, RssAnon: 4 << 10, RssFile: int64(24+i) << 10})
	}
	var b bytes.Buffer
	printFootprint(&b, fp)
	out := b.String()
	for _, w := range []string{"3 starts", "10 upstreams", "14.0 (9.0–60.0) ms", "(goal ≤50 ms ok)", "29.0 (28.0–30.0) MiB VmRSS", "(goal ≤20 MiB MISSED)",
		"4.0 (4.0–4.0) MiB RssAnon", "25.0 (24.0–26.0) MiB RssFile", "48.0 MiB on disk"} {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
}

func TestRatioLine(t *testing.T) {
	r := summary{cpu: 30, p99: 1100, rps: 20000, rssMiB: 40}
	h := summary{cpu: 25, p99: 1000, rps: 21000, rssMiB: 15}
	got := ratioLine(scenario{"64b-64c", smallBody, 64}, "haproxy", r, h)
	for _, w := range []string{"CPU/req 1.20x (goal ≤1 MISSED)", "p99 1.10x (goal ≤1.1 ok)", "throughput 0.95x (goal ≥1 MISSED)", "RSS +25.0 MiB (goal ≤+10 MISSED)"} {
		if !strings.Contains(got, w) {
			t.Errorf("lacks %q: %s", w, got)
		}
	}
	if got := ratioLine(scenario{"64b-256c", smallBody, 256}, "haproxy", r, h); strings.Contains(got, "≤+10") {
		t.Errorf("RSS goal at 256 connections: %s", got)
	}
	if got := ratioLine(scenario{"64b-64c", smallBody, 64}, "caddy", r, h); strings.Contains(got, "goal") || !strings.HasPrefix(got, "remora/caddy:    CPU/req 1.20x") {
		t.Errorf("caddy: %s", got)
	}
}
