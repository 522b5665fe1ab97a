// Command compare measures crm-mcp against the two servers a user would
// build instead (bench/peers): it builds and starts all three, drives each
// with the same load (bench/load) at several concurrencies, interleaved
// over rounds so that drift on a shared machine hits every server alike,
// and prints a markdown table of calls per second and p99 latency with the
// ratios of crm-mcp to each peer.
//
//	go run ./bench/cmd/compare              # 3 rounds, c=1,8,64, 5 s per cell
//	go run ./bench/cmd/compare -d 1s -rounds 1
//
// crm-mcp runs as `crm-mcp serve` in jwt mode with SQLite and step-up on,
// against a stand-in authorization server (rstest) whose tokens every
// server verifies, and a stand-in Duo Auth API (duotest, approving any
// push). The load speaks MCP 2026-07-28 (-protocol) to crm-mcp and to the
// go-sdk peer, which runs stateless for it (-gosdk-stateless, go-sdk's only
// way to serve that revision); the TypeScript peer's SDK (v1) serves only
// the initialize-based revisions, so it is spoken to in 2025-06-18, as its
// row in the table says. The TypeScript peer needs its packages first:
//
//	npm ci --prefix bench/peers/typescript
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/crm-mcp/crm-mcp/bench/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// The servers, in table order.
const (
	crmMCP     = "crm-mcp"
	goSDK      = "gosdk"
	typeScript = "typescript"
)

var serverNames = []string{crmMCP, goSDK, typeScript}

var tableLabels = map[string]string{
	crmMCP:     "crm-mcp serve (jwt mode, SQLite, step-up on)",
	goSDK:      "go-sdk peer (RequireBearerToken, jwx jwk.Cache, in-memory)",
	typeScript: "TypeScript SDK peer (express, requireBearerAuth, jose, in-memory)",
}

var scopes = []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}

type options struct {
	duration, warmup time.Duration
	rounds           int
	concurrency      []int
	servers          []string
	mix              []load.Call
	keep, verbose    bool
	protocol         string
	gosdkStateless   bool
}

func parse(args []string, stderr io.Writer) (options, int, bool) {
	o := options{concurrency: []int{1, 8, 64}, servers: serverNames}
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "d", 5*time.Second, "measured time per cell (server, concurrency, round)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before each cell")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every cell once")
	fs.Func("c", "comma-separated `concurrencies` (default 1,8,64)", func(s string) error {
		o.concurrency = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 10000 {
				return fmt.Errorf("%q is not a concurrency from 1 to 10000", f)
			}
			o.concurrency = append(o.concurrency, n)
		}
		return nil
	})
	fs.Func("servers", "comma-separated `servers` to run, of crm-mcp, gosdk and typescript (default all)", func(s string) error {
		o.servers = nil
		for _, f := range strings.Split(s, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(serverNames, f) {
				return fmt.Errorf("%q is not a server: want crm-mcp, gosdk or typescript", f)
			}
			if !slices.Contains(o.servers, f) {
				o.servers = append(o.servers, f)
			}
		}
		return nil
	})
	fs.Func("call", "a call of the mix, `[N*]tool [JSON arguments]`, repeatable (default: list_contacts)", func(s string) error {
		calls, err := load.ParseCall(s)
		o.mix = append(o.mix, calls...)
		return err
	})
	fs.StringVar(&o.protocol, "protocol", load.DefaultProtocolVersion, "the MCP `revision` the load speaks (the TypeScript peer speaks at most "+load.LegacyProtocolVersion+")")
	fs.BoolVar(&o.gosdkStateless, "gosdk-stateless", true, "run the go-sdk peer stateless, go-sdk's only way to serve 2026-07-28")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (binaries, database, server logs)")
	fs.BoolVar(&o.verbose, "v", false, "show the load generator's progress every second")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0, false
		}
		return o, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "compare: unexpected arguments %q\n", fs.Args())
		return o, 2, false
	}
	if o.rounds < 1 || o.duration <= 0 || o.warmup < 0 {
		fmt.Fprintln(stderr, "compare: -rounds must be at least 1, -d positive and -warmup not negative")
		return o, 2, false
	}
	if o.mix == nil {
		o.mix = []load.Call{{Tool: "list_contacts"}}
	}
	return o, 0, true
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code, ok := parse(args, stderr)
	if !ok {
		return code
	}
	if err := compare(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "compare: %v\n", err)
		return 1
	}
	return 0
}

