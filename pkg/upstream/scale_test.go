package upstream

// Scale benchmarks (issue 11): the time to apply a one-node change to a
// large upstream, and the memory of 10,000 upstreams × 100 nodes. See
// bench/README.md ("Scale") for the commands and figures.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/ewma"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/maglev"
	"github.com/remora-mesh/remora/pkg/balancer/ringhash"
	"github.com/remora-mesh/remora/pkg/balancer/roundrobin"
	"github.com/remora-mesh/remora/pkg/balancer/weightedroundrobin"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
)

// scaleBuilders are the policies the scale benchmarks build: the default
// and the ones whose Build does the most work.
func scaleBuilders(tb testing.TB) []balancer.Builder {
	key, err := hashkey.Spec{Header: "x-user-id"}.Compile()
	if err != nil {
		tb.Fatal(err)
	}
	return []balancer.Builder{
		roundrobin.Builder{},
		weightedroundrobin.Builder{},
		ewma.Builder{},
		ringhash.Builder{Key: key},
		maglev.Builder{Key: key},
	}
}

// scaleLabels are the metadata keys and values of the scale benchmarks'
// instances; a registry decodes a few such labels per instance.
var scaleLabels = [...][2]string{{"version", "v1"}, {"zone", "zone-a"}, {"team", "payments"}, {"env", "prod"}}

// scaleSet returns n instances named prefix-000000…, sorted by ID as a
// Watcher returns them, each with its own metadata map of labels entries
// and an address unique across sets with distinct base.
func scaleSet(prefix string, base, n, labels int) []discovery.Instance {
	set := make([]discovery.Instance, n)
	for i := range set {
		a := base + i
		set[i] = discovery.Instance{
			ID:      prefix + "-" + fmt.Sprintf("%06d", i),
			Address: fmt.Sprintf("10.%d.%d.%d", a>>16&255, a>>8&255, a&255),
			Port:    8080, Weight: 1, Healthy: true,
		}
		if labels > 0 {
			m := make(map[string]string, labels)
			for _, kv := range scaleLabels[:labels] {
				m[kv[0]] = kv[1]
			}
			set[i].Metadata = m
		}
	}
	return set
}

// oneNodeChanges returns a set of n nodes and, for each kind of change, the
// same set with one node changed: "modify" doubles the weight of the node
// in the middle, "add_remove" inserts a node in the middle (a benchmark
// alternates between the two sets, so half its operations add the node
// and half remove it). Every set has metadata maps of its own, as from a
// registry that decodes each set afresh: comparing instances then compares
// their labels (an adapter that keeps its unchanged instances, like etcd's,
// shares their maps across sets, which compare at once).
func oneNodeChanges(n int) (base []discovery.Instance, changed map[string][]discovery.Instance) {
	base = scaleSet("node", 0, n, 2)
	mod := discovery.CloneSet(base)
	mod[n/2].Weight = 2
	extra := base[n/2]
	extra.ID += "a" // sorts right after the middle node
	extra.Port = 9090
	add := discovery.CloneSet(append(append(append([]discovery.Instance(nil), base[:n/2+1]...), extra), base[n/2+1:]...))
	return base, map[string][]discovery.Instance{"modify": mod, "add_remove": add}
}

var scaleSizes = []int{100, 1000, 10000}

// BenchmarkApplyOneNodeChange measures the controller's work for a
// one-node change: apply, the function Run calls with each set the watcher
// delivers (reconcile by ID, split, build pickers, publish the Snapshot),
// called directly on the controller Run would use, so that the channel
// hand-off between goroutines does not blur the figure (see
// BenchmarkApplyOneNodeChangeRun for it included). Each operation hands the
// controller a whole set that differs by one node from the one before.
func BenchmarkApplyOneNodeChange(b *testing.B) {
	for _, bl := range scaleBuilders(b) {
		for _, n := range scaleSizes {
			base, changed := oneNodeChanges(n)
			for _, kind := range []string{"modify", "add_remove"} {
				b.Run(fmt.Sprintf("%s/nodes=%d/%s", bl.Name(), n, kind), func(b *testing.B) {
					u := New(Config{Name: "bench", Balancer: bl, Canary: canary.DefaultRule()}) // as every upstream has by default
					c := newController(u)
					sets := [2][]discovery.Instance{changed[kind], base}
					c.apply(base)
					v := u.Snapshot().Version
					b.ReportAllocs()
					b.ResetTimer()
					for i := range b.N {
						c.apply(sets[i%2])
					}
					b.StopTimer()
					if got := u.Snapshot().Version; got != v+uint64(b.N) {
						b.Fatalf("version %d after %d applies from %d", got, b.N, v)
					}
				})
			}
		}
	}
}

