package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Reconnection backoff: the first retry of an upstream that failed may
// come at once (the next call), later ones wait longer, up to maxBackoff,
// so that a dead upstream costs a refusal per call, not a dial.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
	// connectTimeout bounds dialling and initializing an upstream.
	connectTimeout = 10 * time.Second
	// maxReply bounds what the gateway reads of one reply from an
	// upstream: a JSON response body, or one event of a stream (go-sdk
	// reads either whole before it decodes it). With MaxCalls calls in
	// flight, an upstream can make the gateway hold MaxCalls × maxReply.
	maxReply = 16 << 20
)

// errDown is the error a call gets while its upstream cannot be reached.
var errDown = errors.New("unreachable")

// conn is the gateway's one client session with an upstream, made on
// first use and again, with backoff, after it breaks. Safe for concurrent
// use.
type conn struct {
	up        *Upstream
	log       *slog.Logger
	transport http.RoundTripper
	baseEnv   []string
	version   string
	calls     chan struct{} // a place per call in flight (MaxCalls)

	usersMu sync.Mutex
	users   map[string]int // calls in flight per user, none kept at 0

	mu       sync.Mutex
	cs       *mcp.ClientSession
	dialing  chan struct{} // closed when the dial in progress ends
	failures int
	retryAt  time.Time
	lastErr  string // for the log and /readyz: never a header value
	closed   bool

	// served are the upstream's tools as the gateway registered them, by
	// the upstream's name; changed, those the upstream has since listed
	// with another input schema or annotations. A changed tool is refused
	// until the gateway restarts: its push would describe the old tool
	// (defaults, rows, the approver's picture) while the upstream runs the
	// new one.
	served   map[string]*mcp.Tool
	changed  map[string]bool
	onChange func(tool string) // the gateway records a Problem

	// progress routes the upstream's progress notifications to the
	// client calls that asked for them, by the token the gateway sent.
	progress sync.Map // string -> func(*mcp.ProgressNotificationParams)
	seq      atomic.Int64
}

func newConn(up *Upstream, transport http.RoundTripper, baseEnv []string, version string, log *slog.Logger) *conn {
	return &conn{up: up, transport: transport, baseEnv: baseEnv, version: version, log: log.With("upstream", up.Name), calls: make(chan struct{}, up.MaxCalls),
		served: map[string]*mcp.Tool{}, changed: map[string]bool{}, users: map[string]int{}}
}

// session returns the live session, dialling when there is none and the
// backoff allows. Concurrent callers share one dial.
func (c *conn) session(ctx context.Context) (*mcp.ClientSession, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errors.New("the gateway is shutting down")
		}
		if c.cs != nil {
			cs := c.cs
			c.mu.Unlock()
			return cs, nil
		}
		if wait := c.dialing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if time.Now().Before(c.retryAt) {
			c.mu.Unlock()
			return nil, errDown
		}
		done := make(chan struct{})
		c.dialing = done
		c.mu.Unlock()

		cs, err := c.dial(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(done)
		if err != nil {
			c.failedLocked(err)
			c.mu.Unlock()
			return nil, errDown
		}
		if c.closed {
			c.mu.Unlock()
			cs.Close()
			return nil, errors.New("the gateway is shutting down")
		}
		c.cs, c.failures, c.lastErr, c.retryAt = cs, 0, "", time.Time{}
		c.mu.Unlock()
		c.log.Info("connected to the upstream")
		return cs, nil
	}
}

// failedLocked notes a failed dial or a broken session and sets when the
// next dial may be tried.
func (c *conn) failedLocked(err error) {
	c.failures++
	backoff := maxBackoff
	if c.failures < 8 {
		backoff = min(maxBackoff, minBackoff<<(c.failures-1))
	}
	if c.failures == 1 {
		backoff = 0 // the next call tries again at once: a restart, a dropped session
	}
	c.retryAt = time.Now().Add(backoff)
	c.lastErr = err.Error()
	c.log.Warn("the upstream is unreachable", "error", err.Error(), "retry_in", backoff.String())
}

