//go:build !linux

package main

// undumpable has no equivalent outside Linux here: README's gateway
// section says a stdio upstream runs as the gateway's user.
func undumpable() error { return nil }
