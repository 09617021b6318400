package strictyaml_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/secret"
	"github.com/remora-mesh/remora/internal/strictyaml"
)

type retry struct {
	MaxAttempts int      `yaml:"max_attempts"`
	Statuses    []int    `yaml:"statuses"`
	Budget      *float64 `yaml:"budget"`
}

type policy struct {
	Retry   retry         `yaml:"retry"`
	PerTry  time.Duration `yaml:"per_try"`
	Timeout duration.Duration
}

type upstream struct {
	Name     string            `yaml:"name"`
	Weight   uint32            `yaml:"weight"`
	Small    int8              `yaml:"small"`
	Enabled  bool              `yaml:"enabled"`
	Password secret.Secret     `yaml:"password"`
	Labels   map[string]string `yaml:"labels"`
	Hosts    []string          `yaml:"hosts"`
	Extra    any               `yaml:"extra"`
	Skipped  string            `yaml:"-"`
	policy   `yaml:",inline"`
}

type doc struct {
	Upstreams []upstream `yaml:"upstreams"`
	Count     *int       `yaml:"count"`
}

func TestDecodes(t *testing.T) {
	var d doc
	err := strictyaml.Unmarshal([]byte(`
defaults: &defaults {weight: 3, labels: {zone: a}}
upstreams:
  - <<: *defaults
    name: a
    enabled: yes
    password: hunter2
    retry: {max_attempts: 2, statuses: [502, 503], budget: 0.5}
    per_try: 250ms
    timeout: 1m
    hosts: [h1, h2]
    extra: {any: [thing]}
  - name: b
    weight: 0x10
count: 7
`), &struct {
		doc      `yaml:",inline"`
		Defaults upstream `yaml:"defaults"`
	}{})
	if err != nil {
		t.Fatal(err)
	}
	if err := strictyaml.Unmarshal([]byte(`
upstreams:
  - name: a
    enabled: yes
    password: hunter2
    retry: {max_attempts: 2, statuses: [502, 503], budget: 0.5}
    per_try: 250ms
    timeout: 1m
    labels: {zone: a}
    hosts: [h1, h2]
  - name: b
    weight: 0x10
  - name: zero
    per_try: 0
    timeout: 0
count: 7
`), &d); err != nil {
		t.Fatal(err)
	}
	a, b := d.Upstreams[0], d.Upstreams[1]
	if len(d.Upstreams) != 3 {
		t.Fatalf("%+v", d)
	}
	if a.Name != "a" || !a.Enabled || a.Password != "hunter2" || a.Retry.MaxAttempts != 2 || len(a.Retry.Statuses) != 2 || *a.Retry.Budget != 0.5 ||
		a.PerTry != 250*time.Millisecond || time.Duration(a.Timeout) != time.Minute || a.Labels["zone"] != "a" || len(a.Hosts) != 2 ||
		b.Weight != 16 || *d.Count != 7 || d.Upstreams[2].PerTry != 0 || d.Upstreams[2].Timeout != 0 {
		t.Fatalf("%+v", d)
	}
}

func TestMergeKeys(t *testing.T) {
	var v struct {
		Base upstream   `yaml:"base"`
		Ups  []upstream `yaml:"ups"`
	}
	err := strictyaml.Unmarshal([]byte(`
base: &b {name: base, weight: 3, labels: {zone: a}}
ups:
  - <<: *b
    name: mine
`), &v)
	if err != nil {
		t.Fatal(err)
	}
	if u := v.Ups[0]; u.Name != "mine" || u.Weight != 3 || u.Labels["zone"] != "a" {
		t.Fatalf("%+v", u)
	}
}

// Every error names the path, the line and column of the bad value, and
// what is wrong in plain words; decoding goes on after each.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"wrong scalar types", `
upstreams:
  - name: a
    retry: {max_attempts: "two", statuses: [502, x]}
    weight: -1
    small: 300
    enabled: maybe
    per_try: 5
    timeout: soon
  - name: [b]
count: 1.5
`, []string{
			`line 4, column 27: upstreams[0].retry.max_attempts: "two" is not a number`,
			`line 4, column 50: upstreams[0].retry.statuses[1]: "x" is not a number`,
			`line 5, column 13: upstreams[0].weight: -1 is out of range; want 0 to 4294967295`,
			`line 6, column 12: upstreams[0].small: 300 is out of range; want -128 to 127`,
			`line 7, column 14: upstreams[0].enabled: "maybe" is not true or false`,
			`line 8, column 14: upstreams[0].per_try: 5 is not a duration; write it with a unit, such as 5s or 250ms`,
			`line 9, column 14: upstreams[0].timeout: "soon" is not a duration; write a number with a unit, such as 5s or 250ms`,
			`line 10, column 11: upstreams[1].name: a list is not a string`,
			`line 11, column 8: count: 1.5 is not a whole number`,
		}},
		{"quoted number", `upstreams: [{weight: "5"}]`, []string{
			`line 1, column 22: upstreams[0].weight: "5" is quoted, so it is a string, not a number; remove the quotes`}},
		{"shapes", `
