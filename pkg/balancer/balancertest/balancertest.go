// Package balancertest has the checks every load-balancing policy runs:
// distributions against weights (chi-square), zero allocations per pick,
// race-clean picks during concurrent rebuilds, and benchmarks at several
// node counts. Policies call it from their own tests.
package balancertest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
)

// Nodes returns healthy nodes with the given weights, with IDs
// "node-00000", "node-00001", … (sorted), and stats that joined long ago
// (outside any slow-start window).
func Nodes(weights ...uint32) []*node.Node {
	ns := make([]*node.Node, len(weights))
	for i, w := range weights {
		ns[i] = NewNode(i, w, time.Time{})
	}
	return ns
}

// NewNode returns healthy node i with weight w that joined at added.
func NewNode(i int, w uint32, added time.Time) *node.Node {
	return node.New(discovery.Instance{
		ID:      fmt.Sprintf("node-%05d", i),
		Address: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff),
		Port:    8080,
		Weight:  w,
		Healthy: true,
	}, node.NewStats(added))
}

// Uniform returns n nodes of weight 1.
func Uniform(n int) []*node.Node {
	ws := make([]uint32, n)
	for i := range ws {
		ws[i] = 1
	}
	return Nodes(ws...)
}

// Rand returns a deterministic random source for a Builder's Rand field.
// It is not safe for concurrent use.
func Rand(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Uint64
}

// Clock is a settable clock for a Builder's Now field; safe for concurrent
// use.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Set sets the clock.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Count picks n times with info and returns how often each of nodes was
// picked, by index; it fails the test on a nil or foreign node.
func Count(t testing.TB, p balancer.Picker, nodes []*node.Node, info balancer.Info, n int) []int {
	t.Helper()
	return CountEach(t, p, nodes, slices.Repeat([]balancer.Info{info}, n))
}

// CountEach picks once with each of infos (as from Requests, to spread
// keys over a consistent-hash picker) and returns how often each of nodes
// was picked, by index; it fails the test on a nil or foreign node.
func CountEach(t testing.TB, p balancer.Picker, nodes []*node.Node, infos []balancer.Info) []int {
	t.Helper()
	index := make(map[*node.Node]int, len(nodes))
	for i, nd := range nodes {
		index[nd] = i
	}
	counts := make([]int, len(nodes))
	for _, info := range infos {
		nd := p.Pick(info)
		i, ok := index[nd]
		if !ok {
			t.Fatalf("Pick returned %v, not one of the %d nodes", nd, len(nodes))
		}
		counts[i]++
	}
	return counts
}

// ChiSquare returns Pearson's statistic of observed counts against
// expected shares (any positive scale; zero-share categories must be
// empty and are left out) and its degrees of freedom.
func ChiSquare(observed []int, shares []float64) (stat float64, df int) {
	var total, sum float64
	for i := range observed {
		total += float64(observed[i])
		sum += shares[i]
	}
	for i, o := range observed {
		if shares[i] == 0 {
			if o != 0 {
				return math.Inf(1), 0
			}
			continue
		}
		e := total * shares[i] / sum
		stat += (float64(o) - e) * (float64(o) - e) / e
		df++
	}
	return stat, df - 1
}

// Critical returns the chi-square value that df degrees of freedom exceed
// with probability 0.001 (Wilson–Hilferty approximation, within 1% for
// df ≥ 1 at this tail).
func Critical(df int) float64 {
	if df < 1 {
		return 0
	}
	const z = 3.090232 // standard normal quantile at 0.999
	k := float64(df)
	c := 1 - 2/(9*k) + z*math.Sqrt(2/(9*k))
	return k * c * c * c
}

// AssertShares fails the test unless counts match shares within the
// chi-square bound at p = 0.001.
func AssertShares(t testing.TB, counts []int, shares []float64) {
	t.Helper()
	stat, df := ChiSquare(counts, shares)
	if crit := Critical(df); !(stat <= crit) {
		t.Fatalf("counts %v do not match shares %v: chi-square %.1f > %.1f (df %d)", counts, shares, stat, crit, df)
	}
}

// Weights returns the nodes' weights as shares.
func Weights(nodes []*node.Node) []float64 {
	ws := make([]float64, len(nodes))
	for i, n := range nodes {
		ws[i] = float64(n.Weight)
	}
	return ws
}

// AssertNoAllocs fails the test if Pick allocates.
func AssertNoAllocs(t testing.TB, p balancer.Picker, infos ...balancer.Info) {
	t.Helper()
	if len(infos) == 0 {
		infos = []balancer.Info{{}}
	}
	for _, info := range infos {
		if a := testing.AllocsPerRun(1000, func() { p.Pick(info) }); a != 0 {
			t.Fatalf("Pick allocates %v times per call", a)
		}
	}
}

