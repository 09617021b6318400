package consul

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name           string
		prev, got, out uint64
	}{
		{"first read", 0, 42, 42},
		{"moved forward", 42, 43, 43},
		{"unchanged (wait timed out)", 42, 42, 42},
		{"went backwards", 42, 7, 0},
		{"zero after a value", 42, 0, 0},
		{"zero on the first read", 0, 0, 0},
		{"forward after a reset", 0, 7, 7},
	}
	for _, tc := range tests {
		if out := nextIndex(tc.prev, tc.got); out != tc.out {
			t.Errorf("%s: nextIndex(%d, %d) = %d, want %d", tc.name, tc.prev, tc.got, out, tc.out)
		}
	}
}

// fakeHealth is an in-memory healthClient driven step by step by the test:
// every query is handed to the test on calls and answered with reply.
type fakeHealth struct{ calls chan *fakeCall }

type fakeCall struct {
	service, tag string
	passingOnly  bool
	q            *api.QueryOptions
	reply        chan fakeReply
}

type fakeReply struct {
	entries []*api.ServiceEntry
	meta    *api.QueryMeta
	err     error
}

func (f *fakeHealth) Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	c := &fakeCall{service: service, tag: tag, passingOnly: passingOnly, q: q, reply: make(chan fakeReply, 1)}
	ctx := q.Context()
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.entries, r.meta, r.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// fakeClock is virtual time: sleep records the wait and advances now.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	if d > 0 {
		c.sleeps = append(c.sleeps, d)
		c.t = c.t.Add(d)
	}
	c.mu.Unlock()
	return ctx.Err() == nil
}

// takeSleeps returns and clears the recorded waits.
func (c *fakeClock) takeSleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sleeps
	c.sleeps = nil
	return s
}

type fixture struct {
	t     *testing.T
	fake  *fakeHealth
	clock *fakeClock
	reg   *registry
	w     discovery.Watcher
	logs  *test.Hook
}

func newFixture(t *testing.T, o Options, tune ...func(*registry)) *fixture {
	t.Helper()
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	f := &fixture{t: t, fake: &fakeHealth{calls: make(chan *fakeCall)}, clock: &fakeClock{t: time.Unix(1e9, 0)}, logs: hook}
	f.reg = newRegistry(f.fake, &o, logrus.NewEntry(logger))
	f.reg.now, f.reg.sleep = f.clock.now, f.clock.sleep
	f.reg.rand = func() float64 { return 0 }
	for _, fn := range tune {
		fn(f.reg)
	}
	w, err := f.reg.Watch(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	t.Cleanup(func() { _ = f.reg.Close() })
	return f
}

// call waits for the watcher's next query.
func (f *fixture) call() *fakeCall {
	f.t.Helper()
	select {
	case c := <-f.fake.calls:
		if c.q.RequireConsistent != (c.q.WaitIndex == 0) {
			f.t.Errorf("query at index %d: consistent %v; want a fresh read consistent, a blocking one not", c.q.WaitIndex, c.q.RequireConsistent)
		}
		return c
	case <-time.After(5 * time.Second):
		f.t.Fatal("the watcher sent no query")
		return nil
	}
}

func (f *fixture) next() ([]discovery.Instance, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	set, err := f.w.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		f.t.Fatal("Next did not return")
	}
	return set, err
}

// nextBlocks asserts that Next has nothing new to say.
func (f *fixture) nextBlocks() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if set, err := f.w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		f.t.Fatalf("Next returned %v, %v; want it to block", set, err)
	}
}

func ok(index uint64, entries ...*api.ServiceEntry) fakeReply {
	return fakeReply{entries: entries, meta: &api.QueryMeta{LastIndex: index}}
}

func ids(set []discovery.Instance) string {
	var s []string
	for _, in := range set {
		s = append(s, in.ID)
	}
	return strings.Join(s, ",")
}

