package discoverytest

import (
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/strictyaml"
)

// Parse runs the factory registered as typ on the options block src as
// Remora's config loader does (strictyaml.ParseBlock): decoded strictly (an
// unknown field is an error) and filling nothing when src is empty; every
// error, the block's decoding ones and the factory's, on a line of its own
// with its line in src. It fails t if typ is not registered, or if src is
// not YAML.
func Parse(t testing.TB, typ, src string) (discovery.Options, error) {
	t.Helper()
	f, ok := discovery.Lookup(typ)
	if !ok {
		t.Fatalf("type %q not registered; have %v", typ, discovery.Types())
	}
	n, err := strictyaml.Parse([]byte(src))
	if err != nil {
		t.Fatalf("options %q: %v", src, err)
	}
	d := strictyaml.NewDecoder()
	opts, err := strictyaml.ParseBlock(d, nil, n, "", f.Parse)
	d.Add("", err)
	return opts, d.Err()
}