// Requests returns n infos whose requests carry distinct values of the
// header X-Key (key-0, key-1, …), a cookie and a query parameter of the
// same value, and distinct client addresses.
func Requests(n int) []balancer.Info {
	infos := make([]balancer.Info, n)
	for i := range infos {
		k := "key-" + strconv.Itoa(i)
		r := httptest.NewRequest("GET", "/p/"+k+"?k="+k, nil)
		r.Header.Set("X-Key", k)
		r.Header.Set("Cookie", "k="+k)
		r.RemoteAddr = fmt.Sprintf("192.168.%d.%d:4000", i>>8&0xff, i&0xff)
		infos[i] = balancer.Info{Request: r}
	}
	return infos
}

// BenchSizes are the node counts Bench measures.
var BenchSizes = []int{3, 100, 1000, 10000}

// Bench benchmarks Pick of b's pickers at BenchSizes nodes (weights 1 to
// 4, each with a latency sample of 1 to 7 ms a little while ago) in
// parallel, cycling through infos (one empty Info when none).
func Bench(bm *testing.B, b balancer.Builder, infos []balancer.Info) {
	if len(infos) == 0 {
		infos = []balancer.Info{{}}
	}
	for _, n := range BenchSizes {
		ws := make([]uint32, n)
		for i := range ws {
			ws[i] = uint32(1 + i%4)
		}
		nodes := Nodes(ws...)
		for i, n := range nodes {
			n.Stats.Begin(time.Now())
			n.Stats.EndAt(time.Now().Add(-time.Duration(i%100)*time.Millisecond), time.Duration(1+i%7)*time.Millisecond, false)
		}
		p := b.Build(nodes)
		bm.Run("nodes="+strconv.Itoa(n), func(bm *testing.B) {
			bm.ReportAllocs()
			bm.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if p.Pick(infos[i%len(infos)]) == nil {
						panic("nil pick")
					}
					i++
				}
			})
		})
	}
}

// Race picks from many goroutines while another rebuilds b's picker over
// changing node sets (weights, joins, leaves, empty sets) and swaps it in
// through an atomic pointer, as the upstream controller does; pickers also
// record attempts on the nodes' stats. Run it with -race. It fails the test
// if a pick returns a node that was not given to that picker.
func Race(t *testing.T, b balancer.Builder, infos []balancer.Info) {
	if len(infos) == 0 {
		infos = []balancer.Info{{}}
	}
	type snapshot struct {
		picker balancer.Picker
		nodes  map[*node.Node]bool
	}
	stats := make([]*node.Stats, 40)
	for i := range stats {
		stats[i] = node.NewStats(time.Now())
	}
	build := func(r *rand.Rand) *snapshot {
		var ns []*node.Node
		for i := range stats {
			if r.IntN(3) == 0 {
				continue
			}
			n := NewNode(i, uint32(1+r.IntN(5)), time.Time{})
			n.Stats = stats[i] // shared across rebuilds, like the controller
			ns = append(ns, n)
		}
		if r.IntN(10) == 0 {
			ns = nil
		}
		s := &snapshot{picker: b.Build(ns), nodes: map[*node.Node]bool{}}
		for _, n := range ns {
			s.nodes[n] = true
		}
		return s
	}
	var cur atomic.Pointer[snapshot]
	cur.Store(build(rand.New(rand.NewPCG(1, 1))))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() || i < 1000; i++ {
				s := cur.Load()
				n := s.picker.Pick(infos[(i+g)%len(infos)])
				if n == nil {
					if len(s.nodes) != 0 {
						t.Error("nil pick from a non-empty picker")
						return
					}
					continue
				}
				if !s.nodes[n] {
					t.Error("picked a node the picker was not built with")
					return
				}
				n.Stats.Begin(time.Now())
				n.Stats.End(time.Duration(1+i%5)*time.Millisecond, i%11 == 0)
			}
		}()
	}
	r := rand.New(rand.NewPCG(2, 2))
	for range 200 {
		cur.Store(build(r))
	}
	stop.Store(true)
	wg.Wait()
}

// Mapping returns the ID of the node p picks for each info.
func Mapping(p balancer.Picker, infos []balancer.Info) []string {
	ids := make([]string, len(infos))
	for i, info := range infos {
		if n := p.Pick(info); n != nil {
			ids[i] = n.ID
		}
	}
	return ids
}

// Moved counts the entries that differ between two mappings.
func Moved(a, b []string) int {
	moved := 0
	for i := range a {
		if a[i] != b[i] {
			moved++
		}
	}
	return moved
}