func TestWatcherQueriesAndIndexRules(t *testing.T) {
	f := newFixture(t, Options{Tag: "prod", Datacenter: "dc9", Namespace: "ns", Partition: "pt", WaitTime: Duration(30 * time.Second)})
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	b := entry("n1", "", svc("b", "10.0.0.2", 80))

	c := f.call()
	if c.service != "web" || c.tag != "prod" || !c.passingOnly || c.q.WaitIndex != 0 || c.q.WaitTime != 30*time.Second ||
		c.q.Datacenter != "dc9" || c.q.Namespace != "ns" || c.q.Partition != "pt" {
		t.Fatalf("first query: %+v %+v", c, c.q)
	}
	c.reply <- ok(10, a)
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("first Next: %v %v", set, err)
	}

	steps := []struct {
		name      string
		wantIndex uint64
		reply     fakeReply
		wantSet   string // "" = no change: Next must block
	}{
		{"blocks on the returned index", 10, ok(12, a, b), "n1/a,n1/b"},
		{"wait timed out, same index", 12, ok(12, a, b), ""},
		{"index went backwards: not published, reset", 12, ok(5, a), ""},
		{"after a reset: fresh read, published", 0, ok(6, a), "n1/a"},
		{"index 0 after a value is backwards too", 6, ok(0, b), ""},
		{"fresh read", 0, ok(8, b), "n1/b"},
		{"and then blocks", 8, ok(9), "<empty>"},
	}
	c = f.call()
	for _, s := range steps {
		if c.q.WaitIndex != s.wantIndex {
			t.Fatalf("%s: WaitIndex %d, want %d", s.name, c.q.WaitIndex, s.wantIndex)
		}
		c.reply <- s.reply
		if s.wantSet == "" {
			c = f.call() // the reply is handled once the next query starts
			f.nextBlocks()
			continue
		}
		set, err := f.next()
		got := ids(set)
		if s.wantSet == "<empty>" && set != nil && len(set) == 0 {
			got = s.wantSet
		}
		if err != nil || got != s.wantSet {
			t.Fatalf("%s: Next = %q %v, want %q", s.name, got, err, s.wantSet)
		}
		c = f.call()
	}
}

func TestWatcherIndexSequence(t *testing.T) {
	// The same rules as a plain sequence, without Next in between, to check
	// that the reset happens for every shape of answer.
	f := newFixture(t, Options{})
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	replies := []uint64{10, 12, 12, 5, 6, 0, 8, 9}
	wantWait := []uint64{0, 10, 12, 12, 0, 6, 0, 8, 9}
	for i, idx := range replies {
		c := f.call()
		if c.q.WaitIndex != wantWait[i] {
			t.Fatalf("query %d: WaitIndex %d, want %d", i, c.q.WaitIndex, wantWait[i])
		}
		c.reply <- ok(idx, a)
	}
	if c := f.call(); c.q.WaitIndex != wantWait[len(replies)] {
		t.Fatalf("last query: WaitIndex %d, want %d", c.q.WaitIndex, wantWait[len(replies)])
	}
}

func TestWatcherPacesQueries(t *testing.T) {
	f := newFixture(t, Options{})
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	f.call().reply <- ok(1, a)
	// An answer that comes back at once: the next query waits out the
	// minimum interval.
	c := f.call()
	if s := f.clock.takeSleeps(); len(s) != 1 || s[0] != defaultMinInterval {
		t.Fatalf("sleeps before the 2nd query: %v, want [%v]", s, defaultMinInterval)
	}
	// An answer after a long block: no extra wait.
	f.clock.advance(time.Minute)
	c.reply <- ok(2, a)
	c = f.call()
	if s := f.clock.takeSleeps(); len(s) != 0 {
		t.Fatalf("sleeps after a long block: %v, want none", s)
	}
	// Half the interval gone: wait the other half.
	f.clock.advance(defaultMinInterval / 2)
	c.reply <- ok(3, a)
	f.call()
	if s := f.clock.takeSleeps(); len(s) != 1 || s[0] != defaultMinInterval/2 {
		t.Fatalf("sleeps: %v, want [%v]", s, defaultMinInterval/2)
	}
}

