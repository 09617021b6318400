package main

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/health"
)

// effectiveConfig renders the running configuration for GET /config (see
// renderConfig).
func (a *app) effectiveConfig(format string) ([]byte, error) {
	return renderConfig(a.config(), format)
}

// renderConfig writes cfg in the schema's own form, as remora.yaml is
// written: format "yaml", or "json" with the same fields in the same
// order. It is a file that `remora validate` accepts and that loads into
// the same effective configuration (a fixed point: rendering what it
// loads gives the same text).
//
//   - Field names are the YAML keys; durations are Go duration strings
//     (connect_timeout: 2s); the defaults Validate filled in are shown.
//   - Every block that is set is shown with all its fields, zero values
//     included (drain_delay: 0s); a block that is not set (a nil pointer:
//     no tls:, no register:, no canary: block, which means the default
//     rule) is left out, as are lists and maps that were never written.
//   - A registry's options are the adapter's parsed options, defaults
//     filled; a balancer's options are as written.
//   - Secrets are redacted by type: a secret.Secret (admin.token, the
//     registries' passwords and tokens) is written as "[redacted]", a
//     value validate accepts, so the file loads with that placeholder in
//     place of the secret; a token read from token_file is not written,
//     the file is. Header values that carry credentials in the header
//     maps (health probes' headers, request_headers and response_headers
//     add/set) are redacted too: see credentialHeader.
//   - Relative paths are as written: relative to the directory of the
//     running configuration file.
func renderConfig(cfg *config.Config, format string) ([]byte, error) {
	n := encodeValue(reflect.ValueOf(cfg).Elem())
	switch format {
	case "yaml":
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(n); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case "json":
		v, err := jsonOf(n)
		if err != nil {
			return nil, err
		}
		out, err := json.MarshalIndent(v, "", "  ")
		return append(out, '\n'), err
	}
	return nil, fmt.Errorf("format %q: want yaml or json", format)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	secretType   = reflect.TypeFor[secret.Secret]()
	// adapterDurationType is the registry adapters' duration.
	adapterDurationType = reflect.TypeFor[duration.Duration]()
	registryType        = reflect.TypeFor[config.Registry]()
	marshalerType       = reflect.TypeFor[yaml.Marshaler]()
	textType            = reflect.TypeFor[encoding.TextMarshaler]()
	// headerMaps are the fields (by YAML key) of the schema's types that
	// are maps of HTTP header name to value, whose credentials are
	// redacted.
	headerMaps = map[reflect.Type][]string{
		reflect.TypeFor[health.Active]():      {"headers"},
		reflect.TypeFor[config.HeaderRules](): {"add", "set"},
	}
)

// credentialHeader reports whether a header's value is a credential and is
// redacted in /config: Authorization, Proxy-Authorization, Cookie and
// Set-Cookie, and any header whose name has auth, token, key, secret,
// password, session, signature or credential in it (X-Api-Key,
// X-Auth-Token, X-Vault-Token...).
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	for _, s := range []string{"auth", "token", "key", "secret", "password", "passwd", "session", "signature", "credential"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// formatDuration writes d as a Go duration without the zero units
// time.Duration's String leaves at the end: 5m, not 5m0s; 1h, not 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

func str(s string) *yaml.Node { return scalar("!!str", s) }

// encodeValue renders v as a YAML node, or nil when it is left out (a nil
// pointer, map, slice or interface).
func encodeValue(v reflect.Value) *yaml.Node {
	t := v.Type()
	switch {
	case t == secretType:
		if v.String() == "" {
			return str("")
		}
		return str(secret.Redacted)
	case t == durationType || t == adapterDurationType:
		return str(formatDuration(time.Duration(v.Int())))
	case t == registryType:
		return encodeRegistry(v.Interface().(config.Registry))
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return encodeValue(v.Elem()) // the schema's marshalers have value receivers
	case reflect.Map, reflect.Slice:
		if v.IsNil() {
			return nil
		}
	}
	if t.Implements(marshalerType) {
		out, err := v.Interface().(yaml.Marshaler).MarshalYAML()
		if err != nil {
			return str("error: " + err.Error())
		}
		if n, ok := out.(*yaml.Node); ok {
			return plain(n)
		}
		if out == nil {
			return nil
		}
		return encodeValue(reflect.ValueOf(out))
	}
	if t.Implements(textType) {
		b, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return str("error: " + err.Error())
		}
		return str(string(b))
	}
	switch v.Kind() {
	case reflect.Struct:
		return encodeStruct(v)
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range keys {
			val := encodeValue(v.MapIndex(k))
			if val == nil {
				val = scalar("!!null", "null")
			}
			n.Content = append(n.Content, str(fmt.Sprint(k)), val)
		}
		return n
	case reflect.Slice, reflect.Array:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := range v.Len() {
			val := encodeValue(v.Index(i))
			if val == nil {
				val = scalar("!!null", "null")
			}
			n.Content = append(n.Content, val)
		}
		return n
	case reflect.String:
		return str(v.String())
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		f := strconv.FormatFloat(v.Float(), 'g', -1, 64)
		if _, err := strconv.ParseInt(f, 10, 64); err == nil {
			return scalar("!!int", f) // 50, not !!float 50: a float field takes it
		}
		return scalar("!!float", f)
	}
	return str(fmt.Sprint(v.Interface()))
}

