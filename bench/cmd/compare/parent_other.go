//go:build !linux

package main

import "os/exec"

// setParentDeath does nothing where the kernel has no parent-death signal:
// compare stops its servers itself.
func setParentDeath(*exec.Cmd) {}
