package etcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

// The registration tests run against an embedded etcd and read what Remora
// wrote with the test's own client, never through the registry under test.

// testTTL is the registration lease in these tests: short, so that an
// outage longer than it stays short too (etcd's minimum is about 2 s).
const testTTL = 2 * time.Second

// register opens a registry on srv with a short lease TTL and registers
// inst of service in it; both are released at cleanup.
func register(t *testing.T, endpoint, service string, inst discovery.Instance) (*etcd.Registry, discovery.Registration) {
	t.Helper()
	reg := open(t, endpoint).(*etcd.Registry)
	reg.RegistrationTTL = testTTL
	t.Cleanup(func() { _ = reg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := reg.Register(ctx, service, inst)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return reg, g
}

// stored reads key with the test's own client: the instance it holds (nil
// if the key is absent or etcd did not answer) and its lease.
func stored(t *testing.T, srv *etcdtest.Server, key string) (*discovery.Instance, clientv3.LeaseID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := srv.Client().Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0
	}
	in, err := etcd.Decode(key, resp.Kvs[0].Value)
	if err != nil {
		t.Fatalf("%s holds %q: %v", key, resp.Kvs[0].Value, err)
	}
	return &in, clientv3.LeaseID(resp.Kvs[0].Lease)
}

// within polls cond until it holds or d passes, and returns how long it
// took; it fails the test on timeout.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// eventually polls cond until it holds (true) or d passes (false).
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func status(t *testing.T, g discovery.Registration) discovery.RegistrationStatus {
	t.Helper()
	sr, ok := g.(discovery.StatusReporter)
	if !ok {
		t.Fatalf("%T does not report its status", g)
	}
	return sr.Status()
}

func app(meta map[string]string) discovery.Instance {
	return discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 100, Healthy: true, Metadata: meta}
}

// An outage longer than the lease TTL closes clientv3's keep-alive stream;
// the registration must notice, take a new lease and write the key again
// once etcd answers, and keep it there.
func TestRegistrationSurvivesOutageLongerThanTTL(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.Start(t)
	const key = "/services/users/app-1"
	_, g := register(t, srv.Endpoint(), "users", app(map[string]string{"canary": "true"}))
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil })
	_, before := stored(t, srv, key)

	srv.Stop()
	time.Sleep(5 * time.Second) // 2.5 TTLs without etcd
	if st := status(t, g); st.Up || st.LastError == "" {
		t.Errorf("status during the outage: %+v; want down with an error", st)
	}
	srv.Up()

	// etcd restores the old lease with a fresh TTL, so the old key shows
	// for a while even when nobody keeps it: wait for a key under a new,
	// kept lease.
	took := within(t, 2*time.Second, "key under a new lease after etcd answered", func() bool {
		v, lease := stored(t, srv, key)
		return v != nil && lease != 0 && lease != before
	})
	t.Logf("written again %v after etcd answered", took)
	time.Sleep(3 * testTTL) // the old lease, had it been kept, would have expired by now
	v, lease := stored(t, srv, key)
	if v == nil || v.Metadata["canary"] != "true" || v.Port != 8080 {
		t.Fatalf("%d TTLs after the restart the key holds %+v; want the registration", 3, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ttl, err := srv.Client().TimeToLive(ctx, lease)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease %x of the key: %+v, %v; want it alive", lease, ttl, err)
	}
	st := status(t, g)
	if !st.Up || st.Reregistrations < 1 {
		t.Fatalf("status after recovery: %+v; want up with a re-registration", st)
	}
}

// Level-triggered: a key deleted (or overwritten) by someone else is
// written again within a TTL or so.
func TestRegistrationRewritesChangedKey(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.Start(t)
	const key = "/services/orders/app-1"
	_, g := register(t, srv.Endpoint(), "orders", app(nil))
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil && status(t, g).Up })
	for _, tc := range []struct {
		name   string
		change func()
	}{
		{"deleted", func() { srv.Delete(key) }},
		{"overwritten", func() { srv.Put(key, "127.0.0.1:1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := status(t, g).Reregistrations
			tc.change()
			if !eventually(3*testTTL, func() bool {
				v, lease := stored(t, srv, key)
				st := status(t, g)
				return v != nil && v.Port == 8080 && lease != 0 && st.Up && st.Reregistrations == before+1
			}) {
				v, _ := stored(t, srv, key)
				t.Fatalf("not written again within %v: key %+v, status %+v (re-registrations before: %d)", 3*testTTL, v, status(t, g), before)
			}
		})
	}
}

