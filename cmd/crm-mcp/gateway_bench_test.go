package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// BenchmarkGatewayEcho compares, in one run, a plain everything.echo call
// (no push) through three servers in front of the same everything server:
//
//   - gateway: `crm-mcp gateway` (front door with a JWT, govern's scope
//     gate and pipeline, the audit trail written and synced per call,
//     metrics), a process of its own;
//   - upstream: straight to the everything server, no hop;
//   - gosdk-proxy: the plainest go-sdk server forwarding the call
//     (testdata/gosdkproxy), no auth, a process of its own.
//
// Each reports calls/s (one client, calls in sequence) and the CPU time of
// the serving process per call (/proc/<pid>/stat: the gateway's, the
// everything server's, the proxy's), so the gateway's overhead per call
// reads against both baselines.
//
// Run: go test ./cmd/crm-mcp -run XXX -bench BenchmarkGatewayEcho -benchtime 2000x
func BenchmarkGatewayEcho(b *testing.B) {
	startEverything(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "crm-mcp")
	proxy := filepath.Join(dir, "gosdkproxy")
	for out, args := range map[string][]string{bin: {"."}, proxy: {"./testdata/gosdkproxy"}} {
		if msg, err := exec.Command("go", append([]string{"build", "-o", out}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", args, err, msg)
		}
	}
	const upstream = "http://127.0.0.1:3001/mcp"

	b.Run("gateway", func(b *testing.B) {
		as := rstest.NewServer()
		defer as.Close()
		as.KID("RS256")
		policy := filepath.Join(dir, "policy.yaml")
		os.WriteFile(policy, []byte("upstreams:\n  - name: everything\n    url: "+upstream+"\n    tools:\n      echo: {scopes: [demo.read]}\n"), 0o600)
		addr := freeAddr(b)
		cmd := exec.Command(bin, "gateway")
		cmd.Env = []string{"MCP_LISTEN_ADDR=" + addr, "MCP_RESOURCE_URL=" + testResource, "DUO_ISSUER=" + as.Issuer(),
			"GATEWAY_POLICY=" + policy, "AUDIT_LOG_PATH=" + filepath.Join(dir, "audit.log"), "STEPUP_MODE=off", "LOG_LEVEL=warn"}
		token := as.Mint(as.Claims("alice", testResource, "demo.read"))
		benchEcho(b, cmd, "http://"+addr+"/mcp", token, "everything.echo")
	})
	b.Run("upstream", func(b *testing.B) {
		benchEcho(b, nil, upstream, "", "echo")
	})
	b.Run("gosdk-proxy", func(b *testing.B) {
		addr := freeAddr(b)
		benchEcho(b, exec.Command(proxy, addr, upstream), "http://"+addr+"/mcp", "", "echo")
	})
}

// benchEcho starts cmd (nil: the everything server, already running),
// calls tool in a loop and reports calls/s and the server's CPU per call.
func benchEcho(b *testing.B, cmd *exec.Cmd, endpoint, token, tool string) {
	pid := everythingServer.pid
	if cmd != nil {
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		pid = cmd.Process.Pid
	}
	ctx := context.Background()
	var cs *mcp.ClientSession
	var err error
	for range 100 { // until it listens
		hc := http.DefaultClient
		if token != "" {
			hc = &http.Client{Transport: headers{"Authorization": "Bearer " + token}}
		}
		cs, err = mcp.NewClient(&mcp.Implementation{Name: "bench"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	params := &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"message": "hello"}}
	if res, err := cs.CallTool(ctx, params); err != nil || res.IsError {
		b.Fatalf("warm-up call: %v %+v", err, res)
	}
	cpu0 := procCPU(b, pid)
	start := time.Now()
	for b.Loop() {
		if _, err := cs.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	cpu := procCPU(b, pid) - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-us/call")
}

// procCPU is a process's user and system CPU time so far.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// headers sets fixed headers on every request.
type headers map[string]string

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}
