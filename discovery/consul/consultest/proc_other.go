//go:build !linux

package consultest

import "os/exec"

// killWithParent is a no-op here: Close (from Start's cleanup or Main)
// stops the agents.
func killWithParent(*exec.Cmd) {}
