package main

import "syscall"

// undumpable makes the process not dumpable (prctl PR_SET_DUMPABLE 0):
// /proc/<pid>/environ, mem and maps are then readable by root only, and
// ptrace attach is refused to processes of the same user. A stdio upstream
// runs as the gateway's user, and its cmd.Env keeps the gateway's secrets
// out of its environment only if it cannot read them from /proc/$PPID.
// Children do not inherit the flag (it is reset on execve).
func undumpable() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