func TestRegistrationUpdateAndDeregister(t *testing.T) {
	srv := etcdtest.Start(t)
	const key = "/services/users/app-1"
	reg, g := register(t, srv.Endpoint(), "users", app(map[string]string{"canary": "true"}))
	// Register may return before the registry has connected; the key is
	// written as soon as it has.
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := reg.Register(ctx, "users", app(nil)); err == nil || !strings.Contains(err.Error(), "registered already") {
		t.Fatalf("second Register of the same key: %v; want an error", err)
	}
	for _, tc := range []struct {
		name string
		inst discovery.Instance
	}{
		{"weight", discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 10, Metadata: map[string]string{"canary": "true"}}},
		{"labels removed", app(nil)},
		{"unchanged", app(nil)},
	} {
		if err := g.Update(ctx, tc.inst); err != nil {
			t.Fatalf("%s: Update: %v", tc.name, err)
		}
		// Update returns once written: no polling.
		v, _ := stored(t, srv, key)
		if v == nil || v.Weight != tc.inst.Weight || len(v.Metadata) != len(tc.inst.Metadata) {
			t.Fatalf("%s: after Update the key holds %+v", tc.name, v)
		}
	}
	if st := status(t, g); !st.Up || st.Reregistrations != 0 {
		t.Fatalf("status %+v; want up, no re-registration", st)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := stored(t, srv, key); v != nil {
		t.Fatalf("after Deregister the key holds %+v", v)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	if err := g.Update(ctx, app(nil)); err == nil {
		t.Fatal("Update after Deregister succeeded")
	}
	// The key is free again.
	g2, err := reg.Register(ctx, "users", app(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterRejects(t *testing.T) {
	reg := etcd.NewRegistry(&fakeClient{}, "/services", discovery.Env{})
	defer reg.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		service string
		inst    discovery.Instance
		want    string
	}{
		{"", app(nil), `service "": an etcd service name is one segment`},
		{"a/b", app(nil), `service "a/b": an etcd service name is one segment`},
		{"users", discovery.Instance{Address: "127.0.0.1", Port: 1}, `instance ID "": an etcd instance ID`},
		{"users", discovery.Instance{ID: "pod/1", Address: "127.0.0.1", Port: 1}, `instance ID "pod/1": an etcd instance ID`},
		{"users", app(nil), "cannot register"}, // the fake client has no leases
	} {
		if _, err := reg.Register(ctx, tc.service, tc.inst); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%q, %+v) = %v; want %q", tc.service, tc.inst, err, tc.want)
		}
	}
}

// authOptions is an options block for a user with a password.
func authOptions(endpoint, user, password string) string {
	return "endpoints: [" + endpoint + "]\nusername: " + user + "\npassword: " + password + "\n"
}

func openYAML(t *testing.T, block string) discovery.Registry {
	t.Helper()
	o, err := discoverytest.Parse(t, etcd.Type, block)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{Name: "test"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return reg
}

// An authenticated etcd that is down when the registry opens: nothing
// blocks or fails, watchers report errors, and once etcd is up the set
// arrives and the registration is written.
func TestAuthenticatedEtcdStartedAfterOpen(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.New(t)
	srv.Up()
	srv.EnableAuth("rootpw", "remora", "s3cret", "/services/")
	srv.Put("/services/users/a", "127.0.0.1:9001")
	srv.Stop()

	opened := time.Now()
	reg := openYAML(t, authOptions(srv.Endpoint(), "remora", "s3cret")).(*etcd.Registry)
	w, err := reg.Watch(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	g, err := reg.Register(ctx, "users", app(nil))
	cancel()
	if err != nil {
		t.Fatalf("Register while etcd is down: %v", err)
	}
	if d := time.Since(opened); d > 2*time.Second {
		t.Fatalf("Open, Watch and Register took %v with etcd down; they must not wait for it", d)
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		set, err := w.Next(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Fatalf("Next #%d with etcd down: %v, %v; want an error at once", i, set, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	if st := status(t, g); st.Up || st.LastError == "" {
		t.Fatalf("registration status with etcd down: %+v", st)
	}

	srv.Up()
	up := time.Now()
	// About a second: gRPC's reconnect, then the authentication.
	discoverytest.WaitFor(t, w, 2*time.Second-time.Since(up), "the set within 2s of etcd being up", func(s []discovery.Instance) bool {
		return len(s) == 1 && s[0].ID == "a"
	})
	t.Logf("set delivered %v after etcd was up", time.Since(up))
	if !eventually(2*time.Second, func() bool { v, _ := stored(t, srv, "/services/users/app-1"); return v != nil }) {
		t.Fatalf("not registered within 2s of etcd being up; status %+v", status(t, g))
	}
	discoverytest.WaitFor(t, w, 2*time.Second, "its own registration seen", func(s []discovery.Instance) bool { return len(s) == 2 })
	// The status turns up when the write returns, which may be just after
	// a watcher sees the key.
	if !eventually(2*time.Second, func() bool { return status(t, g).Up }) {
		t.Fatalf("registration status: %+v; want up", status(t, g))
	}
}

// Wrong credentials are a watch error, retried, never a failure to open.
func TestWrongCredentialsAreWatchErrors(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.New(t)
	srv.Up()
	srv.EnableAuth("rootpw", "remora", "s3cret", "/services/")
	for _, tc := range []struct{ name, user, password, want string }{
		{"bad password", "remora", "wrong-pw", `authenticating as user "remora"`},
		{"unknown user", "nobody", "wrong-pw", `authenticating as user "nobody"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := openYAML(t, authOptions(srv.Endpoint(), tc.user, tc.password))
			w, err := reg.Watch(context.Background(), "users")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			// The first error may be "connecting"; the next names the cause.
			var last error
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && (last == nil || !strings.Contains(last.Error(), tc.want)) {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, last = w.Next(ctx)
				cancel()
				if last == nil {
					t.Fatal("Next returned a set with wrong credentials")
				}
			}
			if !strings.Contains(last.Error(), tc.want) || strings.Contains(last.Error(), tc.password) {
				t.Fatalf("Next error %q; want it to contain %q and not the password", last, tc.want)
			}
		})
	}
}

// An etcd that comes back without its data has neither the key nor the
// lease: the registration is written again under a new lease.
func TestRegistrationSurvivesEtcdWithoutData(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.Start(t)
	const key = "/services/users/app-1"
	_, g := register(t, srv.Endpoint(), "users", app(nil))
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil })

	srv.RestartFresh()
	took := within(t, 3*testTTL+5*time.Second, "key written again in the new cluster", func() bool {
		v, lease := stored(t, srv, key)
		return v != nil && lease != 0
	})
	t.Logf("written again %v after etcd came back empty", took)
	// The status is recorded once the put has returned: a moment after
	// the key shows.
	within(t, 2*time.Second, "status up, with a re-registration", func() bool {
		st := status(t, g)
		return st.Up && st.Reregistrations >= 1
	})
}

// A key deleted by someone else (the previous Remora of an overlapping
// restart deregistering the same instance, or its lease expiring while it
// held the key) is written again at once, not at the next read-back a TTL
// later: the reconciler watches its key for deletions.
func TestRegistrationRewritesDeletedKeyAtOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	const key = "/services/orders/app-1"
	reg := open(t, srv.Endpoint()).(*etcd.Registry)
	reg.RegistrationTTL = time.Minute // read-backs a minute apart
	t.Cleanup(func() { _ = reg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := reg.Register(ctx, "orders", app(nil)); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil })
	for i := range 3 {
		srv.Delete(key)
		took := within(t, 5*time.Second, "written again after a deletion", func() bool { v, _ := stored(t, srv, key); return v != nil })
		t.Logf("deletion %d: written again after %v", i+1, took)
	}
}

// A key overwritten by someone else (other labels or weight, a bare
// address, the same value under a lease of theirs) is written again at
// once, not at the next read-back a TTL later: the reconciler watches its
// key for puts that are not its own.
func TestRegistrationRewritesOverwrittenKeyAtOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	const key = "/services/orders/app-1"
	reg := open(t, srv.Endpoint()).(*etcd.Registry)
	reg.RegistrationTTL = time.Minute // read-backs a minute apart
	t.Cleanup(func() { _ = reg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := app(map[string]string{"canary": "true"})
	g, err := reg.Register(ctx, "orders", want)
	if err != nil {
		t.Fatal(err)
	}
	ours := func() bool {
		v, lease := stored(t, srv, key)
		return v != nil && v.Weight == want.Weight && v.Metadata["canary"] == "true" && len(v.Metadata) == 1 && lease != 0
	}
	within(t, 2*time.Second, "registered", ours)
	other := want
	other.Metadata = map[string]string{"canary": "false"}
	for _, tc := range []struct {
		name  string
		value string
		lease bool
	}{
		{"other labels", value(other), false},
		{"a bare address", "127.0.0.1:1", false},
		{"its value under another lease", value(want), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := status(t, g).Reregistrations
			var theirs clientv3.LeaseID
			if tc.lease {
				lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
				l, err := srv.Client().Grant(lctx, 60)
				lcancel()
				if err != nil {
					t.Fatal(err)
				}
				theirs = l.ID
				srv.Put(key, tc.value, clientv3.WithLease(theirs))
			} else {
				srv.Put(key, tc.value)
			}
			took := within(t, 5*time.Second, "written again", func() bool {
				_, lease := stored(t, srv, key)
				st := status(t, g)
				return ours() && st.Reregistrations > before && lease != theirs
			})
			t.Logf("written again after %v", took.Round(time.Millisecond))
		})
	}
}
