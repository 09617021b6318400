//go:build !linux

package consul

import "os/exec"

// killWithParent is a no-op here: TestMain stops the agents.
func killWithParent(*exec.Cmd) {}
