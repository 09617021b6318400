//go:build !linux

package testproc

import "os/exec"

// killWithParent is a no-op here: the harnesses' Close (from Start's
// cleanup or Main) stops the servers.
func killWithParent(*exec.Cmd) {}
