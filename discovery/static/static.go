// Package static is the registry adapter for instances written in the
// config itself or in a YAML file that is re-read when it changes.
//
//	registries:
//	  - name: local
//	    type: static
//	    static:
//	      services:
//	        user-service:
//	          - {address: 127.0.0.1, port: 8081}
//	          - {id: b, address: 127.0.0.1, port: 8082, weight: 2, metadata: {canary: "true"}}
//
// or `static: {file: instances.yaml, poll_interval: 1s}` where the file holds
// the same `services:` mapping. An instance's id defaults to address:port,
// its weight to 1 and healthy to true. A file that becomes unreadable,
// invalid or empty is reported (watchers return the error) and its last
// good content is kept. A changed file is read again after Settle and acted
// on only when both reads agree, so a file being written in place is not
// published half-way; replacing it by rename is the safe way to edit it.
// Reading that panics (content no test foresaw) is logged with its stack
// and reported as a bad file is; the file is read again at the next poll.
package static

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/regularfile"
	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the adapter's type name in config.
const Type = "static"

// DefaultPollInterval is how often a file is checked for changes.
const DefaultPollInterval = time.Second

// Settle is how long a file's content must stay the same before it is
// acted on: a changed file is read again Settle later, and applied (or
// reported, if it is bad) only when both reads agree. A writer that
// truncates the file and then writes it, or writes it in pieces, is not
// caught half-way, as long as it pauses less than Settle. The config
// file's own watch in cmd/remora uses the same rule.
const Settle = 100 * time.Millisecond

// settleTries bounds how many Settle periods one poll waits for a file
// that keeps changing; the next poll tries again.
const settleTries = 10

// ErrEmptyFile is the error of a static file that holds no YAML document
// (empty, blanks or comments only): most likely one caught while being
// written, so it is never applied.
var ErrEmptyFile = errors.New("the file is empty (being written?); not applied: write `services: {}` for no instances")

func init() { discovery.Register(factory{}) }

type factory struct{}

func (factory) Type() string { return Type }

