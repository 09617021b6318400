// Package register announces the local application in a registry: it
// probes the application, registers it once healthy, withdraws it after
// repeated failures and registers it again when it recovers, ramps its
// weight up after registration (warm-up), and deregisters it first on
// shutdown.
package register

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/pkg/health"
)

// LabelsEnv adds labels from the environment: "canary=true,version=v2".
const LabelsEnv = "REMORA_LABELS"

// Config is the `register:` block.
type Config struct {
	// Registry names the registry to register in; optional with one.
	Registry string `yaml:"registry"`
	// Service is the service name to register under.
	Service string `yaml:"service"`
	// ID is the instance ID; default <hostname>-<port>.
	ID string `yaml:"id"`
	// Address is the application's address as others reach it: an IP
	// address or a host name, without the port; default $POD_IP, else the
	// host's first IPv4 address other than loopback and link-local, else
	// its first such IPv6 address.
	Address string `yaml:"address"`
	// Port is the application's port; required.
	Port int `yaml:"port"`
	// Weight is the full weight; default 100.
	Weight uint32 `yaml:"weight"`
	// Metadata are labels (canary=true, version=v2, ...), merged with
	// $REMORA_LABELS (the environment wins).
	Metadata map[string]string `yaml:"metadata"`
	// Health checks the local application; default HTTP GET /health every
	// 2s, registered after 1 success, withdrawn after 3 failures.
	Health *health.Active `yaml:"health"`
	// Warmup ramps the advertised weight from 10% to the full weight over
	// this window after each registration; 0 turns it off.
	Warmup time.Duration `yaml:"warmup"`
	// DeregisterDelay is how long shutdown waits after deregistering, so
	// that other sidecars stop sending, before it drains; default 2s.
	DeregisterDelay *time.Duration `yaml:"deregister_delay"`
}

// Validate fills defaults (reading the environment and the host's
// addresses) and checks the block; errors name fields relative to it.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Service == "" {
		add("service: missing")
	}
	if c.Port < 1 || c.Port > 65535 {
		add("port: %d; want the application's port 1..65535", c.Port)
	}
	if c.Weight == 0 {
		c.Weight = 100
	}
	field := "address:"
	if c.Address == "" {
		if os.Getenv("POD_IP") != "" {
			field = "address: $POD_IP"
		}
		c.Address = defaultAddress()
	}
	if c.Address == "" {
		add("address: missing, $POD_IP is not set and this host has no IPv4 or IPv6 address but loopback and link-local ones; set register.address (or $POD_IP) to the address other instances reach the application at")
	} else if err := checkAddress(c.Address); err != nil {
		add("%s %v", field, err)
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", cmp.Or(host, "remora"), c.Port)
	}
	labels, err := ParseLabels(os.Getenv(LabelsEnv))
	if err != nil {
		add("$%s: %v", LabelsEnv, err)
	}
	if len(labels) > 0 && c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	for k, v := range labels {
		c.Metadata[k] = v
	}
	if c.Health == nil {
		c.Health = &health.Active{Interval: 2 * time.Second, HealthyThreshold: 1, UnhealthyThreshold: 3}
	}
	hc := health.Config{Active: c.Health}
	if err := hc.Validate(); err != nil {
		// One error a line, each at its own field: health.path, not
		// health for the first and the block's top for the rest.
		for _, e := range strings.Split(err.Error(), "\n") {
			add("health.%s", strings.TrimPrefix(e, "active."))
		}
	}
	if c.Warmup < 0 {
		add("warmup: %v is negative", c.Warmup)
	}
	if c.DeregisterDelay == nil {
		d := 2 * time.Second
		c.DeregisterDelay = &d
	}
	if *c.DeregisterDelay < 0 {
		add("deregister_delay: %v is negative", *c.DeregisterDelay)
	}
	return errors.Join(errs...)
}

// checkAddress accepts what others can dial when it is joined with the
// port: an IP address (IPv6 without brackets) or a host name of RFC 1123
// labels. The error quotes a, then says what is wrong.
func checkAddress(a string) error {
	const want = "want an IP address or a host name without a port (the port is port:)"
	if net.ParseIP(a) != nil {
		return nil
	}
	switch {
	case strings.ContainsFunc(a, unicode.IsSpace):
		return fmt.Errorf("%q contains white space; %s", a, want)
	case strings.Contains(a, "://"):
		return fmt.Errorf("%q is a URL; %s", a, want)
	}
	if _, _, err := net.SplitHostPort(a); err == nil {
		return fmt.Errorf("%q; %s", a, want)
	}
	switch {
	case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]") && net.ParseIP(a[1:len(a)-1]) != nil:
		return fmt.Errorf("%q; want an IPv6 address without brackets (%s)", a, a[1:len(a)-1])
	case strings.Contains(a, "/"):
		return fmt.Errorf("%q contains \"/\"; want an IP address or a host name, without a path or a prefix length", a)
	case !hostName(a):
		return fmt.Errorf("%q is neither an IP address nor a host name (dot-separated labels of 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen)", a)
	case allDigits(lastLabel(a)):
		return fmt.Errorf("%q is not an IP address, and a host name's last label is not all digits", a)
	}
	return nil
}

