package jetbridge

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the server when the test process dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
