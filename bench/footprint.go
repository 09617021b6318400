package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Remora's own footprint, apart from any load: how long `remora run`
// takes from its start to a ready /readyz, and how much memory it holds
// idle. Measured before the scenarios (BENCH_FOOTPRINT=off skips it, =only
// measures nothing else).

const (
	footprintUpstreams = 10
	footprintPoll      = 500 * time.Microsecond // /readyz polling interval
	footprintIdle      = 2 * time.Second        // ready → memory read
	readyGoal          = 50 * time.Millisecond  // issue 23
	idleRSSGoalMiB     = 20                     // issue 23
)

// footprintConfig is a sidecar's config at its simplest: the static
// registry with footprintUpstreams upstreams of one node each (on the
// bench backends), a listener, the admin API on loopback, every other
// setting at its default.
func footprintConfig(admin, listen string, backends []string) string {
	var b strings.Builder
	writeRemoraHead(&b, admin, listen)
	for i := range footprintUpstreams {
		host, port, _ := net.SplitHostPort(backends[i%len(backends)])
		fmt.Fprintf(&b, "        svc-%d: [{id: n%d, address: %q, port: %s}]\n", i, i, host, port)
	}
	b.WriteString("upstreams:\n")
	for i := range footprintUpstreams {
		fmt.Fprintf(&b, "  - name: svc-%d\n", i)
	}
	return b.String()
}

// memStatus is the memory part of /proc/<pid>/status, in KiB.
type memStatus struct {
	VmRSS, RssAnon, RssFile, RssShmem int64
}

// parseMemStatus reads VmRSS and its three parts (anonymous memory:
// heap, stacks, runtime; file-backed: the mapped binary and libraries;
// shared memory) from the content of /proc/<pid>/status.
func parseMemStatus(status string) (memStatus, error) {
	var m memStatus
	fields := map[string]*int64{"VmRSS:": &m.VmRSS, "RssAnon:": &m.RssAnon, "RssFile:": &m.RssFile, "RssShmem:": &m.RssShmem}
	seen := 0
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		p, ok := fields[f[0]]
		if !ok {
			continue
		}
		if len(f) > 2 && f[2] != "kB" {
			return m, fmt.Errorf("status: %s in %q, not kB", f[0], f[2])
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("status: %s: %w", f[0], err)
		}
		*p = n
		seen++
	}
	if m.VmRSS == 0 || seen < len(fields) {
		return m, fmt.Errorf("status: VmRSS, RssAnon, RssFile or RssShmem missing (a kernel before 4.5?)")
	}
	return m, nil
}

// footprint is what footprintRuns measured: one entry per start.
type footprint struct {
	ready []time.Duration
	mem   []memStatus
	size  int64 // the binary's size, bytes
}

// measureFootprint starts Remora n times on footprintConfig, one at a time,
// each time timing the start to the first 200 from /readyz (polled every
// footprintPoll), reading its memory footprintIdle later, and stopping it.
func (d *driver) measureFootprint(ctx context.Context, n int) (footprint, error) {
	var fp footprint
	bin, err := d.remoraBin()
	if err != nil {
		return fp, err
	}
	if st, err := os.Stat(bin); err == nil {
		fp.size = st.Size()
	}
	admin, err := freeAddr()
	if err != nil {
		return fp, err
	}
	listen, err := freeAddr()
	if err != nil {
		return fp, err
	}
	cfg := filepath.Join(d.tmp, "remora-footprint.yaml")
	if err := os.WriteFile(cfg, []byte(footprintConfig(admin, listen, d.backends)), 0o644); err != nil {
		return fp, err
	}
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	for i := range n {
		fmt.Fprintf(os.Stderr, " %d", i+1)
		ready, mem, err := d.footprintOnce(ctx, client, bin, cfg, "http://"+admin+"/readyz")
		if err != nil {
			return fp, err
		}
		fp.ready = append(fp.ready, ready)
		fp.mem = append(fp.mem, mem)
	}
	return fp, nil
}