func (factory) Parse(decode func(any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Options configure a static registry.
type Options struct {
	// Services lists instances by service name.
	Services map[string][]InstanceSpec `yaml:"services"`
	// File names a YAML file with a `services:` mapping; relative to the
	// config file's directory.
	File string `yaml:"file"`
	// PollInterval is how often File is checked for changes; default 1s.
	// It is refused without File, and stays 0 then.
	PollInterval time.Duration `yaml:"poll_interval"`

	parsed map[string][]discovery.Instance
}

// InstanceSpec is one instance as written in YAML.
type InstanceSpec struct {
	// ID defaults to address:port.
	ID string `yaml:"id"`
	// Address is a host or IP; it may carry the port as host:port.
	Address string `yaml:"address"`
	// Port is required unless Address carries it.
	Port int `yaml:"port"`
	// Weight defaults to 1; 0 drains the instance.
	Weight *uint32 `yaml:"weight"`
	// Healthy defaults to true.
	Healthy *bool `yaml:"healthy"`
	// Metadata are the instance's labels.
	Metadata map[string]string `yaml:"metadata"`
}

func (o *Options) validate() error {
	var errs []error
	if o.File != "" && len(o.Services) > 0 {
		errs = append(errs, errors.New("file: set either services or file, not both"))
	}
	switch {
	case o.PollInterval < 0:
		errs = append(errs, fmt.Errorf("poll_interval: %v is negative", o.PollInterval))
	case o.PollInterval > 0 && o.File == "":
		// Only a file is polled: without one the setting would be
		// accepted and do nothing.
		errs = append(errs, fmt.Errorf("poll_interval: %v, but file is not set; poll_interval is how often file is checked: set file, or remove poll_interval", o.PollInterval))
	}
	if o.PollInterval <= 0 && o.File != "" {
		o.PollInterval = DefaultPollInterval
	}
	parsed, err := parseServices(o.Services, "services")
	o.parsed = parsed
	return errors.Join(append(errs, err)...)
}

// parseServices validates specs and turns them into instance sets; path
// prefixes error messages, which name the field at fault
// ("services.a[0].port: ...").
func parseServices(specs map[string][]InstanceSpec, path string) (map[string][]discovery.Instance, error) {
	out := make(map[string][]discovery.Instance, len(specs))
	var errs []error
	for _, svc := range slices.Sorted(maps.Keys(specs)) {
		list := specs[svc]
		if svc == "" {
			errs = append(errs, fmt.Errorf("%s: empty service name", path))
			continue
		}
		ids := map[string]int{}
		for i, spec := range list {
			at := fmt.Sprintf("%s.%s[%d]", path, svc, i)
			in, err := spec.instance()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.%w", at, err))
				continue
			}
			if prev, dup := ids[in.ID]; dup {
				errs = append(errs, fmt.Errorf("%s: duplicate id %q (also at [%d])", at, in.ID, prev))
				continue
			}
			ids[in.ID] = i
			out[svc] = append(out[svc], in)
		}
	}
	return out, errors.Join(errs...)
}

// instance checks the spec and returns its instance; an error starts with
// the field at fault.
func (s InstanceSpec) instance() (discovery.Instance, error) {
	in := discovery.Instance{ID: s.ID, Address: s.Address, Port: s.Port, Weight: discovery.DefaultWeight, Healthy: true, Metadata: s.Metadata}
	if host, port, err := net.SplitHostPort(s.Address); err == nil {
		p, perr := strconv.Atoi(port)
		if perr != nil {
			return in, fmt.Errorf("address: %q has a bad port %q", s.Address, port)
		}
		if s.Port != 0 && s.Port != p {
			return in, fmt.Errorf("port: %d, but address %q carries port %d; drop one of them", s.Port, s.Address, p)
		}
		in.Address, in.Port = host, p
	}
	if in.Address == "" {
		return in, errors.New("address: missing")
	}
	switch {
	case in.Port == 0:
		return in, errors.New("port: missing; set port, or write the address as host:port")
	case in.Port < 1 || in.Port > 65535:
		return in, fmt.Errorf("port: %d; want 1..65535", in.Port)
	}
	if s.Weight != nil {
		in.Weight = *s.Weight
	}
	if s.Healthy != nil {
		in.Healthy = *s.Healthy
	}
	if in.ID == "" {
		in.ID = in.HostPort()
	}
	return in, nil
}

// fileContent is the shape of a static file.
type fileContent struct {
	Services map[string][]InstanceSpec `yaml:"services"`
}

// ParseFile decodes a static file's content; name prefixes errors, which
// carry the line of the value at fault. Content without a YAML document
// (empty, blanks or comments only) is ErrEmptyFile.
func ParseFile(name string, data []byte) (map[string][]discovery.Instance, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrEmptyFile)
	}
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, strictyaml.InFile(name, err)
	}
	if root == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrEmptyFile)
	}
	var fc fileContent
	d := strictyaml.NewDecoder()
	d.Decode(root, &fc, "")
	m, err := parseServices(fc.Services, "services")
	d.Add("", err)
	if err := d.Err(); err != nil {
		return nil, strictyaml.InFile(name, err)
	}
	return m, nil
}

// Open implements discovery.Options. It reads the file before it returns,
// so that the first Watch sees it: a file that can be read is read again
// Settle later (Open takes that long) and applied if it did not change; a
// file still changing is left to the poll, and watchers opened meanwhile
// report that it is not read yet.
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	mem := NewRegistry()
	if o.File == "" {
		mem.Replace(o.parsed)
		return mem, nil
	}
	fr := &fileRegistry{Registry: mem, path: tlsfiles.Resolve(env.BaseDir, o.File), interval: o.PollInterval, settle: Settle, env: env,
		done: make(chan struct{})}
	fr.broken = fmt.Errorf("static file %s not read yet (it was changing when opened)", fr.path)
	fr.safeCheck(1)
	fr.wg.Add(1)
	go fr.poll()
	return fr, nil
}

// fileRegistry re-reads a file into its in-memory registry. lastData,
// lastRead and lastErr are owned by the poll goroutine (and Open, before
// it starts); mu guards broken.
type fileRegistry struct {
	*Registry
	path     string
	interval time.Duration
	settle   time.Duration
	env      discovery.Env
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	// The last read acted on: its content (lastRead) or its error
	// (lastErr, also the last problem reported; "" after a good read).
	lastData []byte
	lastRead bool
	lastErr  string
	panics   panics.Log

	mu     sync.Mutex
	broken error // set until the file was read successfully once
}

