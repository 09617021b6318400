//go:build !linux

package nacostest

import "os/exec"

// killWithParent is a no-op here: Close (from Start's cleanup or Main)
// stops the servers.
func killWithParent(*exec.Cmd) {}
