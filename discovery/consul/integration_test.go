package consul

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// TestConformance runs the shared adapter suite against the real agent,
// including a restart of the agent on the same ports with its data kept.
func TestConformance(t *testing.T) {
	a := mainAgent(t)
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry { return open(t, a, "") },
		Register: func(t *testing.T, service string, in discovery.Instance) {
			a.Register(t, service, in, nil, nil)
		},
		Deregister: func(t *testing.T, service, id string) { a.Deregister(t, service, id) },
		Restart:    func(t *testing.T) { a.Restart(t) },
	})
}

func has(want ...discovery.Instance) func([]discovery.Instance) bool {
	return func(s []discovery.Instance) bool { return discoverytest.Has(s, want...) }
}

func empty(s []discovery.Instance) bool { return s != nil && len(s) == 0 }

// A TTL check going critical takes the instance out of the set within a
// second (in practice within the 200 ms minimum interval between queries,
// as the test changes the check right after a query returned; a watcher
// that is already blocked sees it in under a millisecond); passing again
// brings it back. "warning" counts as down unless
// include_warning is set, which routes to it with its warning weight.
func TestTTLCheck(t *testing.T) {
	a := mainAgent(t)
	const service = "ttl-web"
	in := discoverytest.Instance("a", 21001, nil)
	in.Weight = 4
	checkID := "ttl-" + service
	err := a.Client(t).Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: consultest.ServiceID(service, in.ID), Name: service, Address: in.Address, Port: in.Port,
		Weights: &api.AgentWeights{Passing: 4, Warning: 1},
		Check:   &api.AgentServiceCheck{CheckID: checkID, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Deregister(t, service, in.ID) })
	w := watch(t, a, service, "")
	warnW := watch(t, a, service, "include_warning: true")
	discoverytest.WaitFor(t, w, 5*time.Second, "the instance", has(in))
	discoverytest.WaitFor(t, warnW, 5*time.Second, "the instance (include_warning)", has(in))

	agentAPI := a.Client(t).Agent()
	set := func(status string) time.Time {
		t.Helper()
		if err := agentAPI.UpdateTTL(checkID, "set by the test", status); err != nil {
			t.Fatalf("UpdateTTL(%s): %v", status, err)
		}
		return time.Now()
	}

	start := set(api.HealthCritical)
	discoverytest.WaitFor(t, w, time.Second, "the critical instance to leave within 1s", empty)
	t.Logf("critical -> removed after %v", time.Since(start))
	discoverytest.WaitFor(t, warnW, time.Second, "the critical instance to leave (include_warning)", empty)

	start = set(api.HealthPassing)
	discoverytest.WaitFor(t, w, time.Second, "the instance to come back within 1s", has(in))
	t.Logf("passing -> back after %v", time.Since(start))

	set(api.HealthWarning)
	discoverytest.WaitFor(t, w, time.Second, "the warning instance to leave", empty)
	warned := in
	warned.Weight = 1
	discoverytest.WaitFor(t, warnW, time.Second, "the warning instance at its warning weight (include_warning)", has(warned))
}

// Tags and Meta become labels; a bare tag is label=true; the tag option
// filters on the Consul side.
func TestTagsAndMetaAsLabels(t *testing.T) {
	a := mainAgent(t)
	const service = "labels-web"
	stable := discoverytest.Instance("stable", 21011, map[string]string{"zone": "z1"})
	canary := discoverytest.Instance("canary", 21012, map[string]string{"zone": "z2", "version": "v3-meta"})
	a.Register(t, service, stable, []string{"version=v1"}, nil)
	a.Register(t, service, canary, []string{"canary", "version=v2"}, nil)
	t.Cleanup(func() { a.Deregister(t, service, stable.ID); a.Deregister(t, service, canary.ID) })

	w := watch(t, a, service, "")
	set := discoverytest.WaitFor(t, w, 5*time.Second, "both instances", has(stable, canary))
	want := map[int]map[string]string{
		stable.Port: {"zone": "z1", "version": "v1"},
		canary.Port: {"zone": "z2", "version": "v3-meta", "canary": "true"}, // Meta wins over the tag
	}
	for _, got := range set {
		if fmt.Sprint(got.Metadata) != fmt.Sprint(want[got.Port]) {
			t.Errorf("instance %s: labels %v, want %v", got.ID, got.Metadata, want[got.Port])
		}
		if !strings.HasPrefix(got.ID, "remora-main/") {
			t.Errorf("instance id %q: want <node>/<service id>", got.ID)
		}
	}

	onlyCanary := watch(t, a, service, "tag: canary")
	discoverytest.WaitFor(t, onlyCanary, 5*time.Second, "only the canary", has(canary))
}

