package main

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/config"
)

// An edit elsewhere in the file moves an upstream's lines but must not
// rebuild it on reload; a changed option must.
func TestSameUpstreamIgnoresPositions(t *testing.T) {
	parse := func(yml string) config.Upstream {
		t.Helper()
		cfg, err := config.Parse([]byte(yml), ".")
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Upstreams[0]
	}
	const body = `registries: [{name: s, type: static}]
upstreams:
  - name: users
    balancer: {policy: least_request, choice_count: 3}
    retry: {max_attempts: 3}
`
	a := parse(body)
	moved := parse("# a comment\n\n" + body)
	if !sameUpstream(a, moved) {
		t.Fatal("an upstream whose lines moved counts as changed")
	}
	changed := parse(`registries: [{name: s, type: static}]
upstreams:
  - name: users
    balancer: {policy: least_request, choice_count: 4}
    retry: {max_attempts: 3}
`)
	if sameUpstream(a, changed) {
		t.Fatal("a changed balancer option counts as unchanged")
	}
	retry := parse(`registries: [{name: s, type: static}]
upstreams:
  - name: users
    balancer: {policy: least_request, choice_count: 3}
    retry: {max_attempts: 2}
`)
	if sameUpstream(a, retry) {
		t.Fatal("a changed retry policy counts as unchanged")
	}
}