// encodeStruct renders a struct's exported fields under their YAML keys
// (inline fields merged, "-" left out, omitempty honoured), redacting the
// credentials of its header maps.
func encodeStruct(v reflect.Value) *yaml.Node {
	t := v.Type()
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fv := v.Field(i)
		if strings.Contains(","+opts+",", ",inline,") {
			if in := encodeValue(fv); in != nil && in.Kind == yaml.MappingNode {
				n.Content = append(n.Content, in.Content...)
			}
			continue
		}
		if strings.Contains(","+opts+",", ",omitempty,") && fv.IsZero() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // as the YAML decoder does
		}
		val := encodeValue(fv)
		if val == nil {
			continue
		}
		if slices.Contains(headerMaps[t], name) && val.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(val.Content); j += 2 {
				if credentialHeader(val.Content[j].Value) && val.Content[j+1].Value != "" {
					val.Content[j+1] = str(secret.Redacted)
				}
			}
		}
		n.Content = append(n.Content, str(name), val)
	}
	return n
}

// encodeRegistry renders a registry as it is written: name, type, and the
// adapter's parsed options under the type's key.
func encodeRegistry(r config.Registry) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{str("name"), str(r.Name), str("type"), str(r.Type)}}
	if r.Options != nil {
		if opts := encodeValue(reflect.ValueOf(r.Options)); opts != nil {
			n.Content = append(n.Content, str(r.Type), opts)
		}
	}
	return n
}

// plain returns a copy of a node as written in a file (a balancer's
// options) without its comments, anchors, styles and positions.
func plain(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return plain(n.Alias)
	}
	c := &yaml.Node{Kind: n.Kind, Tag: n.ShortTag(), Value: n.Value}
	for _, ch := range n.Content {
		c.Content = append(c.Content, plain(ch))
	}
	return c
}

// jsonOf converts a rendered node to values that encoding/json writes in
// the node's order.
func jsonOf(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return jsonOf(n.Content[0])
	case yaml.MappingNode:
		m := make(orderedMap, 0, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := jsonOf(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m = append(m, keyValue{n.Content[i].Value, v})
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := jsonOf(c)
			if err != nil {
				return nil, err
			}
			s[i] = v
		}
		return s, nil
	case yaml.AliasNode:
		return jsonOf(n.Alias)
	}
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		return n.Value == "true", nil
	case "!!int":
		if i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err == nil {
			return u, nil
		}
	case "!!float":
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !isSpecial(f) {
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
		}
	}
	return n.Value, nil
}

func isSpecial(f float64) bool { return f != f || f > 1e308 || f < -1e308 }

// orderedMap is a JSON object that keeps its keys' order.
type orderedMap []keyValue

type keyValue struct {
	key   string
	value any
}

// MarshalJSON writes the object in order.
func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(kv.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(kv.value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