// An agent with ACLs in default-deny mode: without a token the adapter
// reports a permission error (and never an empty set); with a token it
// works; when the token is revoked it reports the error and keeps the last
// good set.
func TestACL(t *testing.T) {
	a := aclAgent(t)
	const service = "secure-web"
	in := discoverytest.Instance("a", 21021, map[string]string{"zone": "z1"})
	a.Register(t, service, in, nil, nil)

	acl := a.Client(t).ACL()
	policy, _, err := acl.PolicyCreate(&api.ACLPolicy{
		Name:  fmt.Sprintf("read-%s-%d", service, time.Now().UnixNano()), // unique under -count
		Rules: fmt.Sprintf(`service %q { policy = "read" } node_prefix "" { policy = "read" }`, service),
	}, nil)
	if err != nil {
		t.Fatalf("creating the policy: %v", err)
	}
	secrets := []string{a.ManagementToken()}
	newToken := func() *api.ACLToken {
		tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
		if err != nil {
			t.Fatalf("creating a token: %v", err)
		}
		secrets = append(secrets, tok.SecretID)
		return tok
	}

	t.Run("NoTokenIsAPermissionError", func(t *testing.T) {
		w := watch(t, a, service, "")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		set, err := w.Next(ctx)
		if err == nil {
			t.Fatalf("Next without a token returned a set %s; want a permission error", discoverytest.Describe(set))
		}
		if !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("Next without a token: %v; want ErrPermissionDenied", err)
		}
		for _, want := range []string{service, "token", TokenEnv} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		t.Logf("error without a token: %v", err)
		// It stays an error: never an (empty) set.
		expectNoSet(t, w, time.Second)
	})

	t.Run("BadTokenIsAPermissionError", func(t *testing.T) {
		w := watch(t, a, service, "token: 00000000-1111-2222-3333-444444444444")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if set, err := w.Next(ctx); !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("Next with an unknown token: %v, %v; want ErrPermissionDenied", set, err)
		} else {
			t.Logf("error with an unknown token: %v", err)
		}
	})

	// Naming the anonymous token makes Consul say that it filtered.
	t.Run("ExplicitAnonymousTokenIsAPermissionError", func(t *testing.T) {
		w := watch(t, a, service, "token: anonymous")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if set, err := w.Next(ctx); !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "hid instances") {
			t.Fatalf("Next with token: anonymous: %v, %v; want ErrPermissionDenied (filtered)", set, err)
		} else {
			t.Logf("error with token: anonymous: %v", err)
		}
	})

	t.Run("TokenWorks", func(t *testing.T) {
		tok := newToken()
		w := watch(t, a, service, "token: "+tok.SecretID)
		discoverytest.WaitFor(t, w, 5*time.Second, "the instance with a token", has(in))
	})

	t.Run("TokenFileWorks", func(t *testing.T) {
		tok := newToken()
		file := filepath.Join(t.TempDir(), "consul.token")
		if err := os.WriteFile(file, []byte(tok.SecretID+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		w := watch(t, a, service, "token_file: "+file)
		discoverytest.WaitFor(t, w, 5*time.Second, "the instance with token_file", has(in))
	})

	t.Run("TokenFromEnvWorks", func(t *testing.T) {
		tok := newToken()
		t.Setenv(TokenEnv, tok.SecretID)
		w := watch(t, a, service, "")
		discoverytest.WaitFor(t, w, 5*time.Second, "the instance with $"+TokenEnv, has(in))
	})

	t.Run("RevokedTokenKeepsLastGoodSet", func(t *testing.T) {
		tok := newToken()
		w := watch(t, a, service, "token: "+tok.SecretID+"\nwait_time: 1s")
		discoverytest.WaitFor(t, w, 5*time.Second, "the instance", has(in))
		if _, err := acl.TokenDelete(tok.AccessorID, nil); err != nil {
			t.Fatalf("deleting the token: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		set, err := w.Next(ctx)
		if !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("Next after the token was deleted: %s, %v; want ErrPermissionDenied", discoverytest.Describe(set), err)
		}
		t.Logf("error after revocation: %v", err)
		expectNoSet(t, w, 2*time.Second)
	})

	// No secret the subtests used may appear in a log line.
	logged := 0
	for _, e := range testLogs.AllEntries() {
		line, _ := e.String()
		logged++
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Fatalf("a token was logged: %s", line)
			}
		}
	}
	if logged == 0 {
		t.Fatal("no warnings were logged for the permission errors")
	}
}

