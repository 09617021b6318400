package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/retry"
)

// watcher follows one service. Its producer goroutine (run) is the only
// caller of Publish and Fail on the embedded Latest; Next and Stop come from
// Latest and may be called from the consumer's goroutine. The fields are
// immutable after Watch returns.
type watcher struct {
	*discovery.Latest
	reg     *registry
	service string
	log     *logrus.Entry
	cancel  context.CancelFunc // ends the query in flight
	exited  chan struct{}      // closed when run returns
	once    sync.Once
}

// Stop implements discovery.Watcher: it cancels the query in flight, unblocks
// Next and waits for the producer goroutine to end. It is idempotent.
func (w *watcher) Stop() error {
	w.once.Do(func() {
		w.cancel()
		_ = w.Latest.Stop()
		<-w.exited
		w.reg.forget(w)
	})
	return nil
}

// run is the producer goroutine. A panic in its loop (the Consul client,
// the mapping of an answer) is logged with its stack, reported by Next as
// an error (the set is kept, marked stale), and the loop starts again,
// with a fresh read, after discovery.PanicPause.
func (w *watcher) run(ctx context.Context) {
	defer close(w.exited)
	discovery.Rerun(w.log, func(err error) { w.Fail(w.describe(err)) },
		func() bool { return w.reg.sleep(ctx, discovery.PanicPause) }, func() { w.follow(ctx) })
}

// follow is the producer loop: query, publish or fail, pace, repeat.
func (w *watcher) follow(ctx context.Context) {
	r := w.reg
	var (
		index    uint64        // WaitIndex for the next query; 0 = answer at once
		started  time.Time     // start of the previous query
		failures int           // consecutive failed queries
		delay    time.Duration // backoff before the next query

		lastSkipped string    // the unusable entries last logged
		freshAt     time.Time // start of the last fresh read (index 0)
	)
	for {
		// Pace: never start two queries less than minInterval apart, so an
		// index that changes all the time cannot make us hot-loop; after a
		// failure, wait out the backoff too.
		if !started.IsZero() {
			if !r.sleep(ctx, max(delay, r.minInterval-r.now().Sub(started))) {
				return
			}
		}
		started = r.now()
		if index == 0 {
			freshAt = started
		}
		entries, meta, err := w.query(ctx, index)
		if ctx.Err() != nil {
			return // stopped
		}
		if err == nil && meta == nil {
			err = errors.New("no query metadata in the response")
		}
		if err == nil {
			err = w.aclCheck(entries, meta)
		}
		if err != nil {
			err = w.describe(err)
			failures++
			if failures == 1 {
				w.log.WithError(err).Warn("consul: query failed; keeping the last good set and retrying")
			} else {
				w.log.WithError(err).WithField("attempt", failures).Debug("consul: query failed again")
			}
			w.Fail(err)
			// Start over with a full read: after an outage or a restart
			// the old index means nothing.
			index = 0
			delay = retry.Backoff(failures, r.backoffBase, r.backoffMax, r.rand)
			continue
		}
		delay = 0
		if failures > 0 {
			w.log.WithField("attempts", failures).Info("consul: query succeeded again")
			failures = 0
		}
		if index > 0 && meta.LastIndex < index {
			// The answer comes from a state behind the one followed so
			// far: a restored snapshot, a leader still replaying its log,
			// another server. Its set may be partial, so it is not
			// published; a consistent fresh read follows.
			w.log.WithFields(logrus.Fields{"index": meta.LastIndex, "waited_on": index}).
				Debug("consul: the index went backwards; reading afresh")
			index = 0
			continue
		}
		index = nextIndex(index, meta.LastIndex)
		if r.now().Sub(freshAt) >= freshEvery*r.waitTime {
			index = 0 // see freshEvery
		}
		set, skipped := toSet(entries, r.includeWarn)
		if msg := errors.Join(skipped...); msg != nil && msg.Error() != lastSkipped {
			w.log.Warn(msg.Error()) // once per change, not on every poll
			lastSkipped = msg.Error()
		} else if msg == nil {
			lastSkipped = ""
		}
		w.Publish(set)
	}
}

