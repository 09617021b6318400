// Package canary splits an upstream's traffic between stable and canary
// nodes, chosen by labels the nodes carry in the registry.
//
// Every upstream has a rule: without a `canary:` block it is DefaultRule
// (instances tagged canary=true are canaries, their canary-weight label is
// the weight, 0 without one), so tagging instances in the registry is all a
// canary release needs; a `canary:` block overrides it and
// `canary: {disabled: true}` turns it off.
//
// A Rule (from config) is compiled once; for every node set the upstream's
// controller builds a Split (immutable, published in the snapshot) holding
// the effective weight; Choose decides per request, without locks or
// allocations, in this order:
//
//  1. the override header (default x-canary): "always" → canary, "never" →
//     stable;
//  2. match rules on headers or cookies → canary;
//  3. the weight: with a hash key (a header or cookie such as a user id) the
//     key's bucket decides, so the same key always lands in the same pool
//     at a given weight, and raising the weight only moves keys from stable
//     to canary; without a key, a random draw.
//
// Weight precedence: a canary instance's registry label weight_key (default
// canary-weight, a percentage such as "10" or "2.5") wins over the config's
// weight, so a team ramps by re-tagging instances; when canary instances
// disagree the smallest value wins. An automatic rollback forces 0.
package canary

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/node"
)

// Config is an upstream's `canary:` block. The zero Config is the default
// rule's (see DefaultRule).
type Config struct {
	// Disabled turns the canary rule off: every node is stable, whatever
	// its labels. It takes no other field.
	Disabled bool `yaml:"disabled"`
	// Selector labels mark canary nodes (all must match); default
	// {canary: "true"}.
	Selector map[string]string `yaml:"selector"`
	// Service makes the canary a separate registry service (in the
	// upstream's registry) instead of labelled instances; its instances
	// form the canary pool.
	Service string `yaml:"service"`
	// Weight is the canary's share of traffic in percent (0..100,
	// fractions allowed) unless the registry says otherwise; default 0.
	Weight float64 `yaml:"weight"`
	// WeightKey is the label on canary instances that overrides Weight;
	// default canary-weight; "-" disables it.
	WeightKey string `yaml:"weight_key"`
	// Header is the override header; default x-canary.
	Header string `yaml:"header"`
	// Match sends matching requests to the canary.
	Match []Match `yaml:"match"`
	// HashOn makes cohorts sticky by a request key (header, cookie, ...).
	HashOn *hashkey.Spec `yaml:"hash_on"`
	// Strict answers 503 when the canary is chosen but has no node,
	// instead of falling back to stable.
	Strict bool `yaml:"strict"`
	// Rollback configures automatic rollback; off unless set.
	Rollback *Rollback `yaml:"rollback"`
}

// Match is one rule: a header or a cookie with a value.
type Match struct {
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	Value  string `yaml:"value"`
}

// Pool is where a request goes.
type Pool uint8

// Pools.
const (
	Stable Pool = iota
	Canary
)

func (p Pool) String() string {
	if p == Canary {
		return "canary"
	}
	return "stable"
}

// Rule is a compiled Config. It is immutable.
type Rule struct {
	cfg       Config
	selector  []label // cfg.Selector as a slice: IsCanary runs per node on every publish
	header    string  // canonical
	match     []Match
	key       hashkey.Key // the zero Key without hash_on: no request has a key
	weightKey string
	isDefault bool // made by DefaultRule, not from a canary: block
}

// DefaultRule returns the rule of an upstream without a `canary:` block:
// selector {canary: "true"}, weight 0 unless the canary instances carry a
// canary-weight label, override header x-canary. An instance tagged
// canary=true without a weight gets no traffic (unless the stable pool is
// empty, or a request asks for it with x-canary: always); removing the tag
// makes it an ordinary node at once.
func DefaultRule() *Rule {
	var c Config
	r, err := c.Validate()
	if err != nil {
		panic("canary: the default rule does not validate: " + err.Error())
	}
	r.isDefault = true
	return r
}

// IsDefault reports whether r is DefaultRule's, not one compiled from a
// `canary:` block.
func (r *Rule) IsDefault() bool { return r.isDefault }

