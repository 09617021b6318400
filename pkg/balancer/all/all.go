// Package all registers every load-balancing policy. Import it for its side
// effect where policies are looked up by name.
package all

import (
	_ "github.com/remora-mesh/remora/pkg/balancer/roundrobin" // round_robin
)
