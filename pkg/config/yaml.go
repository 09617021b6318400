package config

import (
	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Error is one problem in a configuration: the field path of the bad
// value, where it is written (line and column; zero for a value that is
// not in the file, such as a default) and what is wrong with it.
type Error = strictyaml.Error

// Errors are every problem of a configuration, in the order of the file,
// one per line. Parse and Load return them.
type Errors = strictyaml.Errors

var (
	_ strictyaml.Unmarshaler = (*Registry)(nil)
	_ strictyaml.Unmarshaler = (*Balancer)(nil)
	_ yaml.Unmarshaler       = (*Registry)(nil)
	_ yaml.Unmarshaler       = (*Balancer)(nil)
	_ yaml.Marshaler         = Balancer{}
	_ yaml.Marshaler         = Admin{}
	_ yaml.Marshaler         = Upstream{}
)

// UnmarshalStrict takes name and type, and keeps the other keys as option
// blocks for the adapter, which Validate decodes. A block under a key
// other than the type's own is an error.
func (r *Registry) UnmarshalStrict(d *strictyaml.Decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, path, "a registry is a mapping with name, type and the type's options, such as {name: main, type: static, static: {...}}")
		return
	}
	r.blocks = map[string]*yaml.Node{}
	r.keys = map[string]*yaml.Node{}
	var others []strictyaml.Pair
	for _, p := range d.Pairs(n, path) {
		switch p.Name {
		case "name":
			d.Decode(p.Value, &r.Name, path+".name")
		case "type":
			d.Decode(p.Value, &r.Type, path+".type")
		default:
			r.blocks[p.Name], r.keys[p.Name] = p.Value, p.Key
			others = append(others, p)
		}
	}
	if _, ok := discovery.Lookup(r.Type); !ok {
		return // Validate reports the type; its options cannot be judged
	}
	for _, p := range others {
		switch _, isType := discovery.Lookup(p.Name); {
		case p.Name == r.Type:
		case isType:
			d.Errorf(p.Key, path+"."+p.Name, "a %s registry takes its options under %s:, not %s:", r.Type, r.Type, p.Name)
		default:
			d.Unknown(p.Key, path+"."+p.Name, []string{"name", "type", r.Type})
		}
	}
}

// UnmarshalYAML decodes a registry as UnmarshalStrict does, for callers
// of yaml.Unmarshal.
func (r *Registry) UnmarshalYAML(n *yaml.Node) error {
	d := strictyaml.NewDecoder()
	r.UnmarshalStrict(d, n, "")
	return d.Err()
}

// UnmarshalStrict accepts a policy name or a mapping with policy and the
// policy's options, which Validate decodes.
func (b *Balancer) UnmarshalStrict(d *strictyaml.Decoder, n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		d.Decode(n, &b.Policy, path)
		return
	case yaml.MappingNode:
		opts := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		for _, p := range d.Pairs(n, path) {
			if p.Name == "policy" {
				d.Decode(p.Value, &b.Policy, path+".policy")
				b.policyKey = true
				continue
			}
			opts.Content = append(opts.Content, p.Key, p.Value)
		}
		if len(opts.Content) > 0 {
			b.options = opts
		}
		return
	}
	d.Errorf(n, path, "a balancer is a policy name, such as round_robin, or a mapping with policy and the policy's options")
}

// UnmarshalYAML decodes a balancer as UnmarshalStrict does, for callers of
// yaml.Unmarshal.
func (b *Balancer) UnmarshalYAML(n *yaml.Node) error {
	d := strictyaml.NewDecoder()
	b.UnmarshalStrict(d, n, "")
	return d.Err()
}

// MarshalYAML writes the balancer as it was written: the policy's name
// alone, or a mapping with policy and the policy's options.
func (b Balancer) MarshalYAML() (any, error) {
	if b.options == nil {
		return b.Policy, nil
	}
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "policy"},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: b.Policy})
	n.Content = append(n.Content, b.options.Content...)
	return n, nil
}

// MarshalYAML writes the upstream so that it reads back the same: without
// the defaults Validate fills in that it would refuse if written (a tcp
// upstream's retry policy, error statuses and canary header; the canary
// selector a canary service implies).
func (u Upstream) MarshalYAML() (any, error) {
	type plain Upstream // without this method
	p := plain(u)
	if c := p.Canary; c != nil && (c.Service != "" || u.Protocol == "tcp") {
		cc := *c
		if cc.Service != "" {
			cc.Selector = nil
		}
		if u.Protocol == "tcp" {
			cc.Header = ""
		}
		p.Canary = &cc
	}
	if u.Protocol == "tcp" {
		p.Retry = upstream.Retry{}
		p.Health.Passive.ErrorStatuses = nil
	}
	return p, nil
}

// MarshalYAML writes the admin block with its token as a secret.Secret,
// which every encoder redacts, and leaves the token out when it was read
// from token_file (the file is written instead).
func (a Admin) MarshalYAML() (any, error) {
	v := struct {
		Address   string        `yaml:"address"`
		Metrics   AdminMetrics  `yaml:"metrics"`
		Token     secret.Secret `yaml:"token,omitempty"`
		TokenFile string        `yaml:"token_file,omitempty"`
	}{a.Address, a.Metrics, secret.Secret(a.Token), a.TokenFile}
	if a.TokenFile != "" {
		v.Token = ""
	}
	return v, nil
}
