// Package strictyaml decodes YAML into Go values the way Remora reads its
// configuration: strictly (an unknown or repeated field is an error) and
// without stopping at the first error. Every error names the field path of
// the bad value ("upstreams[0].retry.max_attempts"), the line and column
// where it is written, and what is wrong with it in the configuration's
// terms, never with a Go type name or a YAML tag:
//
//	line 11, column 22: upstreams[0].retry.max_attempts: "two" is not a number
//
// A Decoder also remembers where each value it decoded is written, so that
// the errors validation finds later, which name a field path only, are
// placed too (Add), and it leaves out validation errors about a value that
// did not decode: that value's own error says what is wrong.
//
// Scalars are read as go.yaml.in/yaml/v3 reads them (its Node.Decode does
// the conversion), except that a number with a fraction is not truncated
// into an integer; structs (by yaml tags, with ",inline" structs but not
// inline maps), maps, slices, pointers, durations (a Go duration string,
// or 0) and the encoding.TextUnmarshaler and yaml.Unmarshaler interfaces
// are handled here, as are anchors, aliases and merge keys. A type can
// decode itself with the Decoder's help by implementing Unmarshaler.
package strictyaml

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/internal/duration"
)

// Unmarshaler is implemented by types that decode themselves from a node
// with the Decoder's help, reporting errors through it (Errorf, Unknown)
// so that they carry paths and positions.
type Unmarshaler interface {
	UnmarshalStrict(d *Decoder, n *yaml.Node, path string)
}

// Decoder decodes nodes into values, collecting errors and the positions
// of the values it met by field path. It is not safe for concurrent use.
type Decoder struct {
	errs     Errors
	recorded map[*Error]bool
	pos      map[string]Pos
	bad      []string // paths of values that did not decode
	quiet    bool     // record no errors (Lenient)

	aliases     map[*yaml.Node]bool // aliases being expanded, to refuse cycles
	visits      int
	aliasVisits int
	aborted     bool
}

// NewDecoder returns an empty Decoder.
func NewDecoder() *Decoder {
	return &Decoder{recorded: map[*Error]bool{}, pos: map[string]Pos{}, aliases: map[*yaml.Node]bool{}}
}

