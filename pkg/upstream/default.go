package upstream

import (
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/roundrobin"
)

func defaultBuilder() balancer.Builder { return roundrobin.Builder{} }