// hostName reports whether s is a host name of RFC 1123 labels: 1 to 63
// ASCII letters, digits and hyphens, not starting or ending with a
// hyphen, joined by dots, 253 characters at most, with one final dot
// allowed (a fully qualified name). An underscore is taken too, as
// resolvers take it (Docker Compose names services my_app).
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// lastLabel is host name s's last label (a final dot aside).
func lastLabel(s string) string {
	s = strings.TrimSuffix(s, ".")
	return s[strings.LastIndexByte(s, '.')+1:]
}

func allDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// ParseLabels parses "k=v,k2=v2" (spaces around items ignored).
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", item)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// interfaceAddrs lists the host's addresses; tests replace it.
var interfaceAddrs = net.InterfaceAddrs

// defaultAddress is $POD_IP, else hostAddress of the host's addresses.
func defaultAddress() string {
	if ip := os.Getenv("POD_IP"); ip != "" {
		return ip
	}
	addrs, err := interfaceAddrs()
	if err != nil {
		return ""
	}
	return hostAddress(addrs)
}

// hostAddress picks the address to register from the host's addresses:
// the first global unicast IPv4 one, else the first global unicast IPv6
// one (an IPv6-only pod), else "". Loopback, link-local (169.254.0.0/16,
// fe80::/10), multicast and unspecified addresses are skipped. An IPv6
// address is returned bare ("fd00::5"); whoever joins it with a port uses
// net.JoinHostPort (discovery.Instance.HostPort does).
func hostAddress(addrs []net.Addr) string {
	var v6 net.IP
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if !ip.IsGlobalUnicast() {
			continue // also loopback and link-local
		}
		if ip4 := ip.To4(); ip4 != nil {
			return ip4.String()
		}
		if v6 == nil {
			v6 = ip
		}
	}
	if v6 == nil {
		return ""
	}
	return v6.String()
}

// Agent keeps the application registered while it is healthy. Run and
// Deregister are called from one goroutine each; Deregister ends Run's
// registrations for good. Status may be called from any goroutine.
//
// reg, log, now, stop, done and kick are immutable; active is owned by Run
// until done is closed, then by Deregister. mu guards cfg (whose metadata,
// weight, warm-up and deregister delay Reconfigure may change; the rest is
// fixed), withdrawn (SetWithdrawn), and st and reporter, the copy of the
// state that Status reads.
type Agent struct {
	reg    discovery.Registrar
	log    *logrus.Entry
	now    func() time.Time
	stop   chan struct{}
	once   sync.Once
	done   chan struct{}
	kick   chan struct{}          // capacity 1: Reconfigure changed cfg
	active discovery.Registration // owned by Run
	panics panics.Log             // the adapter's, see call

	mu        sync.Mutex
	cfg       Config
	withdrawn bool
	st        Status
	reporter  discovery.StatusReporter // active's, if it reports
}

// Status is the state of the local application's registration, for the
// admin API and metrics.
type Status struct {
	// Service, ID, Address and Port are what is registered.
	Service string
	ID      string
	Address string
	Port    int
	// Healthy is the verdict of the last health check of the application;
	// LastCheckError the reason of its last failure ("" if none yet).
	Healthy        bool
	LastCheckError string
	// Registered: the application is meant to be registered (it was
	// healthy and has not been withdrawn). Whether the registry holds it
	// is Registration.Up.
	Registered bool
	// Withdrawn: SetWithdrawn took the application out of the registry (a
	// drain); it stays out, healthy or not, until SetWithdrawn(false).
	Withdrawn bool
	// Weight is the weight advertised (lower during warm-up).
	Weight uint32
	// Registration is the registry side's status while Registered, if the
	// registry reports it (discovery.StatusReporter); nil otherwise.
	Registration *discovery.RegistrationStatus
}

// NewAgent returns an agent for a validated config.
func NewAgent(cfg Config, reg discovery.Registrar, log *logrus.Entry) *Agent {
	return &Agent{cfg: cfg, reg: reg, log: log.WithFields(logrus.Fields{"service": cfg.Service, "node": cfg.ID}),
		now: time.Now, stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1),
		st: Status{Service: cfg.Service, ID: cfg.ID, Address: cfg.Address, Port: cfg.Port}}
}