// Parse parses the first YAML document of data into a node tree and
// returns its top node, nil for an empty document. A syntax error is
// returned as Errors with the line (and column, when known) of the fault.
func Parse(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{syntaxError(data, err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// Unmarshal decodes the first document of data into v, which must be a
// non-nil pointer, and returns every error found (as Errors) or nil.
func Unmarshal(data []byte, v any) error {
	n, err := Parse(data)
	if err != nil {
		return err
	}
	d := NewDecoder()
	d.Decode(n, v, "")
	return d.Err()
}

// Decode decodes n into v, a non-nil pointer; path is n's field path,
// which prefixes the paths of errors. It returns the errors found in n
// (also kept for Err), or nil. A nil n decodes to nothing.
func (d *Decoder) Decode(n *yaml.Node, v any, path string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("strictyaml: Decode needs a non-nil pointer")
	}
	if n == nil {
		return nil
	}
	from := len(d.errs)
	d.decode(n, nil, rv.Elem(), path)
	if len(d.errs) == from {
		return nil
	}
	return slices.Clone(d.errs[from:])
}

// Func returns a decode function for an options block n (nil when the
// block is absent) at path, as discovery.Factory and balancer.Factory
// take: it decodes strictly, records the errors in d, and returns them.
// key is the block's key node, if it has one, for its position.
func (d *Decoder) Func(key, n *yaml.Node, path string) func(any) error {
	return func(v any) error {
		if n == nil {
			return nil
		}
		if key != nil {
			d.note(path, key, n)
		}
		return d.Decode(n, v, path)
	}
}

// Lenient returns a decode function for the block n that fills what
// decodes, records nothing and returns nil: run after Func reported an
// error, it lets a factory validate the rest of the block.
func Lenient(n *yaml.Node) func(any) error {
	return func(v any) error {
		if n != nil {
			q := NewDecoder()
			q.quiet = true
			q.Decode(n, v, "")
		}
		return nil
	}
}

// ParseBlock runs parse, a registry's or balancer policy's Parse, on the
// options block n at path (key is the block's key node, nil when it has
// none), recording the block's decoding errors in d. When the block does
// not decode, parse runs again on what did (Lenient), so that the block's
// other errors show as well. The error joins both; pass it to Add.
func ParseBlock[T any](d *Decoder, key, n *yaml.Node, path string, parse func(func(any) error) (T, error)) (T, error) {
	failed := false
	decode := d.Func(key, n, path)
	v, err := parse(func(x any) error {
		err := decode(x)
		failed = failed || err != nil
		return err
	})
	if err == nil || !failed {
		return v, err
	}
	var zero T
	_, verr := parse(Lenient(n))
	return zero, errors.Join(err, verr)
}

// Errorf records an error about the value n at path.
func (d *Decoder) Errorf(n *yaml.Node, path, format string, args ...any) {
	d.fail(n, path, fmt.Sprintf(format, args...))
}

// Add records the errors that validation found in err for values under
// prefix. Each error, or each part of a joined error, or each line of its
// message, is "PATH: MSG" with PATH relative to prefix (see SplitPath); it
// is placed at the longest part of its path that was decoded, and left
// out when that path is, or is inside, a value that did not decode. Errors
// that d itself recorded (returned by Decode or Func) are not added again.
func (d *Decoder) Add(prefix string, err error) {
	switch x := err.(type) {
	case nil:
		return
	case *Error:
		// One of d's own is recorded already; another decoder's is placed
		// anew, since its position is in another document.
		if path := JoinPath(prefix, x.Path); !d.recorded[x] && !d.isBad(path) {
			d.add(&Error{Pos: d.Locate(path), Path: path, Msg: x.Msg})
		}
		return
	case interface{ Unwrap() []error }:
		for _, e := range x.Unwrap() {
			d.Add(prefix, e)
		}
		return
	}
	var es Errors
	if errors.As(err, &es) {
		for _, e := range es {
			d.Add(prefix, e)
		}
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		rel, msg := SplitPath(line)
		path := JoinPath(prefix, rel)
		if d.isBad(path) {
			continue
		}
		d.add(&Error{Pos: d.Locate(path), Path: path, Msg: msg})
	}
}

// AddAt records the validation error msg about the value at path, which
// may hold any character (a map key with a space): placed and left out as
// Add does.
func (d *Decoder) AddAt(path, msg string) {
	if !d.isBad(path) {
		d.add(&Error{Pos: d.Locate(path), Path: path, Msg: msg})
	}
}

// Locate returns the position of the value at path, or of the nearest
// value that holds it and was decoded; the zero Pos when there is none.
func (d *Decoder) Locate(path string) Pos {
	for p := path; ; p = parentPath(p) {
		if pos, ok := d.pos[p]; ok {
			return pos
		}
		if p == "" {
			return Pos{}
		}
	}
}

// Err returns the errors recorded, sorted by position (those without one
// last), as Errors; nil when there are none.
func (d *Decoder) Err() error {
	if len(d.errs) == 0 {
		return nil
	}
	out := slices.Clone(d.errs)
	slices.SortStableFunc(out, func(a, b *Error) int {
		switch {
		case (a.Line == 0) != (b.Line == 0):
			if a.Line == 0 {
				return 1
			}
			return -1
		case a.Line != b.Line:
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return out
}

func (d *Decoder) add(e *Error) {
	if d.quiet {
		return
	}
	d.recorded[e] = true
	d.errs = append(d.errs, e)
}

// fail records an error about the value n at path and marks path as not
// decoded.
func (d *Decoder) fail(n *yaml.Node, path, msg string) {
	d.bad = append(d.bad, path)
	d.report(n, path, msg)
}

// report records an error at n's position.
func (d *Decoder) report(n *yaml.Node, path, msg string) {
	d.add(&Error{Pos: Pos{Line: n.Line, Column: n.Column}, Path: path, Msg: msg})
}

func (d *Decoder) isBad(path string) bool {
	for _, b := range d.bad {
		if under(path, b) {
			return true
		}
	}
	return false
}

// note remembers where the value at path is written: at its key when it
// is a block collection under one (the line that names it), else at the
// value.
func (d *Decoder) note(path string, key, n *yaml.Node) {
	if _, ok := d.pos[path]; ok || d.quiet {
		return
	}
	at := n
	if key != nil && (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && n.Style&yaml.FlowStyle == 0 {
		at = key
	}
	d.pos[path] = Pos{Line: at.Line, Column: at.Column}
}

// Limits of alias expansion: a document of a few aliases that expand to
// millions of values (a "billion laughs") is refused.
const (
	maxAliasVisits = 10000
	aliasRatio     = 10
)

var (
	durationType    = reflect.TypeFor[time.Duration]()
	durationType2   = reflect.TypeFor[duration.Duration]()
	nodeType        = reflect.TypeFor[yaml.Node]()
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode decodes n into out (settable) at path; key is n's key node when
// n is a mapping's value.
func (d *Decoder) decode(n *yaml.Node, key *yaml.Node, out reflect.Value, path string) {
	if d.aborted {
		return
	}
	d.visits++
	if len(d.aliases) > 0 {
		d.aliasVisits++
		if d.aliasVisits > maxAliasVisits && d.aliasVisits > aliasRatio*(d.visits-d.aliasVisits) {
			d.aborted = true
			d.fail(n, path, "the document's aliases expand to too many values")
			return
		}
	}
	d.note(path, key, n)
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || d.aliases[n] {
			d.fail(n, path, fmt.Sprintf("alias *%s refers to a value that contains it", n.Value))
			return
		}
		d.aliases[n] = true
		d.decode(n.Alias, nil, out, path)
		delete(d.aliases, n)
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			d.decode(n.Content[0], nil, out, path)
		}
		return
	}
	t := out.Type()
	if t == nodeType {
		out.Set(reflect.ValueOf(n).Elem())
		return
	}
	if isNull(n) {
		switch out.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
			out.Set(reflect.Zero(t))
		}
		return
	}
	if out.Kind() == reflect.Pointer {
		if out.IsNil() {
			out.Set(reflect.New(t.Elem()))
		}
		d.decode(n, nil, out.Elem(), path)
		return
	}
	pt := reflect.PointerTo(t)
	switch {
	case pt.Implements(unmarshalerType):
		out.Addr().Interface().(Unmarshaler).UnmarshalStrict(d, n, path)
		return
	case t == durationType || t == durationType2:
		d.duration(n, out, path)
		return
	case pt.Implements(yamlUnmarshaler):
		if err := n.Decode(out.Addr().Interface()); err != nil {
			d.fail(n, path, yamlMessage(err))
		}
		return
	case pt.Implements(textUnmarshaler):
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, describe(n)+" is not a single value")
			return
		}
		if err := out.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.fail(n, path, err.Error())
		}
		return
	}
	switch out.Kind() {
	case reflect.Struct:
		d.structure(n, out, path)
	case reflect.Map:
		d.mapping(n, out, path)
	case reflect.Slice:
		d.sequence(n, out, path)
	case reflect.Interface:
		var v any
		if err := n.Decode(&v); err != nil {
			d.fail(n, path, yamlMessage(err))
			return
		}
		if v != nil {
			rv := reflect.ValueOf(v)
			if !rv.Type().AssignableTo(t) {
				d.fail(n, path, describe(n)+" is not allowed here")
				return
			}
			out.Set(rv)
		}
	default:
		d.scalar(n, out, path)
	}
}

// isNull reports a null scalar (~, null or nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge reports a merge key (<<).
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// Pair is one key and value of a mapping.
type Pair struct {
	// Name is the key.
	Name string
	// Key and Value are the nodes.
	Key, Value *yaml.Node
}

// Pairs returns the pairs of the mapping n at path, with the pairs of
// merge keys (<<) after its own, each name once: a key that is not a
// scalar, or that is written twice, is reported and left out.
func (d *Decoder) Pairs(n *yaml.Node, path string) []Pair {
	var pairs []Pair
	seen := map[string]*yaml.Node{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case isMerge(k):
			merges = append(merges, v)
			continue
		case k.Kind != yaml.ScalarNode:
			d.report(k, path, describe(k)+" is not a field name")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, JoinPath(path, k.Value), fmt.Sprintf("written twice (first at line %d)", first.Line))
			continue
		}
		seen[k.Value] = k
		pairs = append(pairs, Pair{Name: k.Value, Key: k, Value: v})
	}
	// Merged keys: the mapping's own win, then the first source's.
	var merge func(m *yaml.Node, depth int)
	merge = func(m *yaml.Node, depth int) {
		if depth > 8 {
			return
		}
		for m.Kind == yaml.AliasNode && m.Alias != nil {
			m = m.Alias
		}
		switch m.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(m.Content); i += 2 {
				k, v := m.Content[i], m.Content[i+1]
				if isMerge(k) {
					merge(v, depth+1)
					continue
				}
				if k.Kind != yaml.ScalarNode || seen[k.Value] != nil {
					continue
				}
				seen[k.Value] = k
				pairs = append(pairs, Pair{Name: k.Value, Key: k, Value: v})
			}
		case yaml.SequenceNode:
			for _, c := range m.Content {
				merge(c, depth+1)
			}
		default:
			d.report(m, path, "a merge (<<) takes a mapping or a list of mappings, not "+describe(m))
		}
	}
	for _, m := range merges {
		merge(m, 0)
	}
	return pairs
}

