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
// its weight to 1 and healthy to true. A file that becomes unreadable or
// invalid is reported (watchers return the error) and its last good content
// is kept.
package static

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the adapter's type name in config.
const Type = "static"

// DefaultPollInterval is how often a file is checked for changes.
const DefaultPollInterval = time.Second

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
	if o.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("poll_interval: %v is negative", o.PollInterval))
	}
	if o.PollInterval <= 0 {
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
// carry the line of the value at fault.
func ParseFile(name string, data []byte) (map[string][]discovery.Instance, error) {
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, strictyaml.InFile(name, err)
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

// Open implements discovery.Options.
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	mem := NewRegistry()
	if o.File == "" {
		mem.Replace(o.parsed)
		return mem, nil
	}
	fr := &fileRegistry{Registry: mem, path: tlsfiles.Resolve(env.BaseDir, o.File), interval: o.PollInterval, env: env, done: make(chan struct{}),
		broken: errors.New("static file not read yet")}
	fr.load() // first read is synchronous so the first Watch sees the file
	fr.wg.Add(1)
	go fr.poll()
	return fr, nil
}

// fileRegistry re-reads a file into its in-memory registry. lastData and
// lastErr are owned by the poll goroutine (and Open, before it starts); mu
// guards broken.
type fileRegistry struct {
	*Registry
	path     string
	interval time.Duration
	env      discovery.Env
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	lastData []byte
	lastErr  string

	mu     sync.Mutex
	broken error // set until the file was read successfully once
}

func (f *fileRegistry) poll() {
	defer f.wg.Done()
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
			f.load()
		}
	}
}

// load reads the file and publishes its content when it changed. A bad file
// is reported once per distinct problem and the last good content is kept.
func (f *fileRegistry) load() {
	data, err := os.ReadFile(f.path)
	if err == nil && f.lastData != nil && bytes.Equal(data, f.lastData) {
		return
	}
	var services map[string][]discovery.Instance
	if err == nil {
		f.lastData = data
		services, err = ParseFile(f.path, data)
	} else {
		f.lastData = nil
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
