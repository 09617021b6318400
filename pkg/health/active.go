package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/ratelog"
	"github.com/remora-mesh/remora/internal/shortage"
	"github.com/remora-mesh/remora/pkg/node"
)

// Transport is how probes speak to the nodes: as the upstream's own
// traffic does, so a TLS (or mTLS) upstream is probed over TLS with the
// same certificates and server name, and an h2 or h2c one over HTTP/2.
// The zero value is plain HTTP/1.1.
type Transport struct {
	// TLS, when set, probes over TLS with this config (HTTP probes as
	// https, gRPC probes with TLS credentials).
	TLS *tls.Config
	// H2C probes HTTP over HTTP/2 without TLS (prior knowledge).
	H2C bool
}

// Prober runs active health checks: one goroutine per node, started and
// stopped as the node set changes, so removed nodes are not probed and kept
// nodes keep their state.
//
// Update and Stop are called by the upstream's controller goroutine only.
// onChange is called from probe goroutines when a node's verdict flips; it
// must not block (the controller's Rebuild is such a function).
type Prober struct {
	cfg      Active
	tr       Transport
	onChange func()
	log      *logrus.Entry
	client   *http.Client
	probes   map[string]*probe // by node ID
	wg       sync.WaitGroup
	// shortageLog holds the skipped rounds' line to one a minute for the
	// prober, whose nodes all meet Remora's shortage at once.
	shortageLog ratelog.Limiter
}

type probe struct {
	hostPort string
	cancel   context.CancelFunc
}

// NewProber returns a prober for a validated config that speaks to the
// nodes over tr, or nil when active checks are not configured.
func NewProber(c *Config, tr Transport, onChange func(), log *logrus.Entry) *Prober {
	if c.Active == nil {
		return nil
	}
	return &Prober{
		cfg: *c.Active, tr: tr, onChange: onChange, log: log, probes: map[string]*probe{},
		client: newProbeClient(c.Active, tr),
	}
}

// Update starts probes for new nodes and stops those of removed nodes (or
// of nodes whose address changed).
func (p *Prober) Update(nodes []*node.Node) {
	if p == nil {
		return
	}
	keep := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		keep[n.ID] = true
		if old := p.probes[n.ID]; old != nil {
			if old.hostPort == n.HostPort {
				continue
			}
			old.cancel()
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.probes[n.ID] = &probe{hostPort: n.HostPort, cancel: cancel}
		p.wg.Add(1)
		go p.run(ctx, n)
	}
	for id, pr := range p.probes {
		if !keep[id] {
			pr.cancel()
			delete(p.probes, id)
		}
	}
}

// Stop ends every probe and waits for them.
func (p *Prober) Stop() {
	if p == nil {
		return
	}
	for id, pr := range p.probes {
		pr.cancel()
		delete(p.probes, id)
	}
	p.wg.Wait()
	p.client.CloseIdleConnections()
}

// run probes n every interval ±10%, the first time after a random part of
// the interval so that nodes are not probed in lockstep.
//
// A round that panics (the HTTP or gRPC client, the verdict's callback)
// is Remora's bug, not the node's: it is logged with its stack (once a
// minute at most), the round counts neither as a pass nor as a failure,
// the checker's connection is dropped, and the node is probed again at
// the next interval. A verdict that flipped in that round is still
// passed to onChange, by the next round.
func (p *Prober) run(ctx context.Context, n *node.Node) {
	defer p.wg.Done()
	checker := &Checker{cfg: p.cfg, tr: p.tr, client: p.client}
	wait := time.Duration(rand.Float64() * float64(p.cfg.Interval))
	log := p.log.WithField("node", n.ID)
	var (
		flipped  bool // the verdict changed; onChange was not called yet
		panicked panics.Log
	)
	closeChecker := func() {
		if pe := panics.Catch(checker.Close); pe != nil {
			panicked.Log(log, pe, "closing the active health check's connection panicked")
		}
	}
	defer closeChecker()
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var live bool
		if pe := panics.Catch(func() { live = p.round(ctx, checker, n, log, &flipped) }); pe != nil {
			panicked.Log(log, pe, "active health check panicked; the round is skipped, the node's verdict unchanged")
			closeChecker() // the next round starts with a new connection
			live = ctx.Err() == nil
		}
		if !live {
			return
		}
		wait = time.Duration(float64(p.cfg.Interval) * (0.9 + 0.2*rand.Float64()))
	}
}