// Status returns the registration's current state. It does not block on
// the network.
func (a *Agent) Status() Status {
	a.mu.Lock()
	st, rep := a.st, a.reporter
	a.mu.Unlock()
	if rep != nil && st.Registered {
		rs := rep.Status()
		st.Registration = &rs
	}
	return st
}

// setActive records the registration Run holds (nil: none) and its weight.
func (a *Agent) setActive(r discovery.Registration, weight uint32) {
	a.active = r
	rep, _ := r.(discovery.StatusReporter)
	a.mu.Lock()
	a.st.Registered, a.st.Weight, a.reporter = r != nil, weight, rep
	if r == nil {
		a.st.Weight = 0
	}
	a.mu.Unlock()
}

// setHealth records a health check's outcome.
func (a *Agent) setHealth(err error) {
	a.mu.Lock()
	a.st.Healthy = err == nil
	if err != nil {
		a.st.LastCheckError = err.Error()
	}
	a.mu.Unlock()
}

// ErrReplace is returned by Reconfigure for a change it cannot apply to
// the live registration.
var ErrReplace = errors.New("register: the change needs a new registration")

// Reconfigure applies cfg, validated, to the agent. A change of metadata,
// weight, warm-up or deregister_delay is applied in place: Run updates the
// live registration at once (consumers see the new labels without a
// withdrawal). A change of anything else (registry, service, id, address,
// port, health) returns an error wrapping ErrReplace that names the fields
// and changes nothing: the caller deregisters this agent and starts a new
// one. It is safe to call concurrently with Run and Status.
func (a *Agent) Reconfigure(cfg Config) error {
	a.mu.Lock()
	old := a.cfg
	var fixed []string
	for _, f := range []struct {
		name string
		same bool
	}{
		{"registry", old.Registry == cfg.Registry}, {"service", old.Service == cfg.Service}, {"id", old.ID == cfg.ID},
		{"address", old.Address == cfg.Address}, {"port", old.Port == cfg.Port},
		{"health", reflect.DeepEqual(old.Health, cfg.Health)},
	} {
		if !f.same {
			fixed = append(fixed, f.name)
		}
	}
	if len(fixed) > 0 {
		a.mu.Unlock()
		return fmt.Errorf("%w: %s changed", ErrReplace, strings.Join(fixed, ", "))
	}
	a.cfg = cfg
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	return nil
}