// broke drops cs after a transport failure, so that the next call dials.
func (c *conn) broke(cs *mcp.ClientSession, err error) {
	c.mu.Lock()
	if c.cs == cs {
		c.cs = nil
		c.failedLocked(err)
	}
	c.mu.Unlock()
	cs.Close()
}

// dial connects and initializes a session, within connectTimeout.
func (c *conn) dial(ctx context.Context) (*mcp.ClientSession, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "crm-mcp-gateway", Version: c.version}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			if tok, ok := req.Params.ProgressToken.(string); ok {
				if f, ok := c.progress.Load(tok); ok {
					f.(func(*mcp.ProgressNotificationParams))(req.Params)
				}
			}
		},
	})
	var t mcp.Transport
	if c.up.URL != "" {
		t = &mcp.StreamableClientTransport{
			Endpoint: c.up.URL,
			// Only the policy's headers: never the client's token, nor
			// any other header of the client's request (the Gate's
			// internal ones among them).
			HTTPClient:   &http.Client{Transport: &withHeaders{h: c.up.headers, next: c.transport, log: c.log}, CheckRedirect: noRedirects},
			MaxRetries:   -1, // a broken session is dialled again, with backoff
			MaxEventSize: maxReply,
			// Server-initiated messages would have no client to go to.
			DisableStandaloneSSE: true,
		}
	} else {
		cmd := exec.Command(c.up.Command[0], c.up.Command[1:]...)
		// Not the gateway's environment, which holds its own secrets
		// (Duo keys, the database URL): the base the caller chose, and
		// what the policy gives this upstream.
		cmd.Env = append(append([]string{}, c.baseEnv...), c.up.env...)
		cmd.Stderr = &logWriter{log: c.log}
		t = &mcp.CommandTransport{Command: cmd}
	}
	cs, err := client.Connect(ctx, t, nil)
	if err != nil {
		return nil, err
	}
	// A new session may be a new upstream (restarted, upgraded): what it
	// serves is compared with what was registered before any call uses it.
	if err := c.verify(ctx, cs); err != nil {
		cs.Close()
		return nil, err
	}
	return cs, nil
}

// tools lists the upstream's tools, every page.
func (c *conn) tools(ctx context.Context) (map[string]*mcp.Tool, error) {
	cs, err := c.session(ctx)
	if err != nil {
		return nil, c.named(err)
	}
	out, err := c.list(ctx, cs)
	if err != nil {
		if isTransport(err) {
			c.broke(cs, err)
		}
		return nil, err
	}
	return out, nil
}

func (c *conn) list(ctx context.Context, cs *mcp.ClientSession) (map[string]*mcp.Tool, error) {
	out := map[string]*mcp.Tool{}
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("upstream %s: listing its tools: %w", c.up.Name, err)
		}
		if len(out) >= 10000 {
			return nil, fmt.Errorf("upstream %s lists more than 10000 tools", c.up.Name)
		}
		out[t.Name] = t
	}
	return out, nil
}

// serve notes t as registered, as the upstream listed it.
func (c *conn) serve(t *mcp.Tool) {
	c.mu.Lock()
	c.served[t.Name] = t
	c.mu.Unlock()
}

// verify lists the upstream's tools on cs and marks changed each served
// tool whose input schema or annotations differ from what was registered.
// A tool no longer offered is left alone: the upstream refuses its calls.
func (c *conn) verify(ctx context.Context, cs *mcp.ClientSession) error {
	c.mu.Lock()
	n := len(c.served)
	c.mu.Unlock()
	if n == 0 {
		return nil // nothing registered yet: attach lists and registers
	}
	now, err := c.list(ctx, cs)
	if err != nil {
		return err
	}
	var changed []string
	c.mu.Lock()
	for name, was := range c.served {
		if t := now[name]; t != nil && !c.changed[name] && !sameShape(was, t) {
			c.changed[name] = true
			changed = append(changed, name)
		}
	}
	c.mu.Unlock()
	for _, name := range changed {
		c.log.Error("an upstream tool changed its input schema or annotations; it is refused until the gateway restarts", "tool", name)
		if c.onChange != nil {
			c.onChange(name)
		}
	}
	return nil
}