// Validate fills defaults and compiles the config; errors name fields
// relative to the block. A disabled config compiles to no rule: it returns
// nil and no error.
func (c *Config) Validate() (*Rule, error) {
	if c.Disabled {
		return nil, c.validateDisabled()
	}
	var errs []error
	switch {
	case c.Service != "" && len(c.Selector) > 0:
		errs = append(errs, errors.New("service: set either selector or service, not both"))
	case c.Service != "":
		c.Selector = map[string]string{ServiceLabel: c.Service}
	case len(c.Selector) == 0:
		c.Selector = map[string]string{"canary": "true"}
	}
	if c.Weight < 0 || c.Weight > 100 {
		errs = append(errs, fmt.Errorf("weight: %v; want a percentage 0..100", c.Weight))
	}
	if c.WeightKey == "" {
		c.WeightKey = "canary-weight"
	}
	if c.Header == "" {
		c.Header = "x-canary"
	}
	r := &Rule{cfg: *c, header: http.CanonicalHeaderKey(c.Header)}
	for _, k := range slices.Sorted(maps.Keys(c.Selector)) {
		r.selector = append(r.selector, label{k, c.Selector[k]})
	}
	if c.WeightKey != "-" {
		r.weightKey = c.WeightKey
	}
	for i, m := range c.Match {
		switch {
		case (m.Header == "") == (m.Cookie == ""):
			errs = append(errs, fmt.Errorf("match[%d]: set exactly one of header or cookie", i))
		case m.Value == "":
			errs = append(errs, fmt.Errorf("match[%d].value: missing", i))
		}
		m.Header = http.CanonicalHeaderKey(m.Header)
		r.match = append(r.match, m)
	}
	if c.HashOn != nil {
		k, err := c.HashOn.Compile()
		if err != nil {
			errs = append(errs, fmt.Errorf("hash_on: %w", err))
		}
		r.key = k
	}
	if c.Rollback != nil {
		if err := c.Rollback.validate(); err != nil {
			errs = append(errs, fmt.Errorf("rollback.%w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// validateDisabled refuses a disabled config that sets other fields,
// naming them: they could not apply.
func (c *Config) validateDisabled() error {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"selector", len(c.Selector) > 0}, {"service", c.Service != ""}, {"weight", c.Weight != 0},
		{"weight_key", c.WeightKey != ""}, {"header", c.Header != ""}, {"match", len(c.Match) > 0},
		{"hash_on", c.HashOn != nil}, {"strict", c.Strict}, {"rollback", c.Rollback != nil},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	switch len(set) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("disabled: the canary rule is off, so %s cannot apply; remove it or disabled", set[0])
	}
	return fmt.Errorf("disabled: the canary rule is off, so %s and %s cannot apply; remove them or disabled",
		strings.Join(set[:len(set)-1], ", "), set[len(set)-1])
}

// ServiceLabel marks the instances of a separate canary service (see
// Config.Service); the upstream adds it when it merges the two services.
const ServiceLabel = "remora.canary.service"

// Service returns the separate canary service, or "".
func (r *Rule) Service() string { return r.cfg.Service }

// Relabel marks an instance of the separate canary service: its ID is
// prefixed so it cannot collide with a stable one, and it carries
// ServiceLabel.
func (r *Rule) Relabel(in discovery.Instance) discovery.Instance {
	in.ID = "canary/" + in.ID
	in.Metadata = discovery.CloneMetadata(in.Metadata)
	in.Metadata[ServiceLabel] = r.cfg.Service
	return in
}

// Config returns the validated config.
func (r *Rule) Config() Config { return r.cfg }

// Strict reports whether a chosen but empty canary pool answers 503.
func (r *Rule) Strict() bool { return r.cfg.Strict }

// label is one key and value of a selector.
type label struct{ key, value string }

// IsCanary reports whether n's labels match the selector.
func (r *Rule) IsCanary(n *node.Node) bool {
	for _, l := range r.selector {
		if v, ok := n.Metadata[l.key]; !ok || v != l.value {
			return false
		}
	}
	return true
}

// WeightOf returns the effective weight for a node set's canary nodes: the
// smallest valid weight_key label among them, else the config's weight.
// The second result names the source ("config" or "registry").
func (r *Rule) WeightOf(canaries []*node.Node) (float64, string) {
	w, from := r.cfg.Weight, "config"
	if r.weightKey == "" {
		return w, from
	}
	found := false
	for _, n := range canaries {
		v, ok := n.Metadata[r.weightKey]
		if !ok {
			continue
		}
		f, err := ParseWeight(v)
		if err != nil {
			continue // reported by the controller: see BadWeightLabels
		}
		if !found || f < w {
			w, found = f, true
		}
	}
	if found {
		from = "registry"
	}
	return w, from
}

// Fingerprint identifies what the rule reads of a node set's canary
// instances, for an automatic rollback to hold until they are re-labelled:
// the selector and the distinct values of weight_key (or its absence)
// among every node the selector matches, available or not. Nothing else
// counts: a canary instance that turns unhealthy, drains, moves, or is
// added or removed beside others labelled alike leaves it as it was. It is
// "" when no node matches.
//
// It runs in the controller, on every publish: one pass over nodes, and
// allocations only for the distinct values.
func (r *Rule) Fingerprint(nodes []*node.Node) string {
	type weightLabel struct {
		value string
		set   bool
	}
	var seen []weightLabel // distinct, in the order met; a handful at most
	for _, n := range nodes {
		if !r.IsCanary(n) {
			continue
		}
		var w weightLabel
		if r.weightKey != "" {
			w.value, w.set = n.Metadata[r.weightKey]
		}
		if !slices.Contains(seen, w) {
			seen = append(seen, w)
		}
	}
	if len(seen) == 0 {
		return ""
	}
	slices.SortFunc(seen, func(a, b weightLabel) int {
		if a.set != b.set {
			if a.set {
				return 1
			}
			return -1
		}
		return strings.Compare(a.value, b.value)
	})
	var b strings.Builder
	for _, l := range r.selector {
		b.WriteString(l.key + "=" + l.value + "\x00")
	}
	for _, w := range seen {
		b.WriteString("\x01" + r.weightKey)
		if w.set {
			b.WriteString("=" + w.value)
		}
	}
	return b.String()
}

// LabelError is a weight_key label WeightOf ignores: its value is not a
// percentage.
type LabelError struct {
	// Node is the instance ID; Key and Value the label.
	Node, Key, Value string
	// Err says why.
	Err error
}

func (e LabelError) Error() string {
	return fmt.Sprintf("canary instance %s: label %s: %v; ignored", e.Node, e.Key, e.Err)
}

// BadWeightLabels returns the weight_key labels WeightOf ignores among the
// nodes the selector matches, available or not, in the order of nodes;
// none without weight_key. It runs in the controller, which reports them:
// a label a team mistyped would otherwise leave the canary on the
// config's weight in silence.
func (r *Rule) BadWeightLabels(nodes []*node.Node) []LabelError {
	if r.weightKey == "" {
		return nil
	}
	var bad []LabelError
	for _, n := range nodes {
		v, ok := n.Metadata[r.weightKey]
		if !ok || !r.IsCanary(n) {
			continue
		}
		if _, err := ParseWeight(v); err != nil {
			bad = append(bad, LabelError{Node: n.ID, Key: r.weightKey, Value: v, Err: err})
		}
	}
	return bad
}

// ParseWeight parses a weight label value ("10", "2.5", "10%").
func ParseWeight(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || f < 0 || f > 100 || f != f {
		return 0, fmt.Errorf("%q is not a percentage 0..100", v)
	}
	return f, nil
}

// Split is the canary state of one snapshot. It is immutable.
type Split struct {
	Rule *Rule
	// Picker chooses among eligible canary nodes.
	Picker balancer.Picker
	// Available counts eligible canary nodes.
	Available int
	// Weight is the effective percentage after rollback; WeightFrom says
	// where it came from ("config", "registry", "rollback").
	Weight     float64
	WeightFrom string
	// LabelError describes the weight_key labels ignored (see
	// BadWeightLabels), "" when there is none.
	LabelError string
	threshold  uint64 // Weight as a share of 2^32
	// idle: no canary node and a rule that is not strict, so every
	// request goes to stable whatever Choose would decide.
	idle bool
}

// NewSplit returns a split with weight w percent over available canary
// nodes.
func NewSplit(r *Rule, p balancer.Picker, available int, w float64, from string) *Split {
	return &Split{Rule: r, Picker: p, Available: available, Weight: w, WeightFrom: from, threshold: uint64(w / 100 * (1 << 32)),
		idle: available == 0 && !r.Strict()}
}

// stickySalt decorrelates cohorts from the consistent-hash policies, which
// hash the same keys.
const stickySalt = 0x9e3779b97f4a7c15

// Choose picks the pool for a request or connection. Override headers and
// match rules read info.Request (nil for a TCP connection); the sticky key
// may hash the client's address. It does not lock or allocate.
//
// Without a canary node and with a rule that is not strict, it returns
// Stable at once: a canary chosen then would fall back to stable anyway.
// That is every request of an upstream whose default rule finds no tagged
// instance, so the rule costs such an upstream one branch.
func (s *Split) Choose(info balancer.Info) Pool {
	if s.idle {
		return Stable
	}
	r := s.Rule
	if req := info.Request; req != nil {
		if vs := req.Header[r.header]; len(vs) > 0 {
			switch {
			case strings.EqualFold(vs[0], "always"):
				return Canary
			case strings.EqualFold(vs[0], "never"):
				return Stable
			}
		}
		for i := range r.match {
			m := &r.match[i]
			if m.Header != "" {
				if vs := req.Header[m.Header]; len(vs) > 0 && vs[0] == m.Value {
					return Canary
				}
			} else if hashkey.Cookie(req, m.Cookie) == m.Value {
				return Canary
			}
		}
	}
	if s.threshold == 0 {
		return Stable
	}
	if s.threshold >= 1<<32 {
		return Canary
	}
	var bucket uint64
	if h, ok := r.key.Hash(info); ok {
		bucket = hashkey.Mix(h^stickySalt) >> 32
	} else {
		bucket = rand.Uint64() >> 32
	}
	if bucket < s.threshold {
		return Canary
	}
	return Stable
}