func (d *driver) footprintOnce(ctx context.Context, client *http.Client, bin, cfg, readyz string) (time.Duration, memStatus, error) {
	// Unpinned (taskset's own exec would be timed too), GOMAXPROCS=1 as
	// under load; no other flag: the default log level and format.
	start := time.Now()
	p, err := d.start("remora-footprint", []string{"GOMAXPROCS=1"}, bin, "run", "-c", cfg)
	if err != nil {
		return 0, memStatus{}, err
	}
	defer d.stopAndForget(p)
	fail := func(err error) (time.Duration, memStatus, error) {
		return 0, memStatus{}, fmt.Errorf("%w\n--- remora log ---\n%s", err, p.logTail())
	}
	deadline := start.Add(20 * time.Second)
	for {
		if ctx.Err() != nil {
			return 0, memStatus{}, ctx.Err()
		}
		if !p.alive() {
			return fail(fmt.Errorf("exited before /readyz answered 200"))
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("/readyz did not answer 200 within 20s"))
		}
		if resp, err := client.Get(readyz); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(footprintPoll)
	}
	ready := time.Since(start)
	client.CloseIdleConnections() // idle means no admin connection either
	select {
	case <-ctx.Done():
		return 0, memStatus{}, ctx.Err()
	case <-time.After(footprintIdle):
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return fail(err)
	}
	mem, err := parseMemStatus(string(b))
	if err != nil {
		return fail(err)
	}
	return ready, mem, nil
}

// stopAndForget stops p and drops it from the processes stopped at the end.
func (d *driver) stopAndForget(p *proc) {
	p.stop()
	d.procs = slices.DeleteFunc(d.procs, func(q *proc) bool { return q == p })
}

func (d *driver) remoraBin() (string, error) {
	bin, err := filepath.Abs(d.opts.remora)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w (build it: go build -o bin/remora ./cmd/remora)", err)
	}
	d.tools["remora"] = bin
	return bin, nil
}

func durationsMs(ds []time.Duration) []float64 {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d) / float64(time.Millisecond)
	}
	return v
}

func memMiB(ms []memStatus, f func(memStatus) int64) []float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = float64(f(m)) / 1024
	}
	return v
}

// spread is "median (min–max)" of v with format verb.
func spread(v []float64, verb string) string {
	if len(v) == 0 {
		return "—"
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", median(v), slices.Min(v), slices.Max(v))
}

func printFootprint(out io.Writer, fp footprint) {
	fmt.Fprintf(out, "== Remora's own footprint (%d starts, one at a time: `remora run -c FILE`, static registry, %d upstreams of one node, default settings, GOMAXPROCS=1, unpinned) ==\n",
		len(fp.ready), footprintUpstreams)
	ready := durationsMs(fp.ready)
	fmt.Fprintf(out, "start to ready:  %s ms, median (min–max): from the start of the process to the first 200 from /readyz, polled every %s   %s\n",
		spread(ready, "%.1f"), footprintPoll, mark(median(ready) <= float64(readyGoal/time.Millisecond), fmt.Sprintf("≤%d ms", readyGoal/time.Millisecond)))
	rss := memMiB(fp.mem, func(m memStatus) int64 { return m.VmRSS })
	fmt.Fprintf(out, "idle RSS:        %s MiB VmRSS, %s after ready   %s\n",
		spread(rss, "%.1f"), footprintIdle, mark(median(rss) <= idleRSSGoalMiB, fmt.Sprintf("≤%d MiB", idleRSSGoalMiB)))
	fmt.Fprintf(out, "  of which:      %s MiB RssAnon (heap, stacks, runtime)   %s MiB RssFile (pages of the binary, %.1f MiB on disk, and libraries)   %s MiB RssShmem\n",
		spread(memMiB(fp.mem, func(m memStatus) int64 { return m.RssAnon }), "%.1f"),
		spread(memMiB(fp.mem, func(m memStatus) int64 { return m.RssFile }), "%.1f"),
		float64(fp.size)/(1<<20),
		spread(memMiB(fp.mem, func(m memStatus) int64 { return m.RssShmem }), "%.1f"))
	fmt.Fprintln(out)
}