upstreams:
  name: a
`, []string{`line 3, column 3: upstreams: a mapping is not a list`}},
		{"scalar for a list", `upstreams: [{hosts: h1}]`, []string{
			`line 1, column 21: upstreams[0].hosts: "h1" is not a list; write [h1] for a list of one`}},
		{"scalar for a mapping", `upstreams: [{retry: 3}]`, []string{
			`line 1, column 21: upstreams[0].retry: 3 is not a mapping of fields (max_attempts, statuses, budget)`}},
		{"unknown fields", `
upstream: []
upstreams:
  - nmae: a
    max_attempts: 3
    bogus: 1
    retry: {statuses: [1], budgte: 1}
`, []string{
			`line 2, column 1: upstream: unknown field; did you mean upstreams?`,
			`line 4, column 5: upstreams[0].nmae: unknown field; did you mean name?`,
			`line 5, column 5: upstreams[0].max_attempts: unknown field; it belongs under retry (retry.max_attempts)`,
			`line 6, column 5: upstreams[0].bogus: unknown field; known fields: name, weight, small, enabled, password, labels, hosts, extra, retry, per_try, timeout`,
			`line 7, column 28: upstreams[0].retry.budgte: unknown field; did you mean budget?`,
		}},
		{"written twice", `
upstreams:
  - name: a
    name: b
    labels: {x: 1, x: 2}
`, []string{
			`line 4, column 5: upstreams[0].name: written twice (first at line 3)`,
			`line 5, column 20: upstreams[0].labels.x: written twice (first at line 5)`,
		}},
		{"syntax", "upstreams:\n  - name: a\n\tweight: 1\n", []string{"line 3: not valid YAML: found a tab character that violates indentation (in the text that starts on line 2)"}},
		{"alias cycle or bomb", `
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
`, []string{"the document's aliases expand to too many values"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			v := any(&d)
			if tc.name == "alias cycle or bomb" {
				v = &struct {
					doc `yaml:",inline"`
					A   []string           `yaml:"a"`
					B   [][]string         `yaml:"b"`
					C   [][][]string       `yaml:"c"`
					D   [][][][]string     `yaml:"d"`
					E   [][][][][]string   `yaml:"e"`
					F   [][][][][][]string `yaml:"f"`
				}{}
			}
			err := strictyaml.Unmarshal([]byte(tc.yaml), v)
			if err == nil {
				t.Fatal("no error")
			}
			got := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("error\n%s\nlacks\n%s", got, w)
				}
			}
			if n := strings.Count(got, "\n") + 1; n != len(tc.want) {
				t.Errorf("%d errors; want %d:\n%s", n, len(tc.want), got)
			}
		})
	}
}

// Add places validation errors at the value their path names (or the
// nearest one that holds it), leaves out those about a value that did not
// decode, and does not repeat the decoder's own.
func TestAdd(t *testing.T) {
	n, err := strictyaml.Parse([]byte(`
upstreams:
  - name: a
    retry:
      max_attempts: two
    hosts: [h1]