// chanWatcher hands the sets sent on its channel to Run.
type chanWatcher chan []discovery.Instance

func (w chanWatcher) Next(ctx context.Context) ([]discovery.Instance, error) {
	select {
	case set := <-w:
		return set, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (w chanWatcher) Stop() error { return nil }

// BenchmarkApplyOneNodeChangeRun is BenchmarkApplyOneNodeChange through
// Run: from handing a set to the watcher to the new Snapshot being
// published, goroutine hand-offs included.
func BenchmarkApplyOneNodeChangeRun(b *testing.B) {
	for _, bl := range scaleBuilders(b)[:1] {
		for _, n := range scaleSizes {
			base, changed := oneNodeChanges(n)
			b.Run(fmt.Sprintf("%s/nodes=%d/modify", bl.Name(), n), func(b *testing.B) {
				u := New(Config{Name: "bench", Balancer: bl, Canary: canary.DefaultRule()}) // as every upstream has by default
				w := make(chanWatcher)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { u.Run(ctx, w); close(done) }()
				defer func() { cancel(); <-done }()
				sets := [2][]discovery.Instance{changed["modify"], base}
				w <- base
				for u.Snapshot().Version < 1 {
					runtime.Gosched()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					v := u.Snapshot().Version
					w <- sets[i%2]
					for u.Snapshot().Version == v {
						runtime.Gosched()
					}
				}
			})
		}
	}
}

// BenchmarkMillionNodes builds 10,000 upstreams of 100 nodes each through
// the path Remora runs (a registry, a watch and a controller per upstream,
// a Table of them), waits for every upstream's first snapshot and first
// passive health interval, collects garbage and reports the memory per
// node: the process's resident set
// (VmRSS), the Go heap in use and the goroutine stacks (two goroutines per
// upstream), all above what the process held before, and the heap the
// registry's own copy of the sets takes within the heap.
// REMORA_SCALE_UPSTREAMS, REMORA_SCALE_NODES and REMORA_SCALE_LABELS (labels
// per instance, 0–4, default 2) change the shape; REMORA_SCALE_HEAPPROFILE
// names a file to write a heap profile to once every upstream is built.
// Run it alone, once:
//
//	go test -run '^$' -bench BenchmarkMillionNodes -benchtime 1x ./pkg/upstream
func BenchmarkMillionNodes(b *testing.B) {
	ups, per, labels := envInt(b, "REMORA_SCALE_UPSTREAMS", 10000), envInt(b, "REMORA_SCALE_NODES", 100), envInt(b, "REMORA_SCALE_LABELS", 2)
	if labels < 0 || labels > len(scaleLabels) {
		b.Fatalf("REMORA_SCALE_LABELS=%d; want 0 to %d", labels, len(scaleLabels))
	}
	total := float64(ups * per)
	for range b.N {
		b.StopTimer()
		rss0, heap0, stack0 := settle(b)
		b.StartTimer()
		start := time.Now()
		reg := discoverytest.NewRegistry()
		for i := range ups {
			reg.Set(scaleService(i), scaleSet(scaleService(i), i*per, per, labels)...)
		}
		b.StopTimer()
		_, heapReg, _ := settle(b)
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		table := NewTable(runScaleUpstreams(b, ctx, &wg, reg, ups)...)
		built := time.Since(start)
		b.StopTimer()
		// Measure as it runs: after every upstream's first passive health
		// interval.
		time.Sleep(health.DefaultInterval + time.Second)
		rss, heap, stack := settle(b)
		if path := os.Getenv("REMORA_SCALE_HEAPPROFILE"); path != "" {
			writeHeapProfile(b, path)
		}
		nodes := 0
		for _, u := range table.All() {
			nodes += len(u.Snapshot().Nodes)
		}
		if nodes != ups*per {
			b.Fatalf("%d nodes published; want %d", nodes, ups*per)
		}
		b.ReportMetric(float64(rss-rss0)/total, "rss-B/node")
		b.ReportMetric(float64(heap-heap0)/total, "heap-B/node")
		b.ReportMetric(float64(heapReg-heap0)/total, "registry-heap-B/node")
		b.ReportMetric(float64(stack-stack0)/total, "stack-B/node")
		b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
		b.ReportMetric(built.Seconds(), "build-s")
		cancel()
		wg.Wait()
		_ = reg.Close()
		runtime.KeepAlive(table)
		b.StartTimer()
	}
}

// runScaleUpstreams runs an upstream for each of the first n services of
// reg (scaleService(0) on), on a goroutine of its own under ctx that wg
// waits for, and returns them once each has published its first set. They
// share one logger, as Remora's do.
func runScaleUpstreams(tb testing.TB, ctx context.Context, wg *sync.WaitGroup, reg *discoverytest.Registry, n int) []*Upstream {
	log := discovery.Env{}.Logger()
	list := make([]*Upstream, n)
	for i := range list {
		u := New(Config{Name: scaleService(i), Log: log, Canary: canary.DefaultRule()})
		w, err := reg.Watch(ctx, u.Service())
		if err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); u.Run(ctx, w) }()
		list[i] = u
	}
	for _, u := range list {
		for u.Snapshot().Version < 1 {
			time.Sleep(time.Millisecond)
		}
	}
	return list
}

