// Command crm-mcp-load measures an MCP server: it opens sessions over
// Streamable HTTP with real bearer tokens, drives a mix of tools/call
// requests at a fixed concurrency for a set time, shows progress on
// stderr, and prints calls per second and latency percentiles.
//
// Tokens come from one of:
//
//   - CRM_MCP_LOAD_TOKEN, one token for every session;
//   - -token-file, one token per line, shared out over the sessions;
//   - -as ADDR, which runs a stand-in authorization server (rstest) on ADDR
//     and mints a token per session for the target's resource URL. Start
//     the target with DUO_ISSUER set to the issuer printed on stderr;
//     crm-mcp-load waits until it accepts the tokens.
//
// The default mix alternates list_contacts and get_contact of contacts that
// are not restricted, so that crm-mcp asks for no step-up. -call replaces
// it, repeatable: -call 'list_contacts' -call '3*get_contact {"id":2}'.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/crm-mcp/crm-mcp/bench/load"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

const tokenEnv = "CRM_MCP_LOAD_TOKEN"

var allScopes = "crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

type options struct {
	url, audience, tokenFile, asAddr, scopes string
	protocol                                 string
	concurrency, sessions                    int
	duration, warmup, wait, progress         time.Duration
	calls                                    []string
	json                                     bool
}

func parse(args []string, stderr io.Writer) (options, int, bool) {
	var o options
	fs := flag.NewFlagSet("crm-mcp-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "", "the MCP endpoint, like http://127.0.0.1:8080/mcp (required)")
	fs.IntVar(&o.concurrency, "c", 8, "calls in flight at once (workers)")
	fs.IntVar(&o.sessions, "sessions", 0, "callers (MCP sessions, on a revision with sessions), at least -c (default: one per worker)")
	fs.StringVar(&o.protocol, "protocol", load.DefaultProtocolVersion, "the MCP `revision` spoken: 2026-07-28 sends it with every request; an earlier one opens a session with initialize")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "how long to measure")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "how long to run before measuring")
	fs.Func("call", "a call of the mix, `[N*]tool [JSON arguments]`; repeatable (default: list_contacts and get_contact of unrestricted contacts)", func(s string) error {
		o.calls = append(o.calls, s)
		return nil
	})
	fs.StringVar(&o.tokenFile, "token-file", "", "`file` of bearer tokens, one per line (or set "+tokenEnv+")")
	fs.StringVar(&o.asAddr, "as", "", "run a stand-in authorization server on `address` (like 127.0.0.1:9000) and mint the tokens")
	fs.StringVar(&o.audience, "audience", "", "with -as: the tokens' audience (default -url)")
	fs.StringVar(&o.scopes, "scopes", allScopes, "with -as: the tokens' scopes")
	fs.DurationVar(&o.wait, "wait", time.Minute, "with -as: how long to wait for the target to accept the tokens")
	fs.DurationVar(&o.progress, "progress", time.Second, "how often to show progress on stderr; 0 shows none")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0, false
		}
		return o, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "crm-mcp-load: unexpected arguments %q\n", fs.Args())
		return o, 2, false
	}
	if o.url == "" {
		fmt.Fprintln(stderr, "crm-mcp-load: -url is required")
		return o, 2, false
	}
	return o, 0, true
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, code, ok := parse(args, stderr)
	if !ok {
		return code
	}
	var mix []load.Call
	for _, s := range o.calls {
		calls, err := load.ParseCall(s)
		if err != nil {
			fmt.Fprintf(stderr, "crm-mcp-load: -call: %v\n", err)
			return 2
		}
		mix = append(mix, calls...)
	}
	sessions := o.sessions
	if sessions == 0 {
		sessions = o.concurrency
	}
	tokens, cleanup, err := getTokens(ctx, o, sessions, getenv, stderr)
	defer cleanup()
	if err != nil {
		fmt.Fprintf(stderr, "crm-mcp-load: %v\n", err)
		return 2
	}
	if mix == nil {
		mix = load.DefaultMix()
	}
	cfg := load.Config{
		URL: o.url, Tokens: tokens, Concurrency: o.concurrency, Sessions: o.sessions,
		Duration: o.duration, Warmup: o.warmup, Mix: mix, ProtocolVersion: o.protocol,
	}
	if o.progress > 0 {
		cfg.Progress, cfg.ProgressInterval = stderr, o.progress
	}
	r, err := load.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "crm-mcp-load: %v\n", err)
		return 1
	}
	if o.json {
		writeJSON(stdout, o, sessions, r)
	} else {
		writeText(stdout, o, sessions, len(cfg.Mix), r)
	}
	if r.Errors > 0 {
		fmt.Fprintf(stderr, "crm-mcp-load: %d call(s) failed\n", r.Errors)
		return 1
	}
	return 0
}

