package main

// Every registry adapter and balancing policy Remora ships; adding one is one
// package plus one line here.
import (
	_ "github.com/remora-mesh/remora/discovery/consul"
	_ "github.com/remora-mesh/remora/discovery/dns"
	_ "github.com/remora-mesh/remora/discovery/etcd"
	_ "github.com/remora-mesh/remora/discovery/nacos"
	_ "github.com/remora-mesh/remora/discovery/static"
	_ "github.com/remora-mesh/remora/pkg/balancer/all"
)