// sameShape: a and b have the same input schema and annotations, the
// parts of a tool the gateway's decision and push are made from.
func sameShape(a, b *mcp.Tool) bool {
	for _, pair := range [][2]any{{a.InputSchema, b.InputSchema}, {a.Annotations, b.Annotations}} {
		x, err1 := json.Marshal(pair[0])
		y, err2 := json.Marshal(pair[1])
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

func (c *conn) isServed(tool string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.served[tool] != nil
}

func (c *conn) isChanged(tool string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed[tool]
}

// call forwards one call. Its error is a *callError, written for the
// client: it names the upstream and never holds the upstream's URL,
// headers or transport detail (those go to the log).
func (c *conn) call(ctx context.Context, user, tool string, args any, progress func(*mcp.ProgressNotificationParams)) (*mcp.CallToolResult, error) {
	if !c.enter(user) {
		return nil, c.userErr(fmt.Sprintf("you have %d calls in progress to the upstream %s, your share of the %d the gateway sends it at once; try again when one ends", c.share(), c.up.Name, c.up.MaxCalls))
	}
	defer c.leave(user)
	select {
	case c.calls <- struct{}{}:
		defer func() { <-c.calls }()
	default:
		return nil, c.userErr(fmt.Sprintf("the upstream %s has %d calls in progress, the most the gateway sends it at once; try again shortly", c.up.Name, c.up.MaxCalls))
	}
	ctx, cancel := context.WithTimeout(ctx, c.up.Timeout)
	defer cancel()
	cs, err := c.session(ctx)
	if err != nil {
		return nil, c.named(err)
	}
	if c.isChanged(tool) {
		return nil, c.userErr(fmt.Sprintf("the upstream %s has changed this tool (its input schema or annotations) since the gateway listed it, so an approval could not show what it would do; the gateway refuses it until an operator restarts it", c.up.Name))
	}
	params := &mcp.CallToolParams{Name: tool, Arguments: args}
	if progress != nil {
		tok := "gw-" + strconv.FormatInt(c.seq.Add(1), 10)
		c.progress.Store(tok, progress)
		defer c.progress.Delete(tok)
		params.SetProgressToken(tok)
	}
	res, err := cs.CallTool(ctx, params)
	if err == nil {
		return res, nil
	}
	var rpc *jsonrpc.Error
	switch {
	case errors.As(err, &rpc) && !isTransport(err):
		// The upstream refused the call itself (unknown tool, invalid
		// params): its words, bounded.
		return nil, c.userErr(fmt.Sprintf("the upstream %s refused the call: %s", c.up.Name, bounded(rpc.Message, 500)))
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		c.log.Warn("an upstream call timed out", "tool", tool, "timeout", c.up.Timeout.String())
		return nil, &callError{msg: fmt.Sprintf("the upstream %s did not answer within %s", c.up.Name, c.up.Timeout), mayHaveRun: true}
	case ctx.Err() != nil:
		return nil, ctx.Err() // the client cancelled: govern says so
	}
	c.broke(cs, err)
	if neverSent(err) {
		return nil, c.named(errDown)
	}
	return nil, &callError{msg: fmt.Sprintf("the connection to the upstream %s failed during the call", c.up.Name), mayHaveRun: true}
}

// neverSent: err is a failure to connect, so the upstream cannot have
// seen the call. Any other failure after the call was sent may have come
// after the upstream ran it.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// share is how many of the upstream's MaxCalls one user may hold, so that
// one user (16 requests in flight allowed) cannot take every place.
func (c *conn) share() int { return max(1, c.up.MaxCalls/4) }

func (c *conn) enter(user string) bool {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	if c.users[user] >= c.share() {
		return false
	}
	c.users[user]++
	return true
}

func (c *conn) leave(user string) {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	if c.users[user]--; c.users[user] <= 0 {
		delete(c.users, user)
	}
}

// named turns a session failure into the client's error.
func (c *conn) named(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, errDown) {
		return c.userErr(fmt.Sprintf("the upstream %s is unreachable; the gateway tries it again with backoff, so try again later", c.up.Name))
	}
	return c.userErr(fmt.Sprintf("the upstream %s: %v", c.up.Name, err))
}

// status is the upstream's reachability as last seen.
func (c *conn) status() UpstreamStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := UpstreamStatus{Name: c.up.Name, Reachable: c.cs != nil}
	if !st.Reachable {
		st.State = "not connected yet"
		if c.failures > 0 {
			st.State = "unreachable"
		}
	} else {
		st.State = "connected"
	}
	return st
}