// query runs one blocking query. Consul answers within WaitTime plus up to
// WaitTime/16 of jitter; a connection that stays silent much longer than
// that (a half-open TCP connection, a hung proxy) is given up on.
//
// A fresh read (index 0) is consistent. A Consul server that has just
// become leader, after a restart or an election, answers default-mode
// reads from a state it is still replaying from its log: a restarted
// single server was seen answering 0 instances, at index 53 of 3009, for
// 200 ms. Believing that would empty the upstream. A consistent read waits
// until the leader has applied its log, or fails, and the watcher tries
// again; fresh reads are rare (start, after a failure, every freshEvery
// wait_times), so their extra round to a quorum costs little. Blocking
// reads (index > 0) stay in default mode, which lets the agent answer them
// from its streaming view: they return only past the index of a read that
// was complete.
func (w *watcher) query(ctx context.Context, index uint64) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	r := w.reg
	limit := r.waitTime + r.waitTime/16 + queryGrace
	qctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	q := (&api.QueryOptions{
		Datacenter: r.datacenter,
		Namespace:  r.namespace,
		Partition:  r.partition,
		WaitIndex:  index,
		WaitTime:   r.waitTime,

		RequireConsistent: index == 0,
	}).WithContext(qctx)
	entries, meta, err := r.client.Service(w.service, r.tag, !r.includeWarn, q)
	if err != nil && ctx.Err() == nil && qctx.Err() != nil {
		err = fmt.Errorf("no answer within %s (wait_time %s): %w", limit, r.waitTime, err)
	}
	return entries, meta, err
}

// freshEvery is how many wait_times may pass between two fresh reads
// (index 0). Consul agents answer blocking queries on health from a view
// they keep up to date by streaming from the servers (use_streaming_backend,
// on by default since 1.10), and 1.14 was seen to go on answering them from
// that view, indefinitely, after their token was deleted; a fresh read goes
// to a server, which checks the token. So a revoked token shows within
// about freshEvery wait_times, for one extra read in freshEvery.
const freshEvery = 5

// queryGrace is how much longer than its wait (with jitter) a blocking query
// may take before it is abandoned.
const queryGrace = 15 * time.Second

// aclCheck reports a result that ACLs made incomplete. Consul says so in
// X-Consul-Results-Filtered-By-ACLs, except to a request without a token,
// where it masks that header (so as not to leak that something exists): a
// tokenless request to an agent whose ACLs deny by default that gets no
// instances is taken as denied too. Where the anonymous token really is
// meant to read the service, configuring `token: anonymous` makes Consul
// report filtering properly and an empty set is then believed.
func (w *watcher) aclCheck(entries []*api.ServiceEntry, meta *api.QueryMeta) error {
	switch {
	case meta.ResultsFilteredByACLs:
		return fmt.Errorf("%w: the ACL token hid instances of %q from the result; give the token service:read on it and node:read",
			ErrPermissionDenied, w.service)
	case w.reg.anonymous && len(entries) == 0 && strings.EqualFold(meta.DefaultACLPolicy, "deny"):
		return fmt.Errorf("%w: no ACL token is set and Consul's ACLs deny by default, so its answer of no instances of %q cannot be trusted; "+
			"set token, token_file or $%s to a token with service:read on it and node:read "+
			"(or token: anonymous if the anonymous token is meant to read it)",
			ErrPermissionDenied, w.service, TokenEnv)
	}
	return nil
}

// describe wraps a query error with the service and, for ACL refusals,
// ErrPermissionDenied and the fix.
func (w *watcher) describe(err error) error {
	if errors.Is(err, ErrPermissionDenied) {
		return fmt.Errorf("consul: service %q: %w", w.service, err)
	}
	var se api.StatusError
	if errors.As(err, &se) && (se.Code == http.StatusForbidden || se.Code == http.StatusUnauthorized) {
		return fmt.Errorf("consul: service %q: %w (HTTP %d: %s); set a valid token with service:read and node:read (token, token_file or $%s)",
			w.service, ErrPermissionDenied, se.Code, se.Body, TokenEnv)
	}
	return fmt.Errorf("consul: service %q: %w", w.service, err)
}

// nextIndex returns the WaitIndex for the query after one that waited on prev
// and returned got (X-Consul-Index). An index that went backwards (a restored
// snapshot, a different server's state) or is 0 (never valid, and a blocking
// query on it returns at once) restarts from 0: a fresh, non-blocking read.
// The minimum interval between queries keeps that from spinning. (run does
// not publish an answer whose index went backwards: see there.)
func nextIndex(prev, got uint64) uint64 {
	if got == 0 || got < prev {
		return 0
	}
	return got
}
