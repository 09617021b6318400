package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// UnmarshalYAML takes name and type, and keeps the other keys as option
// blocks for the adapter.
func (r *Registry) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a registry must be a mapping with name and type", n.Line)
	}
	r.blocks = map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			if err := v.Decode(&r.Name); err != nil {
				return err
			}
		case "type":
			if err := v.Decode(&r.Type); err != nil {
				return err
			}
		default:
			r.blocks[k.Value] = v
		}
	}
	return nil
}

// UnmarshalYAML accepts a policy name or a mapping with policy and options.
func (b *Balancer) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&b.Policy)
	case yaml.MappingNode:
		opts := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "policy" {
				if err := n.Content[i+1].Decode(&b.Policy); err != nil {
					return err
				}
				continue
			}
			opts.Content = append(opts.Content, n.Content[i], n.Content[i+1])
		}
		if len(opts.Content) > 0 {
			b.options = opts
		}
		return nil
	}
	return fmt.Errorf("line %d: balancer must be a policy name or a mapping with policy", n.Line)
}

// MarshalYAML writes the policy name (options are not echoed).
func (b Balancer) MarshalYAML() (any, error) { return b.Policy, nil }

// strictDecoder decodes an options block into a struct, rejecting unknown
// fields. A missing block decodes to nothing.
func strictDecoder(n *yaml.Node) func(any) error {
	return func(v any) error {
		if n == nil {
			return nil
		}
		data, err := yaml.Marshal(n)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("(line %d) %s", n.Line, strings.ReplaceAll(cleanYAMLError(err).Error(), "\n", "; "))
		}
		return nil
	}
}

// withPaths adds the field path to yaml.v3's "line N: ..." messages, which
// name only the line.
func withPaths(data []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	paths := map[int][]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			if n.Style&yaml.FlowStyle != 0 {
				paths[n.Line] = append(paths[n.Line], path)
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			if n.Style&yaml.FlowStyle != 0 {
				paths[n.Line] = append(paths[n.Line], path)
			}
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		default:
			paths[n.Line] = append(paths[n.Line], path)
		}
	}
	walk(&root, "")
	parts := strings.Split(err.Error(), "\n")
	for i, part := range parts {
		var line int
		if _, scanErr := fmt.Sscanf(part, "line %d:", &line); scanErr != nil || len(paths[line]) == 0 {
			continue
		}
		prefix := commonPrefix(paths[line])
		if m := unknownField.FindStringSubmatch(part); m != nil {
			part = fmt.Sprintf("line %d: unknown field %q (check its spelling and indentation)", line, m[1])
		}
		if strings.HasSuffix(part, "into time.Duration") {
			part += " (want a duration such as 5s or 250ms)"
		}
		rest := strings.TrimPrefix(part, fmt.Sprintf("line %d:", line))
		parts[i] = fmt.Sprintf("line %d: %s:%s", line, prefix, rest)
	}
	return errors.New(strings.Join(parts, "\n"))
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type`)

// commonPrefix returns the longest path that prefixes every path.
func commonPrefix(paths []string) string {
	p := paths[0]
	for _, q := range paths[1:] {
		for !strings.HasPrefix(q, p) {
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				return "(document)"
			}
			p = p[:i]
		}
	}
	return p
}

// cleanYAMLError flattens yaml.v3's multi-line TypeError.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "\n"))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// prefixLines prefixes every line of err's message with prefix.
func prefixLines(prefix string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = prefix + ": " + l
	}
	return errors.New(strings.Join(lines, "\n"))
}
