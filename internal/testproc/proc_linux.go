package testproc

import (
	"os/exec"
	"syscall"
)

// killWithParent has the kernel kill the server if the test binary dies
// without stopping it (a panic, a -timeout, a SIGKILL).
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
