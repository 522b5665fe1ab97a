package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/gateway"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/internal/testlock"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// The real upstreams of the example policy, which nobody here wrote: the
// reference "everything" server over Streamable HTTP on the port the
// example names, and the filesystem server over stdio, both pinned by
// examples/gateway/package-lock.json (./test runs npm ci there).
const (
	upstreamsDir   = "../examples/gateway"
	examplePolicy  = upstreamsDir + "/policy.yaml"
	everythingAddr = "127.0.0.1:3001"
	sharedDir      = "/srv/shared"
	everythingTok  = "gw-own-credential-0123456789"
)

// goldenDir is testdata, absolute: the tests chdir to upstreamsDir.
var goldenDir, _ = filepath.Abs("testdata")

// unavailable fails the test for a missing prerequisite, or skips it
// under CRM_MCP_SKIP_E2E=1, saying which.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
		t.Skipf("CRM_MCP_SKIP_E2E=1: skipping a test against the real upstreams: "+format, args...)
	}
	t.Fatalf(format+"; ./test at the repository root sets it up, or set CRM_MCP_SKIP_E2E=1 to skip this test", args...)
}

var everything struct {
	once sync.Once
	cmd  *exec.Cmd
	err  string
}

// TestMain stops the everything server the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	if c := everything.cmd; c != nil && c.Process != nil {
		syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		c.Wait()
	}
	os.Exit(code)
}

// upstreams starts the everything server (once) and makes /srv/shared.
func upstreams(t testing.TB) {
	t.Helper()
	for _, pkg := range []string{"server-everything", "server-filesystem"} {
		if _, err := os.Stat(filepath.Join(upstreamsDir, "node_modules", "@modelcontextprotocol", pkg, "package.json")); err != nil {
			unavailable(t, "examples/gateway/node_modules lacks @modelcontextprotocol/%s: run `npm ci --prefix examples/gateway`", pkg)
		}
	}
	if _, err := exec.LookPath("npx"); err != nil {
		unavailable(t, "npx is not on PATH: install Node.js 20 or later")
	}
	if err := os.MkdirAll(sharedDir, 0o755); err != nil {
		t.Fatalf("the example policy serves %s, which this test must create and cannot (%v): run the tests as root, or create it writable by this user", sharedDir, err)
	}
	if f, err := os.CreateTemp(sharedDir, "probe"); err != nil {
		t.Fatalf("%s is not writable by this user (%v): run the tests as root, or make it writable", sharedDir, err)
	} else {
		f.Close()
		os.Remove(f.Name())
	}
	everything.once.Do(func() {
		// cmd/crm-mcp's tests start one on the same port: one test binary
		// at a time.
		if err := testlock.Port(everythingAddr, 30*time.Second); err != nil {
			everything.err = err.Error()
			return
		}
		abs, _ := filepath.Abs(upstreamsDir)
		cmd := exec.Command("node", filepath.Join(abs, "node_modules/@modelcontextprotocol/server-everything/dist/index.js"), "streamableHttp")
		cmd.Env = append(os.Environ(), "PORT=3001")
		// Pdeathsig: a test binary that dies (a timeout) takes it along.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			everything.err = fmt.Sprintf("starting the everything server: %v", err)
			return
		}
		everything.cmd = cmd
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if c, err := net.DialTimeout("tcp", everythingAddr, time.Second); err == nil {
				c.Close()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		everything.err = "the everything server did not listen on " + everythingAddr + " within 30s"
	})
	if everything.err != "" {
		t.Fatal(everything.err)
	}
}

// env is the gateway in front of the example policy's upstreams, behind
// the front door, with a fake Duo that verifies signatures.
type env struct {
	as       *rstest.Server
	rs       *resourceserver.Server
	duo      *duotest.Server
	gw       *gateway.Gateway
	rec      *events
	resource string
	srv      *httptest.Server
}

type envOpts struct {
	policy string // default: the example, as written
	tune   func(*govern.Config, *stepup.Config)
	getenv func(string) (string, bool)
}

type events struct {
	mu  sync.Mutex
	all []govern.Event
}

func (e *events) record(_ context.Context, ev govern.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
	return nil
}

func (e *events) codes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.all {
		out = append(out, string(ev.Kind)+"/"+string(ev.Outcome))
	}
	e.all = nil
	return out
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{as: rstest.NewServer(), rec: &events{}}
	t.Cleanup(e.as.Close)
	e.as.KID("RS256")
	e.duo = duotest.NewServer()
	t.Cleanup(e.duo.Close)
	e.duo.SetDefault(duotest.Approve)
	e.srv = httptest.NewUnstartedServer(nil)
	e.resource = "http://" + e.srv.Listener.Addr().String() + "/mcp"
	var err error
	e.rs, err = resourceserver.New(resourceserver.Config{Resource: e.resource, Issuers: []resourceserver.Issuer{{URL: e.as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(e.rs.Close)

	terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	require.NoError(t, err)
	gcfg := govern.Config{Terms: terms, OnWrite: true, Recorder: e.rec.record, Logger: slog.New(slog.DiscardHandler)}
	scfg := stepup.Config{IKey: e.duo.IKey(), SKey: e.duo.SKey(), Host: e.duo.Host(), CACertPEM: e.duo.CACertPEM(),
		PollInterval: 20 * time.Millisecond, Timeout: 10 * time.Second, MaxPushes: 100, Logger: slog.New(slog.DiscardHandler)}
	if o.tune != nil {
		o.tune(&gcfg, &scfg)
	}
	gcfg.Guard, err = stepup.New(scfg)
	require.NoError(t, err)
	g, err := govern.New(gcfg)
	require.NoError(t, err)

	getenv := o.getenv
	if getenv == nil {
		getenv = func(k string) (string, bool) {
			if k == "EVERYTHING_TOKEN" {
				return everythingTok, true
			}
			return "", false
		}
	}
	var pol *gateway.Policy
	if o.policy == "" {
		pol, err = gateway.Load(examplePolicy, getenv)
	} else {
		pol, err = gateway.Parse("policy.yaml", []byte(o.policy), getenv)
	}
	require.NoError(t, err)
	// npx finds the pinned filesystem server in examples/gateway.
	t.Chdir(upstreamsDir)
	e.gw, err = gateway.New(t.Context(), gateway.Config{
		Policy: pol, Governor: g, Auth: e.rs, Logger: slog.New(slog.DiscardHandler),
		CommandEnv: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")},
	})
	require.NoError(t, err)
	t.Cleanup(e.gw.Close)
	mux := http.NewServeMux()
	for _, p := range e.rs.MetadataPaths() {
		mux.Handle(p, e.rs.MetadataHandler())
	}
	mux.Handle("/mcp", e.gw)
	e.srv.Config.Handler = mux
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) token(sub string, scopes ...string) string {
	return e.as.Mint(e.as.Claims(sub, e.resource, scopes...))
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func (e *env) connect(t testing.TB, token string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "gateway-test"}, opts)
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: e.resource, HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	return cs
}

var allScopes = []string{"demo.read", "demo.admin", "files.read", "files.write"}

func call(t testing.TB, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	require.NoError(t, err)
	return res
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

var readFile = os.ReadFile