// structure decodes a mapping into a struct, by the fields' yaml names.
func (d *Decoder) structure(n *yaml.Node, out reflect.Value, path string) {
	fs := fieldsOf(out.Type())
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, describe(n)+" is not a mapping"+knownHint(fs.names))
		return
	}
	for _, p := range d.Pairs(n, path) {
		fp := JoinPath(path, p.Name)
		f, ok := fs.byName[p.Name]
		if !ok {
			d.unknown(p.Key, fp, p.Name, fs)
			continue
		}
		d.decode(p.Value, p.Key, fieldByIndex(out, f.index), fp)
	}
}

// Unknown reports the unknown field key at path, naming the likely
// intended one among known, or the known ones.
func (d *Decoder) Unknown(key *yaml.Node, path string, known []string) {
	d.fail(key, path, "unknown field"+suggest(key.Value, known, nil))
}

func (d *Decoder) unknown(key *yaml.Node, path, name string, fs *fields) {
	d.fail(key, path, "unknown field"+suggest(name, fs.names, fs))
}

// suggest returns "; did you mean X?", or where the field belongs in a
// nested block, or the known fields.
func suggest(name string, known []string, fs *fields) string {
	// The plural or the singular first (registry, registries).
	lower := strings.ToLower(name)
	for _, alt := range []string{lower + "s", strings.TrimSuffix(lower, "s"), strings.TrimSuffix(lower, "y") + "ies", strings.TrimSuffix(lower, "ies") + "y"} {
		if alt != lower && slices.Contains(known, alt) {
			return "; did you mean " + alt + "?"
		}
	}
	best, bestDist := "", math.MaxInt
	for _, k := range known {
		if dist := editDistance(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" && bestDist <= max(1, min(3, len(name)/3)) {
		return "; did you mean " + best + "?"
	}
	// Else a known name that starts as this one does (choices,
	// choice_count).
	best, bestLen := "", max(4, (2*len(name)+2)/3)-1
	for _, k := range known {
		if l := commonPrefixLen(strings.ToLower(name), k); l > bestLen {
			best, bestLen = k, l
		}
	}
	if best != "" {
		return "; did you mean " + best + "?"
	}
	if fs != nil {
		for _, parent := range fs.names {
			if sub := fs.byName[parent].sub(); sub != nil && sub.byName[name] != nil {
				return fmt.Sprintf("; it belongs under %s (%s.%s)", parent, parent, name)
			}
		}
	}
	if len(known) == 0 {
		return "; no fields are allowed here"
	}
	return "; known fields: " + strings.Join(known, ", ")
}

// commonPrefixLen is the length of the longest common prefix of a and b.
func commonPrefixLen(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// knownHint is " (fields: a, b)" for a struct's error about its shape.
func knownHint(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " of fields (" + strings.Join(names, ", ") + ")"
}

// editDistance is the optimal string alignment distance of a and b,
// byte-wise: insertions, deletions, substitutions and transpositions of
// adjacent bytes ("nmae" is one from "name").
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// mapping decodes a mapping into a map.
func (d *Decoder) mapping(n *yaml.Node, out reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, describe(n)+" is not a mapping")
		return
	}
	t := out.Type()
	if out.IsNil() {
		out.Set(reflect.MakeMap(t))
	}
	for _, p := range d.Pairs(n, path) {
		fp := JoinPath(path, p.Name)
		k := reflect.New(t.Key()).Elem()
		d.decode(p.Key, nil, k, fp)
		if d.isBad(fp) {
			continue
		}
		switch k.Kind() {
		case reflect.Map, reflect.Slice, reflect.Func:
			continue // not hashable; decode reported it
		}
		v := reflect.New(t.Elem()).Elem()
		d.decode(p.Value, p.Key, v, fp)
		out.SetMapIndex(k, v)
	}
}

