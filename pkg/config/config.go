// Package config defines Remora's YAML configuration: the schema, its
// defaults, and validation whose errors name the file, the field path, the
// line and column of the bad value, and what is wrong, every error of a
// file at once (see Parse and internal/strictyaml).
//
// Registry and balancer options are parsed by the adapter or policy that owns
// them (discovery.Factory, balancer.Factory), so this package imports no
// registry SDK; the caller must have imported the adapters and policies it
// wants to accept (cmd/remora imports them all).
package config

import (
	"path/filepath"
	"strconv"
	"time"

	"github.com/remora-mesh/remora/internal/regularfile"
	"github.com/remora-mesh/remora/internal/strictyaml"
)

// Defaults.
const (
	DefaultAdminAddress        = "127.0.0.1:15000"
	DefaultOutboundAddress     = "127.0.0.1:15001"
	DefaultBalancer            = "round_robin"
	DefaultInitialSyncTimeout  = 10 * time.Second
	DefaultDrainTimeout        = 15 * time.Second
	DefaultConnectTimeout      = 2 * time.Second
	DefaultIdleConnTimeout     = 90 * time.Second
	DefaultMaxIdleConnsPerHost = 256
)

// Load reads, defaults and validates the file at path. The error lists
// every problem found (as Errors), each prefixed with the file's name.
func Load(path string) (*Config, error) {
	data, err := regularfile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	cfg, err := Parse(data, dir)
	if err != nil {
		return nil, strictyaml.InFile(filepath.Base(path), err)
	}
	return cfg, nil
}

// Parse decodes, defaults and validates a configuration; dir resolves
// relative paths. The error is Errors: every problem of the file, each
// with the field path, the line and column of the bad value, and what is
// wrong. A value of the wrong type does not hide the rest: what decoded is
// validated too, and only errors about the bad value itself are left out.
// Warnings carry the line of the value they are about.
func Parse(data []byte, dir string) (*Config, error) {
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, err
	}
	cfg := &Config{Dir: dir}
	d := strictyaml.NewDecoder()
	d.Decode(root, cfg, "")
	cfg.applyDefaults()
	cfg.validate(d)
	if err := d.Err(); err != nil {
		return nil, err
	}
	for i, w := range cfg.Warnings {
		path, msg := strictyaml.SplitPath(w)
		cfg.Warnings[i] = (&Error{Pos: d.Locate(path), Path: path, Msg: msg}).Error()
	}
	return cfg, nil
}

// applyDefaults fills the defaults that need no validation first; the
// rest (the canary rule, the register block's, the adapters' and
// policies' own) are filled by Validate and the blocks' own Validate.
func (c *Config) applyDefaults() {
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
		c.defaultAdmin = true
	}
	if c.Admin.Metrics.NodeLabels == nil {
		on := true
		c.Admin.Metrics.NodeLabels = &on
	}
	if c.AccessLog.Sample == nil {
		one := 1.0
		c.AccessLog.Sample = &one
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Name: "outbound", Address: DefaultOutboundAddress}}
		c.defaultListener = true
	}
	for i := range c.Listeners {
		if c.Listeners[i].Name == "" {
			c.Listeners[i].Name = "listener-" + strconv.Itoa(i)
		}
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Proxy.ConnectTimeout == 0 {
		c.Proxy.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Proxy.IdleConnTimeout == 0 {
		c.Proxy.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.Proxy.MaxIdleConnsPerHost == 0 {
		c.Proxy.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.Proxy.MaxHeaderBytes == 0 {
		c.Proxy.MaxHeaderBytes = 64 << 10
	}
	if c.Proxy.ReadHeaderTimeout == 0 {
		c.Proxy.ReadHeaderTimeout = 10 * time.Second
	}
	if c.Proxy.MaxResponseHeaderBytes == 0 {
		c.Proxy.MaxResponseHeaderBytes = 64 << 10
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Service == "" {
			u.Service, u.serviceFromName = u.Name, true
		}
		if u.Registry == "" && len(c.Registries) == 1 {
			u.Registry = c.Registries[0].Name
		}
		if u.Balancer.Policy == "" {
			u.Balancer.Policy = DefaultBalancer
		}
		if u.InitialSyncTimeout == 0 {
			u.InitialSyncTimeout = DefaultInitialSyncTimeout
		}
	}
}
