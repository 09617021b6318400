package discovery

import "testing"

func TestInstanceEqual(t *testing.T) {
	meta := map[string]string{"version": "v1", "zone": "a"}
	a := Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Metadata: meta}
	same := func(mod func(*Instance)) Instance {
		b := a
		mod(&b)
		return b
	}
	for _, c := range []struct {
		name string
		b    Instance
		want bool
	}{
		{"itself", a, true},
		{"equal metadata in another map", same(func(b *Instance) { b.Metadata = map[string]string{"zone": "a", "version": "v1"} }), true},
		{"a label changed", same(func(b *Instance) { b.Metadata = map[string]string{"zone": "a", "version": "v2"} }), false},
		{"a label more", same(func(b *Instance) { b.Metadata = map[string]string{"zone": "a", "version": "v1", "x": ""} }), false},
		{"no metadata", same(func(b *Instance) { b.Metadata = nil }), false},
		{"weight", same(func(b *Instance) { b.Weight = 2 }), false},
		{"port", same(func(b *Instance) { b.Port = 81 }), false},
		{"healthy", same(func(b *Instance) { b.Healthy = false }), false},
	} {
		if got := a.Equal(c.b); got != c.want || c.b.Equal(a) != c.want {
			t.Errorf("%s: Equal = %v, want %v", c.name, got, c.want)
		}
	}
	empty := Instance{ID: "e", Metadata: map[string]string{}}
	if !empty.Equal(Instance{ID: "e"}) {
		t.Error("empty and nil metadata differ")
	}
	if n := testing.AllocsPerRun(100, func() { _ = a.Equal(a) }); n != 0 {
		t.Errorf("Equal allocates %v times", n)
	}
}