// getTokens finds the bearer tokens: the environment, a file, or a
// stand-in authorization server that cleanup stops.
func getTokens(ctx context.Context, o options, sessions int, getenv func(string) string, stderr io.Writer) (tokens []string, cleanup func(), err error) {
	cleanup = func() {}
	env := strings.TrimSpace(getenv(tokenEnv))
	n := 0
	for _, set := range []bool{env != "", o.tokenFile != "", o.asAddr != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return nil, cleanup, fmt.Errorf("no token: set %s, or give -token-file or -as", tokenEnv)
	case n > 1:
		return nil, cleanup, fmt.Errorf("tokens from more than one source: use one of %s, -token-file and -as", tokenEnv)
	case env != "":
		return []string{env}, cleanup, nil
	case o.tokenFile != "":
		tokens, err := readTokens(o.tokenFile)
		return tokens, cleanup, err
	}
	return mint(ctx, o, sessions, stderr)
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-token-file: %v", err)
	}
	defer f.Close()
	var tokens []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			tokens = append(tokens, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-token-file %s: %v", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("-token-file %s holds no token", path)
	}
	return tokens, nil
}

// mint runs the stand-in authorization server and mints a token per
// session, then waits until the target accepts one.
func mint(ctx context.Context, o options, sessions int, stderr io.Writer) ([]string, func(), error) {
	ln, err := net.Listen("tcp", o.asAddr)
	if err != nil {
		return nil, func() {}, fmt.Errorf("-as: %v", err)
	}
	as := rstest.NewAuthServer("http://" + ln.Addr().String() + "/oauth2/load")
	as.KID("RS256") // the key exists before the target's first JWKS fetch
	srv := &http.Server{Handler: as, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	cleanup := func() { srv.Close() }

	aud := o.audience
	if aud == "" {
		aud = o.url
	}
	scopes := strings.Fields(o.scopes)
	tokens := make([]string, sessions)
	for i := range tokens {
		tokens[i] = as.Mint(as.Claims(fmt.Sprintf("load-user-%d", i+1), aud, scopes...))
	}
	fmt.Fprintf(stderr, "crm-mcp-load: authorization server for the target to trust:\n  DUO_ISSUER=%s\n  (JWKS %s)\nwaiting up to %s for %s to accept its tokens...\n", as.Issuer(), as.JWKSURL(), o.wait, o.url)
	wctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	for {
		err := load.Ping(wctx, o.url, tokens[0], o.protocol)
		if err == nil {
			return tokens, cleanup, nil
		}
		select {
		case <-wctx.Done():
			return nil, cleanup, fmt.Errorf("%s did not accept the tokens within -wait %s: %v", o.url, o.wait, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeText(w io.Writer, o options, sessions, mixLen int, r *load.Result) {
	fmt.Fprintf(w, "target    %s\n", o.url)
	fmt.Fprintf(w, "load      %s, %d workers, %d callers, %s measured after %s warmup, mix of %d call(s)\n", o.protocol, o.concurrency, sessions, r.Duration, o.warmup, mixLen)
	fmt.Fprintf(w, "calls     %d ok, %d failed\n", r.Calls, r.Errors)
	fmt.Fprintf(w, "req/s     %.1f\n", r.Throughput())
	fmt.Fprintf(w, "latency   p50 %.2fms  p90 %.2fms  p99 %.2fms\n", ms(r.Percentile(50)), ms(r.Percentile(90)), ms(r.Percentile(99)))
	kinds := make([]string, 0, len(r.ErrorKinds))
	for k := range r.ErrorKinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "error     %d x %s\n", r.ErrorKinds[k], k)
	}
}

func writeJSON(w io.Writer, o options, sessions int, r *load.Result) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(map[string]any{
		"url": o.url, "protocol": o.protocol, "concurrency": o.concurrency, "sessions": sessions, "duration_s": r.Duration.Seconds(),
		"calls": r.Calls, "errors": r.Errors, "error_kinds": r.ErrorKinds, "req_per_s": r.Throughput(),
		"p50_ms": ms(r.Percentile(50)), "p90_ms": ms(r.Percentile(90)), "p99_ms": ms(r.Percentile(99)),
	})
}
