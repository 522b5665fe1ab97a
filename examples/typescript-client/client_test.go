//go:build unix

// Package typescriptclient_test runs client.mjs, the official MCP
// TypeScript SDK with its own OAuth client, against `crm-mcp dev`: the
// MCP server, the Duo stand-in authorization server and the fake Duo Push
// service on loopback. It proves that a stock SDK client gets through
// discovery, DCR, PKCE, resource indicators, the step-up push and the 403
// scope challenge, headless.
//
// It needs node on PATH and `npm ci --prefix examples/typescript-client`,
// which the repository's ./test sets up. Without them it fails, saying how
// to get them; CRM_MCP_SKIP_E2E=1 skips it instead.
package typescriptclient_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	buildTimeout  = 3 * time.Minute
	readyTimeout  = 60 * time.Second
	clientTimeout = 2 * time.Minute
	stopGrace     = 10 * time.Second
	readyPrefix   = "crm-mcp dev ready: "
)

// The steps client.mjs must report as ok for the demo scenario.
var wantSteps = []string{"a", "b", "c", "d", "e", "f1", "f2", "f3", "f5", "g"}

func TestTypeScriptSDKDemo(t *testing.T) {
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
			t.Skipf("CRM_MCP_SKIP_E2E=1: skipping the TypeScript SDK test: "+format, args...)
		}
		t.Fatalf(format+"; ./test at the repository root sets it up, or set CRM_MCP_SKIP_E2E=1 to skip this test", args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node is not on PATH (%v); the TypeScript SDK client needs Node.js 20+", err)
	}
	if _, err := os.Stat(filepath.Join("node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		unavailable("examples/typescript-client/node_modules is missing: run `npm ci --prefix examples/typescript-client` (%v)", err)
	}

	bin := buildCRMMCP(t)
	url := startDev(t, bin)
	lines := runClient(t, node, url)

	steps := map[string]map[string]any{}
	var final map[string]any
	for _, l := range lines {
		if s, ok := l["step"].(string); ok {
			steps[s] = l
		}
		if _, ok := l["scenario"]; ok {
			final = l
		}
	}
	if final == nil || final["ok"] != true {
		t.Errorf("client.mjs did not end with {\"scenario\":\"demo\",\"ok\":true}: %v", final)
	}
	for _, id := range wantSteps {
		s, ok := steps[id]
		switch {
		case !ok:
			t.Errorf("step %s missing from client.mjs output", id)
		case s["ok"] != true:
			t.Errorf("step %s (%v) failed: %v", id, s["name"], s["error"])
		}
	}
	// A few facts the steps report, checked here too so a change in the
	// script cannot quietly drop them.
	if a := steps["a"]; a != nil {
		if a["registrations"] != float64(1) || a["resource"] == nil || a["resource"] == "" {
			t.Errorf("step a: want one DCR registration and a resource parameter, got %v", a)
		}
	}
	if d := steps["d"]; d != nil {
		if n, _ := d["progress_notifications"].(float64); n < 1 {
			t.Errorf("step d: no progress notifications while waiting for the push: %v", d)
		}
	}
	if f2 := steps["f2"]; f2 != nil {
		if c, _ := f2["challenge"].(string); !strings.Contains(c, "insufficient_scope") {
			t.Errorf("step f2: no insufficient_scope challenge recorded: %v", f2)
		}
	}
	// The SDK answers the 403 by refreshing; the new token still lacks the
	// scope, and the retry gets a tool error that says so (tools/refusals.go)
	// rather than a second 403.
	for _, id := range []string{"f2", "g"} {
		if s := steps[id]; s != nil {
			e, _ := s["sdk_error"].(map[string]any)
			if text, _ := e["text"].(string); e["is_error_result"] != true || !strings.Contains(text, "which the identity provider has not granted to you") {
				t.Errorf("step %s: want a tool error explaining the missing scope, got %v", id, s["sdk_error"])
			}
		}
	}
}

// buildCRMMCP builds ./cmd/crm-mcp into a temporary directory.
func buildCRMMCP(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "crm-mcp")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/crm-mcp")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/crm-mcp: %v\n%s", err, out)
	}
	return bin
}

// syncBuffer collects a child's output for the failure report.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ownGroup puts cmd in its own process group and makes context
// cancellation kill the whole group, so nothing it started outlives the
// test.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

// startDev runs `crm-mcp dev` on a free loopback port with a fresh data
// directory and returns the MCP URL from its ready line. Cleanup stops it
// with SIGTERM, then kills its process group if it has not exited within
// stopGrace.
func startDev(t *testing.T, bin string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	ownGroup(cmd)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	// stdout goes through a pipe we own (not StdoutPipe), so cmd.Wait does
	// the copying and WaitDelay bounds it even if a descendant keeps the
	// write end open.
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start crm-mcp dev: %v", err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		exited <- err
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if u, ok := strings.CutPrefix(line, readyPrefix); ok && !sent {
				ready <- strings.TrimSpace(u)
				sent = true
			}
		}
		_, _ = io.Copy(logs, pr) // a line too long for the scanner: keep the rest
	}()

	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		defer cancel()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Logf("crm-mcp dev: %v", err)
			}
		case <-time.After(stopGrace):
			t.Errorf("crm-mcp dev did not stop within %s of SIGTERM; killing its process group", stopGrace)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("crm-mcp dev output:\n%s", logs.String())
		}
	})

	select {
	case u := <-ready:
		t.Logf("crm-mcp dev ready: %s", u)
		return u
	case err := <-exited:
		stopped = true
		cancel()
		t.Fatalf("crm-mcp dev exited before it was ready: %v", err)
	case <-time.After(readyTimeout):
		t.Fatalf("crm-mcp dev printed no %q line within %s", readyPrefix, readyTimeout)
	}
	return ""
}

// runClient runs `node client.mjs <url> demo`, logs its JSON lines and
// returns them; it fails the test unless node exits 0.
func runClient(t *testing.T, node, url string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", url, "demo")
	ownGroup(cmd)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()

	var lines []map[string]any
	for _, raw := range strings.Split(stdout.String(), "\n") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		t.Logf("client.mjs: %s", raw)
		var m map[string]any
		if jerr := json.Unmarshal([]byte(raw), &m); jerr != nil {
			t.Errorf("client.mjs printed a line that is not JSON: %q", raw)
			continue
		}
		lines = append(lines, m)
	}
	if s := stderr.String(); s != "" {
		t.Logf("client.mjs stderr:\n%s", s)
	}
	switch {
	case ctx.Err() != nil:
		t.Fatalf("client.mjs did not finish within %s", clientTimeout)
	case err != nil:
		t.Fatalf("client.mjs failed: %v", err)
	}
	return lines
}
