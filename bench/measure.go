package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests  int64   // completed requests
	Seconds   float64 // wall time wrk reports
	RPS       float64 // Requests/sec
	P50, P99  float64 // latency percentiles, µs
	SocketErr int64   // connect + read + write + timeout errors
	Timeouts  int64   // of which timeouts (no response within wrk's 2 s)
	Non2xx    int64   // responses outside 2xx/3xx
}

// parseWrk reads the output of `wrk --latency`.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "50%":
			v, err := parseWrkTime(f[1])
			if err != nil {
				return r, err
			}
			r.P50, have50 = v, true
		case len(f) == 2 && f[0] == "99%":
			v, err := parseWrkTime(f[1])
			if err != nil {
				return r, err
			}
			r.P99, have99 = v, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: request count %q: %w", f[0], err)
			}
			s, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(f[3], ","), "s"), 64)
			if err != nil {
				return r, fmt.Errorf("wrk: duration %q: %w", f[3], err)
			}
			r.Requests, r.Seconds, haveReq = n, s, true
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: Requests/sec %q: %w", f[1], err)
			}
			r.RPS, haveRPS = v, true
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: socket errors %q: %w", sc.Text(), err)
				}
				r.SocketErr += n
				if f[i] == "timeout" {
					r.Timeouts = n
				}
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: non-2xx %q: %w", f[4], err)
			}
			r.Non2xx = n
		}
	}
	if !haveReq || !haveRPS || !have50 || !have99 {
		return r, fmt.Errorf("wrk output lacks requests, Requests/sec or latency distribution (was --latency given?):\n%s", out)
	}
	return r, nil
}

// parseWrkTime converts wrk's "812.00us", "1.23ms", "2.00s", "1.50m" to µs.
func parseWrkTime(s string) (float64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}, {"h", 3600e6}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk: time %q: %w", s, err)
			}
			return f * u.mult, nil
		}
	}
	return 0, fmt.Errorf("wrk: time %q: unknown unit", s)
}

// procStat is the part of /proc/<pid>/stat the bench reads.
type procStat struct {
	PPID         int
	UTime, STime int64 // clock ticks
}

// parseProcStat parses the content of /proc/<pid>/stat. The command name
// is in parentheses and may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no ')' in %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat: too few fields in %q", s)
	}
	var st procStat
	var err error
	if st.PPID, err = strconv.Atoi(f[1]); err != nil {
		return st, fmt.Errorf("stat: ppid: %w", err)
	}
	if st.UTime, err = strconv.ParseInt(f[11], 10, 64); err != nil {
		return st, fmt.Errorf("stat: utime: %w", err)
	}
	if st.STime, err = strconv.ParseInt(f[12], 10, 64); err != nil {
		return st, fmt.Errorf("stat: stime: %w", err)
	}
	return st, nil
}

// processTree returns pid and all its descendants (a proxy that forks
// workers is measured whole).
func processTree(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseProcStat(string(b))
		if err != nil {
			continue
		}
		children[st.PPID] = append(children[st.PPID], pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// cpuTicks is utime and stime summed over pids.
func cpuTicks(pids []int) (user, sys int64, err error) {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, 0, err
		}
		st, err := parseProcStat(string(b))
		if err != nil {
			return 0, 0, err
		}
		user += st.UTime
		sys += st.STime
	}
	return user, sys, nil
}

// rssKiB is VmRSS summed over pids.
func rssKiB(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sum += parseVmRSS(string(b))
	}
	return sum
}

func parseVmRSS(status string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// clockTicks is USER_HZ, the unit of utime and stime.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// parseCPUList expands a list such as "0-3,6" (Cpus_allowed_list).
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("cpu list %q: %w", s, err)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// allowedCPUs is the CPUs this process may run on.
func allowedCPUs() []int {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				if cpus, err := parseCPUList(v); err == nil && len(cpus) > 0 {
					return cpus
				}
			}
		}
	}
	return nil
}

func cpuListString(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// parseCPUBusy returns the busy ticks (all but idle and iowait) of the
// line named cpu ("cpu" for the total, "cpu1" for one CPU) of /proc/stat.
func parseCPUBusy(stat, cpu string) (int64, error) {
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != cpu {
			continue
		}
		var busy int64
		for i, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/stat %s: %w", cpu, err)
			}
			// idle and iowait are not busy; guest time is already in user.
			if i == 3 || i == 4 || i >= 8 {
				continue
			}
			busy += n
		}
		return busy, nil
	}
	return 0, fmt.Errorf("/proc/stat: no line %q", cpu)
}