func TestWatcherErrorsBackOffAndKeepTheSet(t *testing.T) {
	f := newFixture(t, Options{})
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	f.call().reply <- ok(10, a)
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("first Next: %v %v", set, err)
	}
	c := f.call()
	f.clock.takeSleeps()

	boom := errors.New("connection refused")
	for attempt := 1; attempt <= 3; attempt++ {
		if attempt > 1 {
			if c = f.call(); c.q.WaitIndex != 0 {
				t.Fatalf("attempt %d after an error: WaitIndex %d, want 0 (fresh read)", attempt, c.q.WaitIndex)
			}
		}
		c.reply <- fakeReply{err: boom}
		set, err := f.next()
		if !errors.Is(err, boom) || set != nil {
			t.Fatalf("attempt %d: Next = %v, %v; want the error and no set", attempt, set, err)
		}
		if !strings.Contains(err.Error(), `"web"`) {
			t.Fatalf("error does not name the service: %v", err)
		}
	}
	if c = f.call(); c.q.WaitIndex != 0 {
		t.Fatalf("after errors: WaitIndex %d, want 0", c.q.WaitIndex)
	}
	// rand is 0, so backoff n is base·2^(n-1)/2, and never less than the
	// minimum interval.
	want := []time.Duration{max(defaultBackoffBase/2, defaultMinInterval), defaultBackoffBase, 2 * defaultBackoffBase}
	if got := f.clock.takeSleeps(); !equalDurations(got, want) {
		t.Fatalf("sleeps %v, want %v", got, want)
	}
	// Recovery with the same set: it is returned once more, which tells the
	// consumer the registry is readable again (its staleness ends), and
	// then nothing until a change.
	c.reply <- ok(11, a)
	f.call()
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("after recovery: Next = %v, %v; want the unchanged set once", set, err)
	}
	f.nextBlocks()
	warns := 0
	for _, e := range f.logs.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warns++
		}
	}
	if warns != 1 {
		t.Fatalf("%d warnings logged for one outage, want 1", warns)
	}
}

