package discoverytest

import (
	"errors"
	"io"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery"
)

// Parse runs the factory registered as typ on the options block src,
// decoded as Remora's config loader decodes it: strictly (an unknown field
// is an error), and filling nothing when src is empty. It fails t if typ is
// not registered.
func Parse(t testing.TB, typ, src string) (discovery.Options, error) {
	t.Helper()
	f, ok := discovery.Lookup(typ)
	if !ok {
		t.Fatalf("type %q not registered; have %v", typ, discovery.Types())
	}
	return f.Parse(func(v any) error {
		dec := yaml.NewDecoder(strings.NewReader(src))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	})
}
