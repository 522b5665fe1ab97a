//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

// setParentDeath does nothing where the kernel has no parent-death signal:
// compare stops its servers itself.
func setParentDeath(*exec.Cmd) {}

// cpuTime is only measured on Linux (/proc).
func cpuTime(int) (time.Duration, error) {
	return 0, errors.New("CPU time is measured on Linux only")
}

// rss is only measured on Linux (/proc).
func rss(int) string { return "n/a" }