func TestWatcherBackoffResetsAfterSuccess(t *testing.T) {
	const pace = 10 * time.Millisecond
	f := newFixture(t, Options{}, func(r *registry) { r.minInterval = pace })
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	boom := errors.New("boom")
	f.call().reply <- fakeReply{err: boom}
	f.call().reply <- fakeReply{err: boom}
	f.call().reply <- ok(3, a)
	f.call().reply <- fakeReply{err: boom}
	f.call()
	got := f.clock.takeSleeps()
	want := []time.Duration{defaultBackoffBase / 2, defaultBackoffBase, pace, defaultBackoffBase / 2}
	if !equalDurations(got, want) {
		t.Fatalf("sleeps %v, want %v", got, want)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWatcherPermissionErrors(t *testing.T) {
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	tests := []struct {
		name  string
		reply fakeReply
		want  []string
	}{
		{"results filtered by ACLs", fakeReply{meta: &api.QueryMeta{LastIndex: 11, ResultsFilteredByACLs: true}},
			[]string{"permission denied", "hid instances", `"web"`, "service:read"}},
		{"403", fakeReply{err: api.StatusError{Code: 403, Body: "ACL not found"}},
			[]string{"permission denied", "HTTP 403", "ACL not found", "token_file"}},
		{"401", fakeReply{err: api.StatusError{Code: 401, Body: "nope"}}, []string{"HTTP 401"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			f.call().reply <- ok(10, a)
			if _, err := f.next(); err != nil {
				t.Fatal(err)
			}
			f.call().reply <- tc.reply
			set, err := f.next()
			if !errors.Is(err, ErrPermissionDenied) || set != nil {
				t.Fatalf("Next = %v, %v; want ErrPermissionDenied and no set", set, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// A 500 is not a permission problem.
	f := newFixture(t, Options{})
	f.call().reply <- fakeReply{err: api.StatusError{Code: 500, Body: "No cluster leader"}}
	if _, err := f.next(); err == nil || errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("500: %v", err)
	}
}

// Consul masks X-Consul-Results-Filtered-By-ACLs from tokenless requests, so
// an empty answer to one, under default-deny ACLs, counts as denied.
func TestWatcherAnonymousUnderDefaultDeny(t *testing.T) {
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	deny := func(index uint64, es ...*api.ServiceEntry) fakeReply {
		r := ok(index, es...)
		r.meta.DefaultACLPolicy = "deny"
		return r
	}
	tests := []struct {
		name      string
		anonymous bool
		reply     fakeReply
		denied    bool
	}{
		{"no token, deny, empty", true, deny(5), true},
		{"no token, deny, instances", true, deny(5, a), false},
		{"no token, allow, empty", true, ok(5), false},
		{"token, deny, empty", false, deny(5), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{}, func(r *registry) { r.anonymous = tc.anonymous })
			f.call().reply <- tc.reply
			set, err := f.next()
			if tc.denied {
				if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), TokenEnv) || !strings.Contains(err.Error(), "token: anonymous") {
					t.Fatalf("Next = %v, %v; want ErrPermissionDenied telling how to set a token", set, err)
				}
				if c := f.call(); c.q.WaitIndex != 0 {
					t.Fatalf("retry WaitIndex %d, want 0", c.q.WaitIndex)
				}
				return
			}
			if err != nil || set == nil {
				t.Fatalf("Next = %v, %v; want a set", set, err)
			}
		})
	}
}

func TestWatcherIncludeWarning(t *testing.T) {
	f := newFixture(t, Options{IncludeWarning: true})
	c := f.call()
	if c.passingOnly {
		t.Fatal("include_warning must not ask Consul for passing only")
	}
	c.reply <- ok(1,
		entry("n1", "", svc("ok", "10.0.0.1", 80), api.HealthPassing),
		entry("n1", "", svc("warn", "10.0.0.2", 80), api.HealthWarning),
		entry("n1", "", svc("crit", "10.0.0.3", 80), api.HealthCritical),
	)
	if set, err := f.next(); err != nil || ids(set) != "n1/ok,n1/warn" {
		t.Fatalf("Next = %v, %v", set, err)
	}
}

func TestWatcherSkipsUnusableAndLogs(t *testing.T) {
	f := newFixture(t, Options{})
	f.call().reply <- ok(1, entry("n1", "", svc("a", "10.0.0.1", 80)), entry("n1", "", svc("noport", "10.0.0.1", 0)))
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("Next = %v, %v", set, err)
	}
	var found bool
	for _, e := range f.logs.AllEntries() {
		found = found || (e.Level == logrus.WarnLevel && strings.Contains(e.Message, "noport") && e.Data["service"] == "web")
	}
	if !found {
		t.Fatal("no warning naming the skipped instance")
	}
	// The same answer again (a wait that timed out) is not logged again.
	f.call().reply <- ok(1, entry("n1", "", svc("a", "10.0.0.1", 80)), entry("n1", "", svc("noport", "10.0.0.1", 0)))
	f.call()
	if n := len(f.logs.AllEntries()); n != 1 {
		t.Fatalf("%d log entries, want the 1 warning", n)
	}
}

func TestStopAndClose(t *testing.T) {
	f := newFixture(t, Options{})
	f.call() // a query is in flight and never answered
	errc := make(chan error, 1)
	go func() {
		_, err := f.w.Next(context.Background())
		errc <- err
	}()
	if err := f.w.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, discovery.ErrStopped) {
			t.Fatalf("Next after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not unblock Next")
	}
	if err := f.w.Stop(); err != nil {
		t.Fatal("second Stop:", err)
	}

	w2, err := f.reg.Watch(context.Background(), "api")
	if err != nil {
		t.Fatal(err)
	}
	f.call()
	if err := f.reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Next(context.Background()); !errors.Is(err, discovery.ErrStopped) {
		t.Fatalf("Next after Close: %v", err)
	}
	if _, err := f.reg.Watch(context.Background(), "api"); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
	f.reg.mu.Lock()
	n := len(f.reg.watchers)
	f.reg.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d watchers left after Close", n)
	}
}

func TestWatchRejectsEmptyService(t *testing.T) {
	f := newFixture(t, Options{})
	if _, err := f.reg.Watch(context.Background(), ""); err == nil {
		t.Fatal("empty service accepted")
	}
}

// TestWatcherReadsAfreshEveryFiveWaits: once five wait_times have passed
// since the last fresh read, the next query starts from index 0 (a server
// checks the token again), then blocking resumes.
func TestWatcherReadsAfreshEveryFiveWaits(t *testing.T) {
	f := newFixture(t, Options{WaitTime: Duration(time.Second)})
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	wantWait := []uint64{0, 10, 10, 10, 10, 10, 0, 10}
	for i, want := range wantWait {
		c := f.call()
		if c.q.WaitIndex != want {
			t.Fatalf("query %d: WaitIndex %d, want %d", i, c.q.WaitIndex, want)
		}
		if want != 0 {
			f.clock.advance(time.Second) // a blocking query that timed out
		}
		c.reply <- ok(10, a)
	}
}