// sequence decodes a list into a slice.
func (d *Decoder) sequence(n *yaml.Node, out reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		msg := describe(n) + " is not a list"
		switch n.Kind {
		case yaml.ScalarNode:
			msg += fmt.Sprintf("; write [%s] for a list of one", n.Value)
		case yaml.MappingNode:
			msg += `; start each item with "- "`
		}
		d.fail(n, path, msg)
		return
	}
	s := reflect.MakeSlice(out.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.decode(c, nil, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	out.Set(s)
}

// duration decodes a Go duration string ("5s"), or a bare 0, which is
// zero in every unit.
func (d *Decoder) duration(n *yaml.Node, out reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, describe(n)+" is not a duration")
		return
	}
	if n.ShortTag() == "!!int" && n.Value == "0" {
		out.SetInt(0)
		return
	}
	if n.ShortTag() != "!!str" {
		d.fail(n, path, describe(n)+" is not a duration; write it with a unit, such as 5s or 250ms")
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(n, path, describe(n)+" is not a duration; write a number with a unit, such as 5s or 250ms")
		return
	}
	out.SetInt(int64(v))
}

// scalar decodes a scalar into a string, bool or number, as yaml does.
func (d *Decoder) scalar(n *yaml.Node, out reflect.Value, path string) {
	want := wantOf(out.Type())
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, describe(n)+" is not "+want)
		return
	}
	if isInt(out.Kind()) && n.ShortTag() == "!!float" {
		// yaml would truncate 1.5 to 1.
		if f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64); err != nil || f != math.Trunc(f) {
			d.fail(n, path, describe(n)+" is not a whole number")
			return
		}
	}
	v := reflect.New(out.Type())
	if err := n.Decode(v.Interface()); err != nil {
		d.fail(n, path, scalarMessage(n, out.Type(), want))
		return
	}
	out.Set(v.Elem())
}

