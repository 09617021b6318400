package main

// The Kubernetes registry adapter (type: kubernetes). It lives beside
// adapters.go, in a file of its own.
import _ "github.com/remora-mesh/remora/discovery/kubernetes"
