// Package testlock serialises, across test binaries, the tests that need
// one fixed machine resource: go test runs the packages' binaries in
// parallel, and two of them (gateway and cmd/crm-mcp) start the reference
// "everything" MCP server on the port the example policy names,
// 127.0.0.1:3001.
//
//	if err := testlock.Port("127.0.0.1:3001", 30*time.Second); err != nil {
//		t.Fatal(err)
//	}
package testlock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	mu   sync.Mutex
	held = map[string]*os.File{}
)

// Port takes, for the rest of this process, the machine-wide lock named
// for addr (a file lock, released when the process exits, however it
// exits), waiting for another test binary that holds it to exit. It then
// waits up to wait for addr to be free, since the other binary's server
// may still be stopping. Calling it again in the same process returns at
// once.
func Port(addr string, wait time.Duration) error {
	mu.Lock()
	defer mu.Unlock()
	if held[addr] != nil {
		return nil
	}
	name := filepath.Join(os.TempDir(), "crm-mcp-test-"+strings.NewReplacer(":", "-", "/", "-").Replace(addr)+".lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("testlock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return fmt.Errorf("testlock: locking %s: %v", name, err)
	}
	held[addr] = f // kept open: the lock lasts until the process exits
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil // free
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still in use after %s, though no other test binary of this repository holds it: stop what listens there", addr, wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
