package balancertest

import (
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/strictyaml"
	"github.com/remora-mesh/remora/pkg/balancer"
)

// YAML returns a decode function for Factory.Parse that reads the options
// block src as the config loader does (strictyaml): strict (unknown fields
// rejected), with errors that name the field path and line within src,
// and filling nothing when src is empty.
func YAML(src string) func(any) error {
	return func(v any) error {
		n, err := strictyaml.Parse([]byte(src))
		if err != nil {
			return err
		}
		return strictyaml.NewDecoder().Func(nil, n, "")(v)
	}
}

// ParseCase is one row of a Factory.Parse table test.
type ParseCase struct {
	Name    string
	Options string // YAML options block
	WantErr string // substring of the error; "" for success
}

// RunParse runs table tests of f.Parse; for every success it builds a
// picker over a few nodes and picks once.
func RunParse(t *testing.T, f balancer.Factory, cases []ParseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			b, err := f.Parse(YAML(tc.Options))
			if tc.WantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.WantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tc.Options, err, tc.WantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.Options, err)
			}
			if b.Name() != f.Name() {
				t.Fatalf("builder name %q, factory %q", b.Name(), f.Name())
			}
			if n := b.Build(Uniform(3)).Pick(Requests(1)[0]); n == nil {
				t.Fatal("nil pick over 3 nodes")
			}
			if n := b.Build(nil).Pick(balancer.Info{}); n != nil {
				t.Fatal("pick from an empty picker")
			}
		})
	}
}

// FuzzParse fuzzes f.Parse with arbitrary YAML options: it must not panic,
// and a builder it accepts must build and pick.
func FuzzParse(f *testing.F, fac balancer.Factory, seeds ...string) {
	f.Add("")
	for _, s := range seeds {
		f.Add(s)
	}
	infos := Requests(2)
	f.Fuzz(func(t *testing.T, src string) {
		b, err := fac.Parse(YAML(src))
		if err != nil {
			return
		}
		ws := []uint32{1, 3, 2}
		p := b.Build(Nodes(ws...))
		for _, info := range infos {
			if p.Pick(info) == nil {
				t.Fatalf("options %q: nil pick", src)
			}
		}
	})
}

// Registered fails the test unless name is registered with balancer.
func Registered(t testing.TB, name string) balancer.Factory {
	t.Helper()
	f, ok := balancer.Lookup(name)
	if !ok {
		t.Fatalf("policy %q is not registered", name)
	}
	return f
}
