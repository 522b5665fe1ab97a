// Command crm-mcp is the CRM MCP server protected by Cisco Duo: one binary
// that MCP clients connect to directly over Streamable HTTP.
//
//	crm-mcp serve     run the server
//	crm-mcp gateway   run the server in front of other MCP servers (GATEWAY_POLICY)
//	crm-mcp check     validate the configuration and reach the authorization server
//	crm-mcp dev       run the whole flow on this machine, against stand-ins for Duo
//	crm-mcp version   print the version
//	crm-mcp healthcheck         ask a running server for /healthz (the image's HEALTHCHECK)
//	crm-mcp audit verify FILE   check an audit log's hash chain
//
// All configuration of serve and check comes from environment variables
// (see the README); MCP_RESOURCE_URL and DUO_ISSUER are required. dev
// needs none: it takes a few flags (crm-mcp dev -h).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handling so that a
	// second Ctrl-C ends a shutdown that takes too long.
	context.AfterFunc(ctx, stop)
	environ := environMap(os.Environ())
	tuneGC(environ)
	code := run(ctx, os.Args[1:], environ, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// defaultGOGC is the garbage collector's target percentage unless GOGC
// says otherwise. The live heap of this server is a few MiB, and go-sdk
// allocates about 200 KiB per tool call (a 32 KiB read buffer for each
// JSON value it decodes), so at Go's default of 100 the collector runs
// every few dozen calls; at 400 a call costs a quarter less CPU time
// (measured through bench/cmd/compare), for a heap that may grow to five
// times the live one between collections (docs/performance.md). GOGC and
// GOMEMLIMIT, read by the Go runtime itself, tune or bound it.
const defaultGOGC = 400

// tuneGC sets defaultGOGC when GOGC is not set.
func tuneGC(environ map[string]string) {
	if _, set := environ["GOGC"]; !set {
		debug.SetGCPercent(defaultGOGC)
	}
}

// environMap turns os.Environ into a map. It is the only place the binary
// touches the process environment; everything else gets the map.
func environMap(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, s := range kv {
		if k, v, ok := strings.Cut(s, "="); ok {
			m[k] = v
		}
	}
	return m
}

// run is the whole binary, callable in-process by tests. It returns the
// exit code: 0 success, 1 failure, 2 usage error.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	a := &app{environ: environ, stdout: stdout, stderr: stderr}
	return a.run(ctx, args)
}

// app carries what run was given, plus hooks tests set.
type app struct {
	environ        map[string]string
	stdout, stderr io.Writer

	// listening, when set, is called with the address serve listens on
	// once it accepts connections (tests listen on port 0).
	listening func(addr string)
	// metricsListening, when set, is called with the metrics listener's
	// address once it serves (METRICS_ADDR with port 0 in tests).
	metricsListening func(addr string)

	// devStarted, when set, is called with dev's stand-ins once the server
	// is ready, just before listening.
	devStarted func(*devStack)
}

const usage = `usage: crm-mcp <command>

commands:
  serve     run the MCP server
  gateway   run the MCP server in front of other MCP servers: their tools,
            governed by the policy file GATEWAY_POLICY names
  check     validate the configuration and reach the authorization server(s)
  dev       run the whole flow on this machine, with stand-ins for Duo
            (flags, see crm-mcp dev -h; never in production)
  version   print the version
  healthcheck
            GET /healthz of a running server, exit 0 when healthy
            (flags, see crm-mcp healthcheck -h)
  audit verify [--allow-torn] FILE
            check the hash chain of an audit log, naming the first bad line

serve, gateway and check take their configuration from environment variables only;
MCP_RESOURCE_URL and DUO_ISSUER are required. See the README for the full
list.
`

func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var fn func(context.Context) int
	switch cmd {
	case "serve":
		fn = a.serve
	case "gateway":
		fn = a.gateway
	case "check":
		fn = a.check
	case "version":
		fn = a.version
	case "dev":
		// The commands with arguments: flags, not the environment.
		return a.dev(ctx, rest)
	case "healthcheck":
		return a.healthcheck(ctx, rest)
	case "audit":
		return a.audit(ctx, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(a.stdout, usage)
		return 0
	default:
		fmt.Fprintf(a.stderr, "crm-mcp: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(a.stderr, "crm-mcp %s: takes no arguments (configuration comes from the environment), got %q\n\n%s", cmd, rest, usage)
		return 2
	}
	return fn(ctx)
}
