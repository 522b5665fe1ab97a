// Package load drives an MCP server over Streamable HTTP with a mix of
// tools/call requests, from a fixed number of sessions at a fixed
// concurrency, and measures throughput and latency. It is the engine of
// cmd/crm-mcp-load and of the comparison in bench/cmd/compare.
//
// The client is hand-rolled JSON-RPC over net/http rather than an SDK
// client, so that on a small machine shared with the server the
// measurement is of the server: a request is a reused header map and a
// body appended into a reused buffer; a response is read into a reused
// buffer and decoded once, into the few fields needed to tell success
// from failure (the JSON-RPC id, error and the tool result's isError).
package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultProtocolVersion is the MCP revision the client speaks: the
// current one, with no initialize and the version in every request.
const DefaultProtocolVersion = "2026-07-28"

// LegacyProtocolVersion is the initialize-based revision offered to a
// server that does not speak the current one (such as the TypeScript SDK
// v1 peer).
const LegacyProtocolVersion = "2025-06-18"

// maxErrorKinds caps the distinct error messages a Result keeps.
const maxErrorKinds = 10

// callTimeout is how long a call may still run after the measurement has
// ended: a server that stops answering ends the run, as failed calls,
// instead of hanging it.
const callTimeout = 30 * time.Second

// Call is one tools/call of the mix.
type Call struct {
	Tool string
	// Args is the arguments object; nil sends {}.
	Args json.RawMessage
}

// String is the call as ParseCall reads it.
func (c Call) String() string {
	if len(c.Args) == 0 {
		return c.Tool
	}
	return c.Tool + " " + string(c.Args)
}

// ParseCall reads "[N*]tool [arguments]", where arguments is a JSON
// object: "get_contact {\"id\":3}", "3*list_contacts". It returns the call
// N times (default once), so weights are repetitions in the mix.
func ParseCall(s string) ([]Call, error) {
	s = strings.TrimSpace(s)
	n := 1
	if before, after, ok := strings.Cut(s, "*"); ok && !strings.ContainsAny(before, " {") {
		w, err := strconv.Atoi(before)
		if err != nil || w < 1 || w > 1000 {
			return nil, fmt.Errorf("call %q: the weight before * must be a whole number from 1 to 1000", s)
		}
		n, s = w, strings.TrimSpace(after)
	}
	tool, args, _ := strings.Cut(s, " ")
	if tool == "" {
		return nil, fmt.Errorf("call %q: want [N*]tool [JSON arguments], like get_contact {\"id\":3}", s)
	}
	c := Call{Tool: tool}
	if args = strings.TrimSpace(args); args != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(args), &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("call %q: the arguments must be a JSON object, like {\"id\":3}", s)
		}
		c.Args = json.RawMessage(args)
	}
	calls := make([]Call, n)
	for i := range calls {
		calls[i] = c
	}
	return calls, nil
}

// DefaultMix alternates list_contacts with get_contact of each seed
// contact that is not restricted (the seed's restricted contact is #6), so
// nothing in it needs step-up approval.
func DefaultMix() []Call {
	var mix []Call
	for _, id := range []int{1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12} {
		mix = append(mix, Call{Tool: "list_contacts"}, Call{Tool: "get_contact", Args: json.RawMessage(`{"id":` + strconv.Itoa(id) + `}`)})
	}
	return mix
}

// Config says what to drive and how hard.
type Config struct {
	// URL is the MCP endpoint. Required.
	URL string
	// Tokens are bearer tokens; session i uses Tokens[i % len(Tokens)].
	// At least one is required.
	Tokens []string
	// Concurrency is the number of calls in flight, one per worker. At
	// least 1.
	Concurrency int
	// Sessions is the number of MCP sessions opened (callers, on a
	// per-request revision); 0 means one per worker. Workers take turns over the sessions, each session used by
	// one worker at a time.
	Sessions int
	// Duration is how long calls are measured. Required.
	Duration time.Duration
	// Warmup is run before the measurement and not counted.
	Warmup time.Duration
	// Mix is the calls each worker walks through in order, starting at its
	// own offset; nil means DefaultMix.
	Mix []Call
	// ProtocolVersion is the revision spoken; "" means
	// DefaultProtocolVersion. 2026-07-28 and later send it with every
	// request and open no session; an earlier one is offered at
	// initialize.
	ProtocolVersion string
	// Progress, if set, receives a line per ProgressInterval (default 1 s).
	Progress         io.Writer
	ProgressInterval time.Duration
	// Label starts every progress line.
	Label string
	// Window, if set, is called when the measurement starts (false) and
	// when it ends (true), for measuring the server alongside, such as the
	// CPU time it used.
	Window func(end bool)
}

func (c *Config) check() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is required"))
	}
	if len(c.Tokens) == 0 {
		errs = append(errs, errors.New("at least one bearer token is required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency))
	}
	if c.Sessions == 0 {
		c.Sessions = c.Concurrency
	}
	if c.Sessions < c.Concurrency {
		errs = append(errs, fmt.Errorf("sessions (%d) must be at least the concurrency (%d): a session serves one call at a time", c.Sessions, c.Concurrency))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration must be positive, got %s", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup must not be negative, got %s", c.Warmup))
	}
	if c.Mix == nil {
		c.Mix = DefaultMix()
	}
	if len(c.Mix) == 0 {
		errs = append(errs, errors.New("the mix has no call"))
	}
	if c.ProtocolVersion == "" {
		c.ProtocolVersion = DefaultProtocolVersion
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	return errors.Join(errs...)
}