// config returns the current config.
func (a *Agent) config() Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// SetWithdrawn takes the application out of the registry and keeps it out
// whatever its health (true: a drain), or lets it back in (false): Run
// withdraws or registers at once, not at the next check. Registering again
// starts a new warm-up. It is safe to call concurrently with Run and
// Status, before Run too.
func (a *Agent) SetWithdrawn(w bool) {
	a.mu.Lock()
	changed := a.withdrawn != w
	a.withdrawn, a.st.Withdrawn = w, w
	a.mu.Unlock()
	if changed {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// state returns the current config and whether the application is
// withdrawn.
func (a *Agent) state() (Config, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg, a.withdrawn
}

// Instance is the instance c registers at its full weight (after
// Validate has filled its defaults).
func (c *Config) Instance() discovery.Instance { return instance(*c, c.Weight) }

func instance(cfg Config, weight uint32) discovery.Instance {
	return discovery.Instance{ID: cfg.ID, Address: cfg.Address, Port: cfg.Port, Weight: weight, Healthy: true, Metadata: cfg.Metadata}
}

// hostPort is where the application is probed: on loopback when it is
// registered under this host's address.
func hostPort(cfg Config) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
}

// Run probes the application and registers, updates or withdraws it until
// Deregister is called (which also ends a registry call in progress) or
// ctx ends. A registry that cannot be reached does not stop it: adapters
// whose registrations converge in the background (etcd, Consul, Nacos)
// register once the registry answers; an error from Register is retried at
// the next check.
func (a *Agent) Run(ctx context.Context) {
	defer close(a.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cfg := a.config() // Health, Service, ID, Address and Port never change
	checker := health.NewChecker(cfg.Health)
	defer checker.Close()
	var streak int // >0 successes, <0 failures in a row
	var registeredAt time.Time
	var advertised discovery.Instance // what the active registration announces
	updateFailing := false            // said at Warn: updates fail since
	tick := time.NewTicker(cfg.Health.Interval)
	defer tick.Stop()
	var err error // of the last check
	check := true // false when woken by Reconfigure or SetWithdrawn: no extra probe
	var withdrawn bool
	for {
		cfg, withdrawn = a.state()
		if check {
			err = checker.Check(ctx, hostPort(cfg))
			if ctx.Err() != nil {
				return
			}
			a.setHealth(err)
			switch {
			case err == nil && streak < 0, err != nil && streak > 0:
				streak = 0
			}
			if err == nil {
				streak++
			} else {
				streak--
			}
		}
		check = true
		switch {
		case withdrawn && a.active != nil:
			a.log.Info("withdrawn on request (drain): deregistering")
			if derr := a.call(func() error { return a.active.Deregister(ctx) }); derr != nil {
				a.log.WithError(derr).Warn("deregistration failed")
			}
			a.setActive(nil, 0)
		case withdrawn:
			// Kept out until SetWithdrawn(false).
		case a.active == nil && streak >= cfg.Health.HealthyThreshold:
			inst := instance(cfg, a.warmWeight(0))
			var r discovery.Registration
			rerr := a.call(func() (err error) { r, err = a.reg.Register(ctx, cfg.Service, inst); return err })
			if rerr != nil {
				if ctx.Err() == nil {
					a.log.WithError(rerr).Warn("registration failed; retrying")
				}
				break
			}
			registeredAt, advertised = a.now(), inst
			a.setActive(r, inst.Weight)
			log := a.log.WithFields(logrus.Fields{"address": cfg.Address, "port": cfg.Port, "weight": inst.Weight})
			if rs := a.Status().Registration; rs != nil && !rs.Up {
				log.WithField("error", rs.LastError).Warn("application healthy: registering; the registry has not accepted it yet")
			} else {
				log.Info("application healthy: registered")
			}
		case a.active != nil && -streak >= cfg.Health.UnhealthyThreshold:
			a.log.WithError(err).Warn("application unhealthy: deregistering")
			if derr := a.call(func() error { return a.active.Deregister(ctx) }); derr != nil {
				a.log.WithError(derr).Warn("deregistration failed")
			}
			a.setActive(nil, 0)
		case a.active != nil:
			// Warm-up and Reconfigure: announce what is wanted now. A
			// failed update is tried again at the next check (and the
			// adapters keep converging on the value they were given).
			want := instance(cfg, a.warmWeight(a.now().Sub(registeredAt)))
			if !want.Equal(advertised) {
				if uerr := a.call(func() error { return a.active.Update(ctx, want) }); uerr == nil {
					advertised = want
					a.setActive(a.active, want.Weight)
					updateFailing = false
				} else if ctx.Err() == nil && !updateFailing {
					// Once until one succeeds: it is tried at every check.
					updateFailing = true
					a.log.WithError(uerr).WithField("weight", want.Weight).Warn("registration update not applied; the registry keeps the last one, and the update is tried again at every check")
				} else if ctx.Err() == nil {
					a.log.WithError(uerr).Debug("registration update not applied yet")
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.kick:
			check = false
		}
	}
}

// call makes one call to the registry adapter (Register, Update,
// Deregister, which some adapters make on the calling goroutine, through
// their registry's client) and returns its error; a panic in it (a
// client's bug, an answer no test foresaw) is returned as a *panics.Error,
// logged with its stack once a minute at most, and taken as a failed
// call: Run tries again at its next check, and the process goes on.
func (a *Agent) call(f func() error) (err error) {
	if p := panics.Catch(func() { err = f() }); p != nil {
		a.panics.Log(a.log, p, "the registry adapter panicked; taking it as a failed call and trying again")
		return p
	}
	return err
}

// warmWeight is the weight to advertise elapsed after registration: 10% of
// the full weight rising linearly to all of it over the warm-up window.
func (a *Agent) warmWeight(elapsed time.Duration) uint32 {
	cfg := a.config()
	full := cfg.Weight
	if cfg.Warmup <= 0 || elapsed >= cfg.Warmup {
		return full
	}
	frac := 0.1 + 0.9*float64(elapsed)/float64(cfg.Warmup)
	return max(1, uint32(float64(full)*frac))
}

// Deregister stops Run for good and withdraws the application; it reports
// whether the application was registered. It is idempotent. The caller
// then waits the deregistration delay before draining.
func (a *Agent) Deregister(ctx context.Context) bool {
	a.once.Do(func() { close(a.stop) })
	<-a.done
	if a.active == nil {
		return false
	}
	if err := a.call(func() error { return a.active.Deregister(ctx) }); err != nil {
		a.log.WithError(err).Warn("deregistration failed")
	} else {
		a.log.Info("deregistered")
	}
	a.setActive(nil, 0)
	return true
}