func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
}

func scaleService(i int) string { return fmt.Sprintf("svc-%05d", i) }

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("%s=%q: want a count", name, v)
	}
	return n
}

// settle collects garbage, returns freed memory to the system and reports
// the process's resident set (VmRSS), the live heap and the goroutine
// stacks, in bytes.
func settle(tb testing.TB) (rss, heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return vmRSS(tb), m.HeapAlloc, m.StackInuse
}

func vmRSS(tb testing.TB) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status to read the resident set from: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := bytes.Fields(sc.Bytes()); len(f) == 3 && string(f[0]) == "VmRSS:" && string(f[2]) == "kB" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	tb.Fatal("no VmRSS line in /proc/self/status")
	return 0
}

// TestRunFollowsPollerOnItsOwnGoroutine: an upstream following a watcher
// built on discovery.Latest (every adapter's) costs one goroutine, not
// two — at ten thousand upstreams the second one's stack was 80 MB.
func TestRunFollowsPollerOnItsOwnGoroutine(t *testing.T) {
	const ups = 200
	reg := discoverytest.NewRegistry()
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range ups {
		reg.Set(scaleService(i), scaleSet(scaleService(i), i*2, 2, 2)...)
	}
	w, err := reg.Watch(ctx, scaleService(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.(discovery.Poller); !ok {
		t.Fatalf("the registry's watcher %T is not a discovery.Poller", w)
	}
	_ = w.Stop()
	before := runtime.NumGoroutine()
	list := runScaleUpstreams(t, ctx, &wg, reg, ups)
	if n := runtime.NumGoroutine() - before; n > ups+ups/10 {
		t.Errorf("%d upstreams run %d goroutines; want about one each", ups, n)
	}
	// And it still follows: a new set reaches the snapshot.
	reg.Set(scaleService(7), scaleSet(scaleService(7), 5000, 3, 2)...)
	deadline := time.Now().Add(5 * time.Second)
	for len(list[7].Snapshot().Nodes) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("upstream 7 has %d nodes; want the 3 of the new set", len(list[7].Snapshot().Nodes))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestParkedUpstreamStackStaysSmall: an upstream's goroutine parks in the
// controller's loop with a stack the collector halves to 4 KiB (8 KiB in
// a race build, whose frames are larger); at ten thousand upstreams each
// KiB is 10 MB. Containing the loop's panics in a wrapper (two more frames
// under the parked select) kept it at 8 KiB. The Makefile runs this test
// without -race too.
func TestParkedUpstreamStackStaysSmall(t *testing.T) {
	const ups = 1000
	most := uint64(4 << 10)
	if raceEnabled {
		most = 8 << 10
	}
	reg := discoverytest.NewRegistry()
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range ups {
		reg.Set(scaleService(i), scaleSet(scaleService(i), i, 1, 2)...)
	}
	_, _, stack0 := settle(t)
	runScaleUpstreams(t, ctx, &wg, reg, ups)
	_, _, stack := settle(t)
	// A little over the bound for the test's own goroutines.
	if per := (stack - stack0) / ups; per > most+most/8 {
		t.Errorf("a parked upstream takes %d B of stack; want at most %d", per, most)
	}
}