// Result is what a run measured. Only calls that started after the warmup
// and finished within Duration count.
type Result struct {
	// Calls is the number of successful calls.
	Calls int64
	// Errors is the number of failed calls: an HTTP status other than 200,
	// a JSON-RPC error, a tool result with isError, or no answer.
	Errors int64
	// ErrorKinds counts the failures by message, up to ten messages.
	ErrorKinds map[string]int64
	// Duration is the measured time.
	Duration time.Duration
	// latencies of the successful calls, sorted.
	latencies []time.Duration
}

// Throughput is successful calls per second.
func (r *Result) Throughput() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Duration.Seconds()
}

// Percentile returns the latency at or under which p percent (0 to 100)
// of the successful calls finished, or 0 when there was none.
func (r *Result) Percentile(p float64) time.Duration {
	n := len(r.latencies)
	if n == 0 {
		return 0
	}
	i := int(float64(n)*p/100+0.5) - 1
	return r.latencies[min(max(i, 0), n-1)]
}

// Run opens the sessions, drives the mix until the warmup and the
// duration have passed or ctx ends, closes the sessions and returns what
// it measured. Failed calls are counted, not returned; the error is for a
// configuration the run cannot start with, such as a session the server
// refuses to open.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	tr := &http.Transport{
		MaxIdleConns:        cfg.Concurrency + 16,
		MaxIdleConnsPerHost: cfg.Concurrency + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	cl := &client{http: &http.Client{Transport: tr}, url: cfg.URL}

	sessions, err := cl.open(ctx, cfg)
	defer cl.closeAll(sessions)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return drive(ctx, cfg, sessions), nil
}

// worker is one caller's tally.
type worker struct {
	calls, errs int64
	latencies   []time.Duration
	kinds       map[string]int64
}

func drive(ctx context.Context, cfg Config, sessions []*session) *Result {
	start := time.Now().Add(cfg.Warmup)
	end := start.Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, end.Add(callTimeout))
	defer cancel()
	var done, failed atomic.Int64 // every call, warmup included, for progress
	workers := make([]worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &workers[w]
			wk.kinds = map[string]int64{}
			var mine []*session
			for i := w; i < len(sessions); i += cfg.Concurrency {
				mine = append(mine, sessions[i])
			}
			for k := w; ctx.Err() == nil; k++ {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := mine[k%len(mine)].call(ctx, cfg.Mix[k%len(cfg.Mix)])
				t1 := time.Now()
				done.Add(1)
				if err != nil {
					failed.Add(1)
				}
				if t0.Before(start) || t1.After(end) || ctx.Err() != nil {
					continue
				}
				if err == nil {
					wk.calls++
					wk.latencies = append(wk.latencies, t1.Sub(t0))
					continue
				}
				wk.errs++
				if msg := err.Error(); wk.kinds[msg] > 0 || len(wk.kinds) < maxErrorKinds {
					wk.kinds[msg]++
				}
			}
		}()
	}
	stop := make(chan struct{})
	var progress sync.WaitGroup
	if cfg.Progress != nil {
		progress.Add(1)
		go func() {
			defer progress.Done()
			report(cfg, start, end, &done, &failed, stop)
		}()
	}
	if cfg.Window != nil {
		// Called once each, here and not on a timer's goroutine, so that
		// they are done when Run returns; early when ctx ends the run.
		sleepUntil(ctx, start)
		cfg.Window(false)
		sleepUntil(ctx, end)
		cfg.Window(true)
	}
	wg.Wait()
	close(stop)
	progress.Wait()

	r := &Result{ErrorKinds: map[string]int64{}, Duration: cfg.Duration}
	if now := time.Now(); now.Before(end) { // ctx ended early
		r.Duration = max(now.Sub(start), 0)
	}
	for _, wk := range workers {
		r.Calls += wk.calls
		r.Errors += wk.errs
		r.latencies = append(r.latencies, wk.latencies...)
		for k, n := range wk.kinds {
			if r.ErrorKinds[k] > 0 || len(r.ErrorKinds) < maxErrorKinds {
				r.ErrorKinds[k] += n
			}
		}
	}
	slices.Sort(r.latencies)
	return r
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// report prints a progress line per interval until stop is closed.
func report(cfg Config, start, end time.Time, done, failed *atomic.Int64, stop <-chan struct{}) {
	tick := time.NewTicker(cfg.ProgressInterval)
	defer tick.Stop()
	last, lastAt := int64(0), time.Now()
	unit := min(cfg.ProgressInterval, time.Second)
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			n := done.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			phase := "warmup"
			if !now.Before(start) {
				phase = fmt.Sprintf("%s/%s", min(now.Sub(start), end.Sub(start)).Round(unit), cfg.Duration)
			}
			fmt.Fprintf(cfg.Progress, "%s%s  %d calls  %.0f req/s  %d errors\n", label(cfg.Label), phase, n, rate, failed.Load())
		}
	}
}

func label(l string) string {
	if l == "" {
		return ""
	}
	return l + "  "
}
