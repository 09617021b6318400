// Command bench is Remora's whole-process benchmark: it starts three
// loopback backends, HAProxy, nginx, Caddy and Remora in front of them with
// equivalent configs, drives each with wrk in interleaved rounds, and prints
// throughput, latency, proxy CPU per request, RSS and Remora's ratios to the
// others; before that, Remora's own start time and idle memory. `make
// bench` installs the tools, builds Remora and runs it; see bench/README.md.
//
// `bench backend` is the backend server and `bench httputil` a plain
// httputil.ReverseProxy for reference (the driver starts them as children).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		if err := runBackend(3); err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "httputil" {
		if err := runHTTPUtil(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "httputil:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(drive(os.Args[1:]))
}

// scenario is one load shape.
type scenario struct {
	Name  string
	Body  int // response body bytes
	Conns int // wrk connections
}

var allScenarios = []scenario{
	{"64b-64c", smallBody, 64},
	{"16k-64c", largeBody, 64},
	{"64b-256c", smallBody, 256},
	{"16k-256c", largeBody, 256},
}

func (s scenario) title() string {
	body := fmt.Sprintf("%d B", s.Body)
	if s.Body >= 1024 {
		body = fmt.Sprintf("%d KiB", s.Body/1024)
	}
	return fmt.Sprintf("%s body, %d connections", body, s.Conns)
}

type options struct {
	duration, warmup time.Duration
	rounds           int
	proxies          []string
	scenarios        []scenario
	remora, tmp      string
	keep, noPin      bool
	footprint        string // on, off or only
	footprintStarts  int
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if n, err := strconv.Atoi(v); err == nil { // plain seconds: BENCH_DURATION=5
		return time.Duration(n) * time.Second
	}
	fmt.Fprintf(os.Stderr, "bench: %s=%q is not a duration (want 10s or 10); using %s\n", name, v, def)
	return def
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", envDuration("BENCH_DURATION", 10*time.Second), "measured wrk run per proxy, scenario and round ($BENCH_DURATION)")
	fs.DurationVar(&o.warmup, "warmup", envDuration("BENCH_WARMUP", 2*time.Second), "unmeasured wrk run before each measurement ($BENCH_WARMUP)")
	rounds, _ := strconv.Atoi(envOr("BENCH_ROUNDS", "3"))
	fs.IntVar(&o.rounds, "rounds", rounds, "interleaved rounds ($BENCH_ROUNDS)")
	proxies := fs.String("proxies", envOr("BENCH_PROXIES", "haproxy,nginx,caddy,remora"), "proxies, in the order they run in each round: haproxy, nginx, caddy, remora, httputil ($BENCH_PROXIES)")
	var names []string
	for _, s := range allScenarios {
		names = append(names, s.Name)
	}
	scen := fs.String("scenarios", envOr("BENCH_SCENARIOS", strings.Join(names, ",")), "scenarios ($BENCH_SCENARIOS)")
	fs.StringVar(&o.remora, "remora", "bin/remora", "the Remora binary")
	fs.StringVar(&o.tmp, "tmp", "", "an empty directory for configs and logs (default: a new temp dir); removed at the end unless -keep")
	fs.BoolVar(&o.keep, "keep", os.Getenv("BENCH_KEEP") != "", "keep the temp dir with configs and logs ($BENCH_KEEP)")
	fs.BoolVar(&o.noPin, "no-pin", os.Getenv("BENCH_NO_PIN") != "", "do not pin with taskset ($BENCH_NO_PIN)")
	fs.StringVar(&o.footprint, "footprint", envOr("BENCH_FOOTPRINT", "on"), "Remora's start-to-ready time and idle memory, before the scenarios: on, off, or only (nothing else) ($BENCH_FOOTPRINT)")
	starts, _ := strconv.Atoi(envOr("BENCH_FOOTPRINT_STARTS", "10"))
	fs.IntVar(&o.footprintStarts, "footprint-starts", starts, "how many times the footprint measurement starts Remora ($BENCH_FOOTPRINT_STARTS)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.duration < time.Second || o.rounds < 1 {
		return o, fmt.Errorf("duration must be at least 1s and rounds at least 1")
	}
	switch o.footprint {
	case "on", "off", "only":
	case "1", "yes", "true":
		o.footprint = "on"
	case "0", "no", "false":
		o.footprint = "off"
	default:
		return o, fmt.Errorf("footprint %q: want on, off or only", o.footprint)
	}
	if o.footprint != "off" && o.footprintStarts < 1 {
		return o, fmt.Errorf("footprint-starts must be at least 1")
	}
	for _, p := range strings.Split(*proxies, ",") {
		p = strings.TrimSpace(p)
		switch p {
		case "haproxy", "nginx", "caddy", "remora", "httputil":
			o.proxies = append(o.proxies, p)
		case "":
		default:
			return o, fmt.Errorf("unknown proxy %q (haproxy, nginx, caddy, remora, httputil)", p)
		}
	}
	for _, n := range strings.Split(*scen, ",") {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(allScenarios, func(s scenario) bool { return s.Name == n })
		if i < 0 {
			return o, fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(names, ", "))
		}
		o.scenarios = append(o.scenarios, allScenarios[i])
	}
	return o, nil
}