`))
	if err != nil {
		t.Fatal(err)
	}
	d := strictyaml.NewDecoder()
	var v doc
	decodeErr := d.Decode(n, &v, "")
	d.Add("", errors.Join(
		decodeErr, // the decoder's own, already recorded
		errors.New("upstreams[0].retry.max_attempts: 0 is too few"), // about a value that did not decode
		errors.New("upstreams[0].name: \"a\" is taken"),
		errors.New("upstreams[0].retry: retries need a budget"),
		errors.New("upstreams[0].weight: missing"),
		errors.New("no path here: at all"),
	))
	d.Add("upstreams[0].hosts", errors.New("[0]: unknown host\n[1]: missing"))
	want := strings.Join([]string{
		`line 2, column 1: no path here: at all`,
		`line 3, column 5: upstreams[0].weight: missing`,
		`line 3, column 11: upstreams[0].name: "a" is taken`,
		`line 4, column 5: upstreams[0].retry: retries need a budget`,
		`line 5, column 21: upstreams[0].retry.max_attempts: "two" is not a number`,
		`line 6, column 12: upstreams[0].hosts[1]: missing`,
		`line 6, column 13: upstreams[0].hosts[0]: unknown host`,
	}, "\n")
	if got := d.Err().Error(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// Func decodes an options block as a factory asks, with the block's path
// and positions in the whole document; Lenient fills what decodes.
func TestFuncAndLenient(t *testing.T) {
	n, err := strictyaml.Parse([]byte("name: x\nopts:\n  max_attempts: 3\n  statuses: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	key, block := n.Content[2], n.Content[3]
	d := strictyaml.NewDecoder()
	var r retry
	err = d.Func(key, block, "registries[0].opts")(&r)
	if err == nil || err.Error() != `line 4, column 14: registries[0].opts.statuses[0]: "a" is not a number` {
		t.Fatalf("Func: %v", err)
	}
	var lenient retry
	if err := strictyaml.Lenient(block)(&lenient); err != nil || lenient.MaxAttempts != 3 {
		t.Fatalf("Lenient: %v, %+v", err, lenient)
	}
	if got := d.Locate("registries[0].opts.endpoints"); got != (strictyaml.Pos{Line: 2, Column: 1}) {
		t.Fatalf("Locate = %+v", got)
	}
}

func TestInFile(t *testing.T) {
	err := strictyaml.InFile("remora.yaml", strictyaml.Errors{{Pos: strictyaml.Pos{Line: 2, Column: 3}, Path: "a", Msg: "bad"}, {Path: "b", Msg: "worse"}})
	if got := err.Error(); got != "remora.yaml: line 2, column 3: a: bad\nremora.yaml: b: worse" {
		t.Fatal(got)
	}
	var es strictyaml.Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].Line != 2 {
		t.Fatalf("%#v", err)
	}
	if got := strictyaml.InFile("f", errors.New("x\ny")).Error(); got != "f: x\nf: y" {
		t.Fatal(got)
	}
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct{ in, path, msg string }{
		{"a.b[0]: bad", "a.b[0]", "bad"},
		{`"x": bad`, "", `"x": bad`},
		{"hash_on is required: say", "", "hash_on is required: say"},
		{"no colon", "", "no colon"},
		{"request_headers/response_headers: no", "request_headers/response_headers", "no"},
	} {
		if p, m := strictyaml.SplitPath(tc.in); p != tc.path || m != tc.msg {
			t.Errorf("SplitPath(%q) = %q, %q", tc.in, p, m)
		}
	}
}

// FuzzDecode decodes arbitrary YAML into a struct of every kind of field:
// it must not panic, and every error must have a line inside the document
// (or none) and say nothing in Go's or YAML's own terms.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"upstreams: [{name: a, retry: {max_attempts: two}, per_try: 5}]",
		"upstreams:\n  - name: a\n    labels: {x: [1]}\n    hosts: h\ncount: x\n",
		"a: &a [*a]\nupstreams: *a\n",
		"upstreams: [{<<: [{name: a}, {weight: 2}], <<: {small: 3}}]",
		"? [a]\n: b\n",
		"upstreams: [{extra: !!binary aGk=, password: !!int 5}]",
		"upstreams:\n  - name: x\n   registry: y\n",
		"a: &a 1\n# *b\nb: [*a, *b]\n",
		"a: 1\r\nb: \xff\n",
		"a: [1,\n  2\nb: 'x\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var d doc
		err := strictyaml.Unmarshal([]byte(src), &d)
		if err == nil {
			return
		}
		var es strictyaml.Errors
		if !errors.As(err, &es) {
			t.Fatalf("%T: %v", err, err)
		}
		// YAML breaks lines at CR, LF and CRLF alike (as editors do).
		lines := strings.Count(strings.ReplaceAll(src, "\r\n", "\n"), "\n") + strings.Count(strings.ReplaceAll(src, "\r\n", ""), "\r") + 2
		for _, e := range es {
			if e.Line < 0 || e.Line > lines {
				t.Fatalf("line %d of %d: %v", e.Line, lines, e)
			}
			// A syntax error names a line that is there.
			if strings.HasPrefix(e.Msg, "not valid YAML") && e.Line > lines-1 {
				t.Fatalf("line %d of %d: %v", e.Line, lines-1, e)
			}
			for _, bad := range []string{"!!", "cannot unmarshal", "not found in type", "int64", "uint32", "time.Duration", "strictyaml", "reflect"} {
				if strings.Contains(e.Msg, bad) && !strings.Contains(src, bad) {
					t.Fatalf("message %q says %q", e.Msg, bad)
				}
			}
		}
	})
}

var _ yaml.Unmarshaler = (*selfDecoding)(nil)

// selfDecoding is a foreign yaml.Unmarshaler: decoded by yaml itself.
type selfDecoding struct{ v string }

func (s *selfDecoding) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "bad" {
		return errors.New("bad value")
	}
	s.v = n.Value
	return nil
}

func TestForeignUnmarshaler(t *testing.T) {
	var v struct {
		A selfDecoding `yaml:"a"`
		B selfDecoding `yaml:"b"`
	}
	err := strictyaml.Unmarshal([]byte("a: fine\nb: bad\n"), &v)
	if v.A.v != "fine" || err == nil || err.Error() != "line 2, column 4: b: bad value" {
		t.Fatalf("%+v %v", v, err)
	}
}