func (f *fileRegistry) poll() {
	defer f.wg.Done()
	f.safeCheck(settleTries) // at once, in case Open found the file changing
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
			f.safeCheck(settleTries)
		}
	}
}

// safeCheck is check with a panic (reading, parsing: content no test
// foresaw) contained: it is logged with its stack (once a minute at
// most), the watchers report it as they report a bad file (once per
// distinct problem; their last sets stay, marked stale), and the last
// read is forgotten, so that the next poll reads and applies the file
// again.
func (f *fileRegistry) safeCheck(tries int) {
	p := panics.Catch(func() { f.check(tries) })
	if p == nil {
		return
	}
	err := fmt.Errorf("static file %s: %w", f.path, p)
	f.panics.Log(f.env.Logger().WithField("registry", f.env.Name).WithField("file", f.path), p,
		"reading the static file panicked; keeping the last good instances and reading it again at the next poll")
	if err.Error() != f.lastErr {
		f.FailAll(err)
	}
	f.lastData, f.lastRead, f.lastErr = nil, false, err.Error()
	f.mu.Lock()
	if f.broken != nil {
		f.broken = err
	}
	f.mu.Unlock()
}

// readFile reads the file: a regular file only (a named pipe in its place
// would block Open, and start-up with it, for good), of at most
// regularfile.MaxSize bytes (/dev/zero would exhaust memory). Tests
// replace it.
var readFile = func(name string) ([]byte, error) { return regularfile.ReadFileMax(name, regularfile.MaxSize) }

// check reads the file and, when the read differs from the last one acted
// on, reads it again f.settle later, up to tries times, until two reads in
// a row agree: then it acts on the read (apply). A file that kept changing
// is left to the next poll.
func (f *fileRegistry) check(tries int) {
	data, err := readFile(f.path)
	for range tries {
		if f.seen(data, err) {
			return
		}
		select {
		case <-f.done:
			return
		case <-time.After(f.settle):
		}
		again, againErr := readFile(f.path)
		if sameRead(data, err, again, againErr) {
			f.apply(data, err)
			return
		}
		data, err = again, againErr
	}
	f.env.Logger().WithField("registry", f.env.Name).WithField("file", f.path).Debug("static file still changing; not applied yet")
}

// seen reports whether a read is the one acted on last: nothing to do.
func (f *fileRegistry) seen(data []byte, err error) bool {
	if err != nil {
		return !f.lastRead && f.lastErr != "" && err.Error() == f.lastErr
	}
	return f.lastRead && bytes.Equal(data, f.lastData)
}

// sameRead reports whether two reads of the file agree.
func sameRead(a []byte, aErr error, b []byte, bErr error) bool {
	if aErr != nil || bErr != nil {
		return aErr != nil && bErr != nil && aErr.Error() == bErr.Error()
	}
	return bytes.Equal(a, b)
}

// apply publishes a settled read's content. A bad file (unreadable,
// invalid or empty) is reported once per distinct problem and the last
// good content is kept.
func (f *fileRegistry) apply(data []byte, err error) {
	var services map[string][]discovery.Instance
	if err == nil {
		f.lastData, f.lastRead = data, true
		services, err = ParseFile(f.path, data)
	} else {
		f.lastData, f.lastRead = nil, false
	}
	if err != nil {
		if err.Error() != f.lastErr {
			f.lastErr = err.Error()
			f.env.Logger().WithError(err).WithField("registry", f.env.Name).Warn("static file unusable; keeping the last good instances")
			f.FailAll(err)
		}
		f.mu.Lock()
		if f.broken != nil {
			f.broken = err
		}
		f.mu.Unlock()
		return
	}
	f.lastErr = ""
	f.mu.Lock()
	f.broken = nil
	f.mu.Unlock()
	f.Replace(services)
}

// Watch implements discovery.Registry. Until the file was read successfully
// once, a new watcher reports the read error rather than an empty set.
func (f *fileRegistry) Watch(_ context.Context, service string) (discovery.Watcher, error) {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	return f.watch(service, broken), nil
}

// Close stops polling and every watcher.
func (f *fileRegistry) Close() error {
	f.once.Do(func() { close(f.done) })
	f.wg.Wait()
	return f.Registry.Close()
}