// findTool looks in PATH, then in the sbin directories Debian installs
// daemons into (not in a normal user's PATH).
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// proc is a child process in its own process group, so stopping it stops
// everything it forked (nginx's worker).
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	stdin  io.WriteCloser
	stdout io.Reader // the backend's, read before it is waited for
}

// pinned returns argv run through taskset on cpus, when pinning.
func (d *driver) pinned(cpus []int, argv ...string) []string {
	if d.taskset == "" || len(cpus) == 0 {
		return argv
	}
	return append([]string{d.taskset, "-c", cpuListString(cpus)}, argv...)
}

func (d *driver) start(name string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(d.tmp, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = d.tmp
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	if name == "backend" {
		// The backend reports its addresses on stdout and exits when its
		// stdin closes.
		cmd.Stdout = nil
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		if p.stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, p)
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after 3 s.
func (p *proc) stop() {
	if p.stdin != nil {
		p.stdin.Close()
	}
	pgid := p.pid()
	if p.alive() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
	}
	// Anything the leader forked that outlived it (a worker) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// target is a running proxy under test.
type target struct {
	name string
	addr string // where wrk connects
	p    *proc
	dead error // set when it failed; later measurements are skipped
}

type driver struct {
	opts              options
	tmp               string
	taskset           string
	proxyCPU, loadCPU []int
	hz                float64
	procs             []*proc
	backend           *proc
	backends          []string
	tools             map[string]string
}

func drive(args []string) int {
	opts, err := parseOptions(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	tmp := opts.tmp
	if tmp == "" {
		tmp, err = os.MkdirTemp("", "remora-bench-")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	d := &driver{opts: opts, tmp: tmp, hz: clockTicks(), tools: map[string]string{}}
	defer func() {
		for i := len(d.procs) - 1; i >= 0; i-- {
			d.procs[i].stop()
		}
		if opts.keep {
			fmt.Fprintf(os.Stderr, "bench: configs and logs kept in %s\n", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	if err := d.run(ctx); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; stopping everything")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func (d *driver) run(ctx context.Context) error {
	for _, t := range []string{"wrk", "haproxy", "nginx", "caddy"} {
		d.tools[t] = findTool(t)
	}
	if d.tools["wrk"] == "" {
		return errors.New("wrk not found (make bench installs it: apt-get install wrk)")
	}
	d.planCPUs()

	// Backends first, on the load side.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	loadProcs := max(1, len(d.loadCPU))
	d.backend, err = d.start("backend", []string{"GOMAXPROCS=" + strconv.Itoa(loadProcs)}, d.pinned(d.loadCPU, self, "backend")...)
	if err != nil {
		return err
	}
	d.backends, err = readAddrs(d.backend.stdout)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, d.backend.logTail())
	}

	// Remora's footprint, while nothing else of the bench runs.
	var fp footprint
	if d.opts.footprint != "off" {
		fmt.Fprintf(os.Stderr, "bench: Remora's footprint, start")
		fp, err = d.measureFootprint(ctx, d.opts.footprintStarts)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return fmt.Errorf("footprint: %w", err)
		}
	}
	if d.opts.footprint == "only" {
		d.header(nil)
		printFootprint(os.Stdout, fp)
		return nil
	}

	var targets []*target
	for _, name := range d.opts.proxies {
		t, err := d.startProxy(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		targets = append(targets, t)
	}
	d.header(targets)
	if d.opts.footprint != "off" {
		printFootprint(os.Stdout, fp)
	}

	results := map[string]map[string][]sample{} // scenario → proxy → rounds
	for _, sc := range d.opts.scenarios {
		results[sc.Name] = map[string][]sample{}
		fmt.Fprintf(os.Stderr, "bench: %s:", sc.title())
		for round := 1; round <= d.opts.rounds; round++ {
			for _, t := range targets {
				if t.dead != nil {
					continue
				}
				s, err := d.measure(ctx, t, sc)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					t.dead = err
					fmt.Fprintf(os.Stderr, "\nbench: %s: %v\n", t.name, err)
					continue
				}
				results[sc.Name][t.name] = append(results[sc.Name][t.name], s)
				fmt.Fprintf(os.Stderr, " %s#%d", t.name, round)
			}
		}
		fmt.Fprintln(os.Stderr)
		printScenario(os.Stdout, sc, d.opts, targets, results[sc.Name])
	}
	for _, t := range targets {
		if t.dead != nil {
			return fmt.Errorf("%s failed during the run: %v", t.name, t.dead)
		}
	}
	return nil
}

// planCPUs puts the proxy on the last allowed CPU and the load (wrk and
// the backends) on the others, when taskset exists and there are two CPUs.
func (d *driver) planCPUs() {
	if d.opts.noPin {
		return
	}
	ts := findTool("taskset")
	cpus := allowedCPUs()
	if ts == "" || len(cpus) < 2 {
		return
	}
	d.taskset = ts
	d.proxyCPU = cpus[len(cpus)-1:]
	d.loadCPU = cpus[:len(cpus)-1]
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (d *driver) startProxy(ctx context.Context, name string) (*target, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	write := func(file, content string) (string, error) {
		p := filepath.Join(d.tmp, file)
		return p, os.WriteFile(p, []byte(content), 0o644)
	}
	var p *proc
	switch name {
	case "haproxy":
		bin := d.tools["haproxy"]
		if bin == "" {
			return nil, errors.New("haproxy not found (make bench installs it: apt-get install haproxy)")
		}
		cfg, err := write("haproxy.cfg", haproxyConfig(listen, d.backends))
		if err != nil {
			return nil, err
		}
		p, err = d.start(name, nil, d.pinned(d.proxyCPU, bin, "-db", "-f", cfg)...)
		if err != nil {
			return nil, err
		}
	case "nginx":
		bin := d.tools["nginx"]
		if bin == "" {
			return nil, errors.New("nginx not found (make bench installs it: apt-get install nginx-light)")
		}
		dir := filepath.Join(d.tmp, "nginx")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cfg, err := write("nginx/nginx.conf", nginxConfig(dir, listen, d.backends))
		if err != nil {
			return nil, err
		}
		p, err = d.start(name, nil, d.pinned(d.proxyCPU, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfg)...)
		if err != nil {
			return nil, err
		}
	case "caddy":
		bin := d.tools["caddy"]
		if bin == "" {
			return nil, errors.New("caddy not found (make bench installs it: apt-get install caddy)")
		}
		dir := filepath.Join(d.tmp, "caddy")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cfg, err := write("caddy/caddy.json", caddyConfig(listen, d.backends))
		if err != nil {
			return nil, err
		}
		// Caddy's config and data dirs (nothing should be written there
		// with persistence and TLS off) in the temp dir, not in $HOME.
		env := []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "XDG_DATA_HOME=" + filepath.Join(dir, "data")}
		p, err = d.start(name, env, d.pinned(d.proxyCPU, bin, "run", "--config", cfg)...)
		if err != nil {
			return nil, err
		}
	case "remora":
		admin, err := freeAddr()
		if err != nil {
			return nil, err
		}
		cfg, err := write("remora.yaml", remoraConfig(admin, listen, d.backends))
		if err != nil {
			return nil, err
		}
		bin, err := d.remoraBin()
		if err != nil {
			return nil, err
		}
		p, err = d.start(name, []string{"GOMAXPROCS=1"}, d.pinned(d.proxyCPU, bin, "run", "-c", cfg, "--log-level", "warn", "--log-format", "json")...)
		if err != nil {
			return nil, err
		}
	case "httputil":
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		d.tools["httputil"] = self
		p, err = d.start(name, []string{"GOMAXPROCS=1"}, d.pinned(d.proxyCPU, self, "httputil", listen, strings.Join(d.backends, ","))...)
		if err != nil {
			return nil, err
		}
	}
	t := &target{name: name, addr: listen, p: p}
	if err := d.waitServing(ctx, t); err != nil {
		return nil, fmt.Errorf("%w\n--- %s log ---\n%s", err, name, p.logTail())
	}
	return t, nil
}

// waitServing waits until the proxy answers both bodies correctly.
func (d *driver) waitServing(ctx context.Context, t *target) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if !t.p.alive() {
			return fmt.Errorf("exited before serving")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = checkBodies(client, t.addr)
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving after 20s: %v", last)
}

func checkBodies(client *http.Client, addr string) error {
	for _, n := range []int{smallBody, largeBody} {
		// Several requests, so every backend answers through the proxy.
		for range 6 {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+pathFor(n), nil)
			req.Host = upstreamHost
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || len(body) != n {
				return fmt.Errorf("GET %s: status %d, %d body bytes (want 200, %d)", pathFor(n), resp.StatusCode, len(body), n)
			}
		}
	}
	return nil
}

// sample is one measurement of one proxy.
type sample struct {
	RPS, P50, P99 float64 // req/s, µs, µs
	CPUPerReq     float64 // proxy user+sys µs per request
	UserPerReq    float64 // of which user
	SysPerReq     float64 // of which system (kernel: mostly the TCP stack)
	ProxyUtil     float64 // proxy CPU seconds per second
	LoadUtil      float64 // wrk + backend CPU seconds per second
	OtherUtil     float64 // busy time on the proxy's CPU not spent by the proxy, per second
	RSSKiB        int64
	Requests      int64
	Errors        int64 // socket errors + non-2xx
	Timeouts      int64 // socket errors that were timeouts
	Non2xx        int64
}

func (d *driver) wrk(ctx context.Context, t *target, sc scenario, dur time.Duration) (wrkResult, time.Duration, error) {
	threads := min(max(1, len(d.loadCPU)), sc.Conns)
	argv := d.pinned(d.loadCPU, d.tools["wrk"], "-t", strconv.Itoa(threads), "-c", strconv.Itoa(sc.Conns),
		"-d", fmt.Sprintf("%ds", int(dur.Round(time.Second)/time.Second)), "--latency", "-H", "Host: "+upstreamHost,
		"http://"+t.addr+pathFor(sc.Body))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk: %v\n%s", err, out.String())
	}
	r, err := parseWrk(out.String())
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, cpu, err
}

func (d *driver) measure(ctx context.Context, t *target, sc scenario) (sample, error) {
	if !t.p.alive() {
		return sample{}, fmt.Errorf("exited\n%s", t.p.logTail())
	}
	if d.opts.warmup >= time.Second {
		if _, _, err := d.wrk(ctx, t, sc, d.opts.warmup); err != nil {
			return sample{}, err
		}
	}
	pids := processTree(t.p.pid())
	bpids := processTree(d.backend.pid())
	u0, s0, err := cpuTicks(pids)
	if err != nil {
		return sample{}, err
	}
	bu0, bs0, _ := cpuTicks(bpids)
	core0 := d.proxyCoreBusy()
	r, wrkCPU, err := d.wrk(ctx, t, sc, d.opts.duration)
	if err != nil {
		return sample{}, err
	}
	u1, s1, err := cpuTicks(pids)
	if err != nil {
		return sample{}, fmt.Errorf("exited during the run\n%s", t.p.logTail())
	}
	bu1, bs1, _ := cpuTicks(bpids)
	core1 := d.proxyCoreBusy()
	if r.Requests == 0 || r.Seconds <= 0 {
		return sample{}, fmt.Errorf("wrk completed no request")
	}
	userSec, sysSec := float64(u1-u0)/d.hz, float64(s1-s0)/d.hz
	cpuSec := userSec + sysSec
	loadSec := float64(bu1-bu0+bs1-bs0)/d.hz + wrkCPU.Seconds()
	perReq := 1e6 / float64(r.Requests)
	return sample{
		RPS: r.RPS, P50: r.P50, P99: r.P99,
		CPUPerReq:  cpuSec * perReq,
		UserPerReq: userSec * perReq,
		SysPerReq:  sysSec * perReq,
		ProxyUtil:  cpuSec / r.Seconds,
		LoadUtil:   loadSec / r.Seconds,
		OtherUtil:  max(0, float64(core1-core0)/d.hz-cpuSec) / r.Seconds,
		RSSKiB:     rssKiB(pids),
		Requests:   r.Requests,
		Errors:     r.SocketErr + r.Non2xx,
	}, nil
}

// proxyCoreBusy is the busy ticks of the proxy's CPU (all of them when
// not pinned) from /proc/stat.
func (d *driver) proxyCoreBusy() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	want := "cpu"
	if len(d.proxyCPU) == 1 {
		want = "cpu" + strconv.Itoa(d.proxyCPU[0])
	}
	busy, _ := parseCPUBusy(string(b), want)
	return busy
}

func (d *driver) header(targets []*target) {
	out := os.Stdout
	fmt.Fprintln(out, "Remora whole-process benchmark")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(out, "  machine: %d CPUs, Linux %s, %s\n", runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
	if d.taskset != "" {
		fmt.Fprintf(out, "  pinning: proxy on CPU %s; wrk and backends on CPU %s (taskset)\n", cpuListString(d.proxyCPU), cpuListString(d.loadCPU))
	} else {
		fmt.Fprintln(out, "  pinning: none (taskset missing, one CPU, or BENCH_NO_PIN): figures mix proxy and load")
	}
	fmt.Fprintf(out, "  load: wrk, HTTP/1.1 keep-alive, %s measured after %s warm-up, %d interleaved rounds\n", d.opts.duration, d.opts.warmup, d.opts.rounds)
	fmt.Fprintf(out, "  backends: 3 × bench backend on loopback (%s), round robin\n", strings.Join(d.backends, " "))
	for _, t := range targets {
		fmt.Fprintf(out, "  %-9s %s (pid %d)\n", t.name+":", d.version(t.name), t.p.pid())
	}
	if len(targets) == 0 && d.tools["remora"] != "" {
		fmt.Fprintf(out, "  %-9s %s\n", "remora:", d.version("remora"))
	}
	fmt.Fprintf(out, "  %-9s %s\n", "wrk:", d.version("wrk"))
	fmt.Fprintln(out)
}

func (d *driver) version(tool string) string {
	bin := d.tools[tool]
	var args []string
	switch tool {
	case "haproxy":
		args = []string{"-v"}
	case "nginx":
		args = []string{"-v"}
	case "wrk":
		args = []string{"-v"}
	case "caddy":
		args = []string{"version"}
	case "remora":
		args = []string{"version"}
	case "httputil":
		return "net/http/httputil.ReverseProxy, " + runtime.Version() + ", GOMAXPROCS=1, round robin"
	}
	out, _ := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	extra := ""
	switch tool {
	case "haproxy":
		extra = ", nbthread 1, http-reuse always"
	case "nginx":
		extra = ", one process (master_process off), upstream keepalive 1024"
	case "caddy":
		line = "caddy " + line
		extra = ", GOMAXPROCS=1, reverse_proxy round_robin, keep-alive idle pool 1024 per node"
	case "remora":
		extra = ", GOMAXPROCS=1, static registry, round_robin"
	}
	return line + extra
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summary is the median of each metric over the rounds.
type summary struct {
	n                                       int
	rps, rpsMin, rpsMax, p50, p99, cpu, usr float64
	sys, util, load, other, rssMiB          float64
	errors, requests                        int64
}

func summarize(ss []sample) summary {
	pick := func(f func(sample) float64) []float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		return v
	}
	rps := pick(func(s sample) float64 { return s.RPS })
	sum := summary{
		n:   len(ss),
		rps: median(rps), rpsMin: slices.Min(rps), rpsMax: slices.Max(rps),
		p50:    median(pick(func(s sample) float64 { return s.P50 })),
		p99:    median(pick(func(s sample) float64 { return s.P99 })),
		cpu:    median(pick(func(s sample) float64 { return s.CPUPerReq })),
		usr:    median(pick(func(s sample) float64 { return s.UserPerReq })),
		sys:    median(pick(func(s sample) float64 { return s.SysPerReq })),
		util:   median(pick(func(s sample) float64 { return s.ProxyUtil })),
		load:   median(pick(func(s sample) float64 { return s.LoadUtil })),
		other:  median(pick(func(s sample) float64 { return s.OtherUtil })),
		rssMiB: median(pick(func(s sample) float64 { return float64(s.RSSKiB) / 1024 })),
	}
	for _, s := range ss {
		sum.errors += s.Errors
		sum.requests += s.Requests
	}
	return sum
}

func fmtLatency(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func printScenario(out io.Writer, sc scenario, o options, targets []*target, res map[string][]sample) {
	fmt.Fprintf(out, "== %s (median of %d rounds × %s) ==\n", sc.title(), o.rounds, o.duration)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "proxy\treq/s\t(min–max)\tp50\tp99\tCPU µs/req\tusr\tsys\tproxy CPU\tload CPU\tother\tRSS MiB\terrors\t")
	sums := map[string]summary{}
	for _, t := range targets {
		ss := res[t.name]
		if len(ss) == 0 {
			fmt.Fprintf(tw, "%s\t—\t\t\t\t\t\t\t\t\tfailed\t\n", t.name)
			continue
		}
		s := summarize(ss)
		sums[t.name] = s
		fmt.Fprintf(tw, "%s\t%.0f\t(%.0f–%.0f)\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.0f%%\t%.0f%%\t%.0f%%\t%.1f\t%d\t\n",
			t.name, s.rps, s.rpsMin, s.rpsMax, fmtLatency(s.p50), fmtLatency(s.p99), s.cpu, s.usr, s.sys,
			s.util*100, s.load*100, s.other*100, s.rssMiB, s.errors)
	}
	tw.Flush()
	r, ok := sums["remora"]
	if ok {
		for _, other := range []string{"haproxy", "nginx", "caddy", "httputil"} {
			o, ok := sums[other]
			if !ok || o.cpu == 0 || o.p99 == 0 || o.rps == 0 {
				continue
			}
			fmt.Fprintln(out, ratioLine(sc, other, r, o))
		}
	}
	fmt.Fprint(out, "rounds, req/s @ CPU µs/req:")
	for _, t := range targets {
		fmt.Fprintf(out, "  %s", t.name)
		for _, s := range res[t.name] {
			fmt.Fprintf(out, " %.0f@%.1f", s.RPS, s.CPUPerReq)
		}
	}
	fmt.Fprintln(out)
	for _, t := range targets {
		if s, ok := sums[t.name]; ok && s.other > 0.15 {
			fmt.Fprintf(out, "note: while %s ran, other work took %.0f%% of its CPU: its figures are noisy\n", t.name, s.other*100)
		}
	}
	for _, t := range targets {
		var errs, timeouts, non2xx, requests int64
		for _, s := range res[t.name] {
			errs, timeouts, non2xx, requests = errs+s.Errors, timeouts+s.Timeouts, non2xx+s.Non2xx, requests+s.Requests
		}
		if errs == 0 {
			continue
		}
		verdict := ""
		if float64(errs) > 0.001*float64(requests) {
			verdict = ": more than 0.1%, its figures are suspect"
		}
		fmt.Fprintf(out, "errors: %s: %d in %d requests (%d non-2xx/3xx, %d wrk timeouts, %d other socket errors)%s\n",
			t.name, errs, requests, non2xx, timeouts, errs-non2xx-timeouts, verdict)
	}
	fmt.Fprintln(out)
}

// Issue 23's goals for Remora against HAProxy in the same run.
const (
	cpuGoal, p99Goal, rpsGoal = 1.0, 1.1, 1.0 // ratios to HAProxy's medians
	rssGoalMiB                = 10            // above HAProxy's, at 64 connections
)

// ratioLine is Remora's medians divided by other's; against HAProxy with
// issue 23's goals, and the difference in RSS (its goal only at 64
// connections).
func ratioLine(sc scenario, other string, r, o summary) string {
	cpu, p99, rps := r.cpu/o.cpu, r.p99/o.p99, r.rps/o.rps
	label := fmt.Sprintf("remora/%-9s", other+":")
	if other != "haproxy" {
		return fmt.Sprintf("%s CPU/req %.2fx   p99 %.2fx   throughput %.2fx   RSS %+.1f MiB", label, cpu, p99, rps, r.rssMiB-o.rssMiB)
	}
	rss := fmt.Sprintf("RSS %+.1f MiB", r.rssMiB-o.rssMiB)
	if sc.Conns == 64 {
		rss += " " + mark(r.rssMiB-o.rssMiB <= rssGoalMiB, fmt.Sprintf("≤+%d", rssGoalMiB))
	}
	return fmt.Sprintf("%s CPU/req %.2fx %s   p99 %.2fx %s   throughput %.2fx %s   %s", label,
		cpu, mark(cpu <= cpuGoal, fmt.Sprintf("≤%g", cpuGoal)), p99, mark(p99 <= p99Goal, fmt.Sprintf("≤%g", p99Goal)),
		rps, mark(rps >= rpsGoal, fmt.Sprintf("≥%g", rpsGoal)), rss)
}

// mark says whether a figure meets its goal.
func mark(ok bool, goal string) string {
	if ok {
		return "(goal " + goal + " ok)"
	}
	return "(goal " + goal + " MISSED)"
}
