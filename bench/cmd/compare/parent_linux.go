package main

import (
	"os/exec"
	"syscall"
)

// setParentDeath has the kernel kill the server if compare dies without
// stopping it, so no server outlives a killed run.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