// expectNoSet calls Next for d and fails if it returns any set: the watcher
// may only report errors (stale) or block.
func expectNoSet(t *testing.T, w discovery.Watcher, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if err == nil {
			t.Fatalf("Next returned a set %s; want only errors", discoverytest.Describe(set))
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("Next: %v; want ErrPermissionDenied", err)
		}
	}
}

// A Consul server that has just become leader answers default-mode reads
// from a state it is still replaying from its raft log: a restarted agent
// with a few thousand entries was seen answering 0 instances for 200 ms.
// A watcher that reads throughout a restart of such an agent must publish
// no set but complete ones (fresh reads are consistent; an answer whose
// index went backwards is not believed).
func TestWatchAcrossRestartPublishesNoPartialSet(t *testing.T) {
	a := consultest.Start(t, consultest.Config{Name: "replay"})
	kv := a.Client(t).KV()
	// A long log to replay: 2,000 entries from 32 writers (Consul batches
	// their syncs).
	const entries, writers = 2000, 32
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			var err error
			for i := w; i < entries && err == nil; i += writers {
				_, err = kv.Put(&api.KVPair{Key: fmt.Sprintf("replay/%d", i), Value: []byte("x")}, nil)
			}
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("writing the log: %v", err)
		}
	}
	const service = "replay-web"
	b1, b2 := discoverytest.Instance("b1", 21021, nil), discoverytest.Instance("b2", 21022, nil)
	a.Register(t, service, b1, nil, nil)
	a.Register(t, service, b2, nil, nil)

	reg := open(t, a, "")
	t.Cleanup(func() { _ = reg.Close() })
	// Read every 20 ms, through the outage too: often enough to land in
	// the replay, and a partial set stays long enough to be seen.
	r := reg.(*registry)
	r.minInterval, r.backoffBase, r.backoffMax = 20*time.Millisecond, time.Millisecond, time.Millisecond
	w, err := reg.Watch(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	discoverytest.WaitFor(t, w, 5*time.Second, "both instances", has(b1, b2))

	// The consumer records the first incomplete set, and the last set.
	ctx, cancel := context.WithCancel(context.Background())
	type seen struct {
		partial  string
		complete bool // the last set
	}
	result := make(chan seen, 1)
	go func() {
		var s seen
		for {
			set, err := w.Next(ctx)
			if ctx.Err() != nil {
				result <- s
				return
			}
			if err != nil {
				continue
			}
			s.complete = discoverytest.Has(set, b1, b2)
			if !s.complete && s.partial == "" {
				s.partial = discoverytest.Describe(set)
			}
		}
	}()
	if err := a.Stop(); err != nil {
		t.Logf("stopping the agent: %v", err)
	}
	a.Restart(t)
	time.Sleep(2 * time.Second) // past the replay, and a few reads more
	cancel()
	s := <-result
	if s.partial != "" {
		t.Errorf("across the restart the watcher published %s; want only sets with both instances", s.partial)
	}
	if !s.complete {
		t.Error("the last set published was not complete")
	}
}