// round probes n once and records the result; it reports false when ctx
// ended. flipped is set when the verdict changes, and cleared once
// onChange returned.
func (p *Prober) round(ctx context.Context, checker *Checker, n *node.Node, log *logrus.Entry, flipped *bool) bool {
	err := checker.Check(ctx, n.HostPort)
	if ctx.Err() != nil {
		return false
	}
	if shortage.Is(err) {
		// Remora itself is out of descriptors, ports or memory: the
		// round says nothing of the node, whose verdict stays.
		if ok, skipped := p.shortageLog.Allow(time.Now()); ok {
			log.WithError(err).WithField("skipped", skipped).
				Warn("active health check skipped: Remora is out of local resources (file descriptors, ports or memory); the node's verdict stays (logged once a minute at most; skipped: rounds since the last line)")
		}
		return true
	}
	h := &n.Stats.Health
	if h.ProbeResult(err == nil, err, p.cfg.HealthyThreshold, p.cfg.UnhealthyThreshold) {
		if h.ActiveHealthy() {
			log.Info("active health check passing; node back in service")
		} else {
			log.WithError(err).Warn("active health check failing; node out of service")
		}
		*flipped = true
	}
	if *flipped {
		p.onChange()
		*flipped = false
	}
	return true
}

// Checker runs probes of one kind against one target at a time; it keeps a
// gRPC connection between probes. It is used by one goroutine.
type Checker struct {
	cfg    Active
	tr     Transport
	client *http.Client
	conn   *grpc.ClientConn
	target string
	md     metadata.MD // headers, sent on conn
}

// NewChecker returns a checker for a validated Active config, speaking
// plain HTTP/1.1.
func NewChecker(a *Active) *Checker {
	return &Checker{cfg: *a, client: newProbeClient(a, Transport{})}
}

func newProbeClient(a *Active, tr Transport) *http.Client {
	t := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 2 * a.Interval, DisableCompression: true}
	switch {
	case tr.TLS != nil:
		t.TLSClientConfig = tr.TLS.Clone()
		t.ForceAttemptHTTP2 = slices.Contains(tr.TLS.NextProtos, "h2")
	case tr.H2C:
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Close releases the checker's connections.
func (c *Checker) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// Check probes hostPort once within the configured timeout; nil means
// healthy.
func (c *Checker) Check(ctx context.Context, hostPort string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if c.cfg.Port != 0 {
		if host, _, err := net.SplitHostPort(hostPort); err == nil {
			hostPort = net.JoinHostPort(host, strconv.Itoa(c.cfg.Port))
		}
	}
	switch c.cfg.Type {
	case "tcp":
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", hostPort)
		if err != nil {
			return err
		}
		return conn.Close()
	case "grpc":
		if c.conn != nil && c.target != hostPort {
			c.Close()
		}
		if c.conn == nil {
			creds := insecure.NewCredentials()
			if tc := c.tr.TLS; tc != nil {
				tc = tc.Clone()
				creds = credentials.NewTLS(tc)
				if c.cfg.Host != "" {
					name := tc.ServerName
					if name == "" { // as without host:
						name, _, _ = net.SplitHostPort(hostPort)
					}
					creds = authorityCreds{creds, name}
				}
			}
			opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
			if c.cfg.Host != "" {
				opts = append(opts, grpc.WithAuthority(c.cfg.Host))
			}
			md := metadata.MD{}
			for k, v := range c.cfg.Headers {
				if strings.EqualFold(k, "User-Agent") {
					opts = append(opts, grpc.WithUserAgent(v)) // gRPC drops it from metadata
					continue
				}
				md.Append(k, v)
			}
			conn, err := grpc.NewClient(hostPort, opts...)
			if err != nil {
				return err
			}
			c.conn, c.target, c.md = conn, hostPort, md
		}
		if len(c.md) > 0 {
			ctx = metadata.NewOutgoingContext(ctx, c.md)
		}
		resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: c.cfg.Service})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health: %s", resp.GetStatus())
		}
		return nil
	}
	scheme := "http://"
	if c.tr.TLS != nil {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+hostPort+c.cfg.Path, nil)
	if err != nil {
		return err
	}
	if c.cfg.Host != "" {
		req.Host = c.cfg.Host
	}
	req.Header.Set("User-Agent", "remora-health-check")
	for k, v := range c.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if !c.cfg.expected.Has(resp.StatusCode) {
		return fmt.Errorf("GET %s: status %d", c.cfg.Path, resp.StatusCode)
	}
	return nil
}

// authorityCreds are TLS credentials that leave :authority to
// grpc.WithAuthority. grpc-go refuses a channel whose authority differs
// from its credentials' server name, and verifies the authority in the
// handshake; but a probe's host: sets the :authority only, as an HTTP
// probe's Host leaves its TLS alone: the handshake sends and verifies
// serverName, the TLS config's.
type authorityCreds struct {
	credentials.TransportCredentials
	serverName string
}

// ClientHandshake verifies serverName, whatever the authority.
func (c authorityCreds) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, c.serverName, conn)
}

// Info is the credentials' own without the server name.
func (c authorityCreds) Info() credentials.ProtocolInfo {
	info := c.TransportCredentials.Info()
	//lint:ignore SA1019 grpc-go still compares it with WithAuthority's
	info.ServerName = ""
	return info
}

// Clone keeps the wrapper.
func (c authorityCreds) Clone() credentials.TransportCredentials {
	return authorityCreds{c.TransportCredentials.Clone(), c.serverName}
}