// wantOf names what a value of type t is in the configuration's terms.
func wantOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a single value"
}

// scalarMessage says why the scalar n is not a value of type t.
func scalarMessage(n *yaml.Node, t reflect.Type, want string) string {
	what := describe(n)
	tag := n.ShortTag()
	if isInt(t.Kind()) && (tag == "!!int" || tag == "!!float") {
		lo, hi := intRange(t)
		switch {
		case t.Bits() < 64:
			return fmt.Sprintf("%s is out of range; want %s to %s", what, lo, hi)
		case strings.HasPrefix(n.Value, "-") && lo == "0":
			return what + " is negative"
		case strings.HasPrefix(n.Value, "-"):
			return what + " is too small"
		}
		return what + " is too large"
	}
	if tag == "!!str" && want == "a number" {
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
			return what + " is quoted, so it is a string, not a number; remove the quotes"
		}
	}
	return what + " is not " + want
}

// isInt reports the integer kinds.
func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// intRange returns the smallest and largest value of an integer type.
func intRange(t reflect.Type) (lo, hi string) {
	bits := t.Bits()
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "0", strconv.FormatUint(math.MaxUint64>>(64-bits), 10)
	}
	return strconv.FormatInt(math.MinInt64>>(64-bits), 10), strconv.FormatInt(math.MaxInt64>>(64-bits), 10)
}

