// Package all registers every load-balancing policy. Import it for its side
// effect where policies are looked up by name.
package all

import (
	_ "github.com/remora-mesh/remora/pkg/balancer/ewma"               // ewma
	_ "github.com/remora-mesh/remora/pkg/balancer/leastrequest"       // least_request
	_ "github.com/remora-mesh/remora/pkg/balancer/maglev"             // maglev
	_ "github.com/remora-mesh/remora/pkg/balancer/random"             // random
	_ "github.com/remora-mesh/remora/pkg/balancer/ringhash"           // ring_hash
	_ "github.com/remora-mesh/remora/pkg/balancer/roundrobin"         // round_robin
	_ "github.com/remora-mesh/remora/pkg/balancer/weightedroundrobin" // weighted_round_robin
)