// ping checks a live session and drops it when it fails, so that a dead
// upstream shows in /readyz without waiting for a call.
func (c *conn) ping(ctx context.Context) {
	c.mu.Lock()
	cs := c.cs
	c.mu.Unlock()
	if cs == nil {
		if _, err := c.session(ctx); err != nil {
			return
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := cs.Ping(ctx, nil); err != nil && ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
		c.broke(cs, err)
		return
	}
	// A stateless upstream can be replaced without the session breaking:
	// its tools are compared here too, at each health check.
	if err := c.verify(ctx, cs); err != nil && isTransport(err) {
		c.broke(cs, err)
	}
}

func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	cs := c.cs
	c.cs = nil
	c.mu.Unlock()
	if cs != nil {
		cs.Close()
	}
}

// isTransport: an error of the connection rather than of the request.
// go-sdk reports some as JSON-RPC errors of its own: rejected by the
// transport (an HTTP failure, a lost session: the upstream never saw the
// call), client or server closing.
func isTransport(err error) bool {
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) {
		return true
	}
	switch rpc.Code {
	case -32003, -32004, -32005:
		return true
	}
	return false
}

// userErr is text for the client, about a call the upstream was not sent
// or refused.
func (c *conn) userErr(msg string) error { return &callError{msg: msg} }

// callError is a failed call, in words for the client. mayHaveRun: the
// call was sent and then lost (a timeout, a broken connection), so the
// client must not be told it did not run.
type callError struct {
	msg        string
	mayHaveRun bool
}

func (e *callError) Error() string { return e.msg }

func bounded(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// noRedirects refuses every redirect. withHeaders sets the policy's
// headers on each request the client sends, redirected ones included, so
// following a redirect would hand the gateway's own credential to
// whatever host (or plain-http URL) the upstream names, past Go's
// stripping of Authorization across hosts. An MCP endpoint has one URL.
func noRedirects(*http.Request, []*http.Request) error {
	return errors.New("redirects are not followed")
}

// withHeaders sends the policy's headers, set rather than added, so that
// nothing else can stand in for them.
type withHeaders struct {
	h    http.Header
	next http.RoundTripper
	log  *slog.Logger
}

func (t *withHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(t.h) > 0 {
		r = r.Clone(r.Context())
		for k, v := range t.h {
			r.Header[k] = v
		}
	}
	resp, err := t.next.RoundTrip(r)
	// A stream is bounded per event (MaxEventSize), since a long call's
	// progress may add up to more; any other body as a whole.
	if err == nil && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body = &boundedBody{ReadCloser: resp.Body, left: maxReply, log: t.log}
	}
	return resp, err
}

// boundedBody fails a read past left bytes.
// go-sdk does not keep the error it gets from the body (the call fails
// as a broken connection), so the reason is logged here.
type boundedBody struct {
	io.ReadCloser
	left int64
	log  *slog.Logger
}

var errTooLarge = fmt.Errorf("the reply is larger than %d MiB, the most the gateway reads", maxReply>>20)

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the bound from a larger one.
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			if b.log != nil {
				b.log.Warn("an upstream reply was cut", "error", errTooLarge.Error())
			}
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// logWriter logs a stdio upstream's standard error a line at a time,
// bounded, as its own words.
type logWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				w.log.Debug("upstream stderr", "line", bounded(string(w.buf), 500))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.log.Debug("upstream stderr", "line", bounded(string(w.buf[:i]), 500))
		w.buf = w.buf[i+1:]
	}
}