func compare(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	rg, err := startRig(ctx, rigOptions{names: o.servers, sessions: slices.Max(o.concurrency), protocol: o.protocol, gosdkStateless: o.gosdkStateless}, stderr)
	defer func() { rg.close(err != nil || o.keep, stderr) }()
	if err != nil {
		return err
	}
	servers := rg.servers

	results := map[string]map[int][]cellResult{}
	for _, s := range servers {
		results[s.name] = map[int][]cellResult{}
	}
	cell := 0
	for round := 1; round <= o.rounds; round++ {
		for _, c := range o.concurrency {
			// Each cell starts with the next server, so none always runs
			// first (or right after the heaviest).
			for i := range servers {
				s := servers[(cell+i)%len(servers)]
				cfg := load.Config{
					URL: s.url, Tokens: s.tokens[:c], Concurrency: c,
					Duration: o.duration, Warmup: o.warmup, Mix: o.mix, ProtocolVersion: s.protocol,
				}
				if o.verbose {
					cfg.Progress, cfg.Label = stderr, fmt.Sprintf("round %d c=%d %s", round, c, s.name)
				}
				// The server's CPU time over the measured window, and the
				// load generator's (this process), which shares the CPUs.
				var cpu, self [2]time.Duration
				cpuErr := error(nil)
				cfg.Window = func(end bool) {
					t, err := cpuTime(s.cmd.Process.Pid)
					me, err2 := cpuTime(os.Getpid())
					cpuErr = cmp.Or(cpuErr, err, err2)
					cpu[boolIndex(end)], self[boolIndex(end)] = t, me
				}
				r, err := load.Run(ctx, cfg)
				if err != nil {
					return fmt.Errorf("%s, c=%d: %w (server log: %s)", s.name, c, err, s.log)
				}
				if err := s.exited(); err != nil {
					return err
				}
				cr := cellResult{Result: r, cpuPerCall: -1}
				loadCPU := "n/a"
				if n := r.Calls + r.Errors; cpuErr == nil && n > 0 {
					cr.cpuPerCall = (cpu[1] - cpu[0]) / time.Duration(n)
					loadCPU = fmt.Sprintf("%.0f µs", float64(((self[1]-self[0])/time.Duration(n)).Nanoseconds())/1000)
				}
				fmt.Fprintf(stderr, "round %d/%d  c=%-3d %-10s %8.0f req/s  p99 %7.2f ms  CPU/call %s (load generator %s)  RSS %s  %d errors\n",
					round, o.rounds, c, s.name, r.Throughput(), ms(r.Percentile(99)), cr.cpu(), loadCPU, rss(s.cmd.Process.Pid), r.Errors)
				results[s.name][c] = append(results[s.name][c], cr)
			}
			cell++
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	writeTable(stdout, o, servers, results, describeRun(ctx, o))
	var failed []string
	for _, s := range servers {
		for _, c := range o.concurrency {
			for _, r := range results[s.name][c] {
				for msg, n := range r.ErrorKinds {
					failed = append(failed, fmt.Sprintf("%s c=%d: %d x %s", s.name, c, n, msg))
				}
			}
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("calls failed:\n  %s", strings.Join(failed, "\n  "))
	}
	return nil
}

// cellResult is one server at one concurrency in one round.
type cellResult struct {
	*load.Result
	// cpuPerCall is the server's CPU time over the measured window divided
	// by the calls in it; negative when it could not be measured.
	cpuPerCall time.Duration
}

func (c cellResult) cpu() string {
	if c.cpuPerCall < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f µs", float64(c.cpuPerCall.Nanoseconds())/1000)
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// baseEnv is the environment every server starts from: enough to run,
// nothing of ours that crm-mcp would read (it reports unknown MCP_, DUO_,
// ... variables), plus the Go runtime's knobs for experiments.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// freePort asks the kernel for a port nobody listens on.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// describeRun is the line above the table: what was run, and where.
func describeRun(ctx context.Context, o options) string {
	calls := make([]string, 0, len(o.mix))
	for _, c := range o.mix {
		calls = append(calls, c.String())
	}
	node := "node not run"
	if out, err := exec.CommandContext(ctx, "node", "--version").Output(); err == nil {
		node = "node " + strings.TrimSpace(string(out))
	}
	// The machine's load says how far to trust the figures: on a shared
	// machine other processes take CPU from the servers.
	loadavg := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			loadavg = fmt.Sprintf(", load average %s %s %s at the end", f[0], f[1], f[2])
		}
	}
	return fmt.Sprintf("Authenticated tools/call (%s) over Streamable HTTP, one user per worker (and one session each on a revision with sessions), %d round(s) interleaved, %s per cell after %s warmup; "+
		"req/s and p99 are the medians of the rounds. %s, %s, %d CPUs%s.",
		strings.Join(calls, ", "), o.rounds, o.duration, o.warmup, runtime.Version(), node, runtime.NumCPU(), loadavg)
}