// describe shows a node in a message: a string quoted, another scalar as
// written, and "a list" or "a mapping" for a collection.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "*" + n.Value
	}
	v := n.Value
	if utf8.RuneCountInString(v) > 40 {
		r := []rune(v)
		v = string(r[:37]) + "..."
	}
	switch n.ShortTag() {
	case "!!null":
		return "an empty value"
	case "!!str", "!!binary", "!!timestamp":
		return strconv.Quote(v)
	}
	return v
}

// yamlMessage is a yaml error's message without its "yaml: " prefix,
// line numbers and Go types, for the rare value yaml decodes itself.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return "not a valid value here"
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// fields are a struct type's fields by yaml name, inlined fields included.
type fields struct {
	byName map[string]*field
	names  []string // in declaration order
}

type field struct {
	index []int
	typ   reflect.Type
}

var fieldCache sync.Map // reflect.Type → *fields

// fieldsOf returns t's fields by yaml name, as yaml names them: the tag's
// name, else the Go name in lower case; "-" and unexported fields are
// left out; ",inline" structs contribute their fields.
func fieldsOf(t reflect.Type) *fields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fields)
	}
	fs := &fields{byName: map[string]*field{}}
	var walk func(t reflect.Type, index []int, depth int)
	walk = func(t reflect.Type, index []int, depth int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			name, flags, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(index), i)
			if slices.Contains(strings.Split(flags, ","), "inline") {
				ft := sf.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct && depth < 8 {
					walk(ft, idx, depth+1)
				}
				continue
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(sf.Name)
			}
			if _, dup := fs.byName[name]; dup {
				continue
			}
			fs.byName[name] = &field{index: idx, typ: sf.Type}
			fs.names = append(fs.names, name)
		}
	}
	walk(t, nil, 0)
	actual, _ := fieldCache.LoadOrStore(t, fs)
	return actual.(*fields)
}

// sub returns the fields of f's value when it is a mapping of fields (a
// struct, or a pointer to one, that decodes field by field), else nil.
func (f *field) sub() *fields {
	t := f.typ
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	pt := reflect.PointerTo(t)
	if t.Kind() != reflect.Struct || t == durationType || pt.Implements(unmarshalerType) || pt.Implements(yamlUnmarshaler) || pt.Implements(textUnmarshaler) {
		return nil
	}
	return fieldsOf(t)
}

// fieldByIndex returns the field at index, allocating the pointers to
// inlined structs on the way.
func fieldByIndex(v reflect.Value, index []int) reflect.Value {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v
}
