package load

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// client is what the sessions share.
type client struct {
	http *http.Client
	url  string
}

// session is one caller, used by one goroutine at a time: a token and,
// on a legacy revision, the MCP session it opened. On a per-request
// revision (2026-07-28) there is nothing to open: every request carries
// the version in its headers and in params._meta.
type session struct {
	cl     *client
	header http.Header // sent with every request; the transport does not change it
	// meta is the params._meta member every request of a per-request
	// revision carries, with its leading comma; nil on a legacy revision.
	meta   []byte
	nextID int64
	body   []byte
	resp   bytes.Buffer
	msg    message
}

// perRequest reports whether version is a revision without initialize,
// where each request names its version (2026-07-28 and later; the
// revisions are dates, so they order as strings).
func perRequest(version string) bool { return version >= "2026-07-28" }

// newSession is a caller with token, speaking version.
func newSession(cl *client, token, version string) *session {
	s := &session{cl: cl, header: http.Header{
		"Content-Type":  {"application/json"},
		"Accept":        {"application/json, text/event-stream"},
		"Authorization": {"Bearer " + token},
	}}
	if perRequest(version) {
		// As go-sdk v1.8.0's client sends them: the standard headers of
		// the Streamable HTTP transport (Mcp-Name is set per call) and the
		// version and capabilities in _meta, which must match the header.
		s.header["Mcp-Protocol-Version"] = []string{version}
		s.header["Mcp-Method"] = []string{"tools/call"}
		s.meta = append(s.meta, `,"_meta":{"io.modelcontextprotocol/protocolVersion":`...)
		s.meta = strconv.AppendQuote(s.meta, version)
		s.meta = append(s.meta, `,"io.modelcontextprotocol/clientInfo":{"name":"crm-mcp-load","version":"bench"},"io.modelcontextprotocol/clientCapabilities":{}}`...)
	}
	return s
}

// message is the part of a JSON-RPC message the client looks at.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result *struct {
		IsError         bool   `json:"isError"`
		ProtocolVersion string `json:"protocolVersion"`
	} `json:"result"`
}

// open opens cfg.Sessions sessions, up to 16 at a time; on a per-request
// revision, where there is no session, each caller asks server/discover
// once instead.
func (cl *client) open(ctx context.Context, cfg Config) ([]*session, error) {
	sessions := make([]*session, cfg.Sessions)
	errs := make([]error, cfg.Sessions)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s := newSession(cl, cfg.Tokens[i%len(cfg.Tokens)], cfg.ProtocolVersion)
			// With nothing to open, server/discover tells a refused token
			// before the run, as initialize does.
			start := s.initialize
			if s.meta != nil {
				start = func(ctx context.Context, _ string) error { return s.discover(ctx) }
			}
			if err := start(ctx, cfg.ProtocolVersion); err != nil {
				errs[i] = fmt.Errorf("session %d: %w", i+1, err)
				return
			}
			sessions[i] = s
		}()
	}
	wg.Wait()
	opened := sessions[:0]
	for _, s := range sessions {
		if s != nil {
			opened = append(opened, s)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return opened, fmt.Errorf("opening sessions at %s: %w", cl.url, firstErr(errs))
	}
	return opened, nil
}

func firstErr(errs []error) error {
	n := 0
	var first error
	for _, e := range errs {
		if e != nil {
			if first == nil {
				first = e
			}
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w (and %d more)", first, n-1)
	}
	return first
}

// closeAll ends the sessions (DELETE), so a server is not left holding
// them for the next run.
func (cl *client) closeAll(sessions []*session) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, s := range sessions {
		if s.header.Get("Mcp-Session-Id") == "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			req, err := http.NewRequestWithContext(ctx, http.MethodDelete, cl.url, nil)
			if err != nil {
				return
			}
			req.Header = s.header
			if resp, err := cl.http.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

func (s *session) initialize(ctx context.Context, version string) error {
	s.nextID++
	s.body = append(s.body[:0], `{"jsonrpc":"2.0","id":`...)
	s.body = strconv.AppendInt(s.body, s.nextID, 10)
	s.body = append(s.body, `,"method":"initialize","params":{"protocolVersion":`...)
	s.body = strconv.AppendQuote(s.body, version)
	s.body = append(s.body, `,"capabilities":{},"clientInfo":{"name":"crm-mcp-load","version":"bench"}}}`...)
	resp, err := s.post(ctx)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if err := s.answer(resp, s.nextID); err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
		s.header["Mcp-Session-Id"] = []string{id}
	}
	v := s.msg.Result.ProtocolVersion
	if v == "" {
		return errors.New("initialize: the result names no protocolVersion")
	}
	s.header["Mcp-Protocol-Version"] = []string{v}

	s.body = append(s.body[:0], `{"jsonrpc":"2.0","method":"notifications/initialized"}`...)
	resp, err = s.post(ctx)
	if err != nil {
		return fmt.Errorf("notifications/initialized: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("notifications/initialized: %s", statusError(resp.StatusCode, s.resp.Bytes()))
	}
	return nil
}

// call makes one tools/call and returns nil when it succeeded.
func (s *session) call(ctx context.Context, c Call) error {
	s.nextID++
	s.body = append(s.body[:0], `{"jsonrpc":"2.0","id":`...)
	s.body = strconv.AppendInt(s.body, s.nextID, 10)
	s.body = append(s.body, `,"method":"tools/call","params":{"name":`...)
	s.body = strconv.AppendQuote(s.body, c.Tool)
	s.body = append(s.body, `,"arguments":`...)
	if len(c.Args) == 0 {
		s.body = append(s.body, `{}`...)
	} else {
		s.body = append(s.body, c.Args...)
	}
	s.body = append(s.body, s.meta...)
	s.body = append(s.body, `}}`...)
	if s.meta != nil {
		if v := s.header["Mcp-Name"]; len(v) != 1 || v[0] != c.Tool {
			s.header["Mcp-Name"] = []string{c.Tool}
		}
	}
	resp, err := s.post(ctx)
	if err != nil {
		return err
	}
	if err := s.answer(resp, s.nextID); err != nil {
		return fmt.Errorf("%s: %w", c.Tool, err)
	}
	if s.msg.Result.IsError {
		return fmt.Errorf("%s: the tool answered isError: %s", c.Tool, toolText(s.resp.Bytes()))
	}
	return nil
}

// post sends s.body and reads the whole response into s.resp.
func (s *session) post(ctx context.Context) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cl.url, bytes.NewReader(s.body))
	if err != nil {
		return nil, err
	}
	req.Header = s.header
	resp, err := s.cl.http.Do(req)
	if err != nil {
		return nil, errors.New("no answer: " + trimURLError(err))
	}
	defer resp.Body.Close()
	s.resp.Reset()
	if _, err := s.resp.ReadFrom(resp.Body); err != nil {
		return nil, errors.New("reading the answer: " + trimURLError(err))
	}
	return resp, nil
}

// answer finds the response to request id in s.resp, a JSON body or an
// event stream, and leaves it in s.msg.
func (s *session) answer(resp *http.Response, id int64) error {
	if resp.StatusCode != http.StatusOK {
		// A 2026-07-28 server answers some errors (an unknown tool) with
		// 400 and the JSON-RPC error: reported without its id, so that
		// the same failure counts as one kind.
		if s.decode(s.resp.Bytes()) == nil && s.msg.Error != nil {
			return fmt.Errorf("JSON-RPC error %d: %s (HTTP %d)", s.msg.Error.Code, s.msg.Error.Message, resp.StatusCode)
		}
		return errors.New(statusError(resp.StatusCode, s.resp.Bytes()))
	}
	want := strconv.AppendInt(nil, id, 10)
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		if err := s.decode(s.resp.Bytes()); err != nil {
			return err
		}
		if !bytes.Equal(s.msg.ID, want) {
			return fmt.Errorf("the answer has id %s, want %s", s.msg.ID, want)
		}
		return s.check()
	case "text/event-stream":
		var data []byte
		for rest := s.resp.Bytes(); len(rest) > 0; {
			var line []byte
			line, rest, _ = bytes.Cut(rest, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, bytes.TrimPrefix(d, []byte(" "))...)
				continue
			}
			if len(line) > 0 || len(data) == 0 {
				continue
			}
			// A blank line ends an event.
			if err := s.decode(data); err != nil {
				return err
			}
			data = data[:0]
			if s.msg.Method == "" && bytes.Equal(s.msg.ID, want) {
				return s.check()
			}
		}
		return fmt.Errorf("the event stream ended without the answer to request %s", want)
	default:
		return fmt.Errorf("HTTP 200 with Content-Type %q, want application/json or text/event-stream", resp.Header.Get("Content-Type"))
	}
}

func (s *session) decode(b []byte) error {
	s.msg = message{}
	if err := json.Unmarshal(b, &s.msg); err != nil {
		return fmt.Errorf("the answer is not JSON-RPC: %v", err)
	}
	return nil
}

func (s *session) check() error {
	switch {
	case s.msg.Error != nil:
		return fmt.Errorf("JSON-RPC error %d: %s", s.msg.Error.Code, s.msg.Error.Message)
	case s.msg.Result == nil:
		return errors.New("the answer has neither result nor error")
	}
	return nil
}

// statusError describes a refused request by its status and the start of
// its body (servers do not echo tokens).
func statusError(code int, body []byte) string {
	const max = 120
	b := bytes.TrimSpace(body)
	if len(b) > max {
		b = append(b[:max:max], "..."...)
	}
	return fmt.Sprintf("HTTP %d %s: %s", code, http.StatusText(code), b)
}

// toolText is the first text content of a tool result in body, shortened.
func toolText(body []byte) string {
	i := bytes.Index(body, []byte(`"text":`))
	if i < 0 {
		return "(no text)"
	}
	var s string
	if err := json.NewDecoder(bytes.NewReader(body[i+len(`"text":`):])).Decode(&s); err != nil {
		return "(no text)"
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

// trimURLError drops the method and URL net/http puts in front of an
// error, which repeat on every line of a report.
func trimURLError(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return err.Error()
}

// discover asks a per-request revision's server/discover.
func (s *session) discover(ctx context.Context) error {
	s.nextID++
	s.body = append(s.body[:0], `{"jsonrpc":"2.0","id":`...)
	s.body = strconv.AppendInt(s.body, s.nextID, 10)
	s.body = append(s.body, `,"method":"server/discover","params":{`...)
	s.body = append(s.body, s.meta[1:]...) // no comma: _meta is the only member
	s.body = append(s.body, `}}`...)
	s.header["Mcp-Method"] = []string{"server/discover"}
	defer func() { s.header["Mcp-Method"] = []string{"tools/call"} }()
	resp, err := s.post(ctx)
	if err != nil {
		return fmt.Errorf("server/discover: %w", err)
	}
	if err := s.answer(resp, s.nextID); err != nil {
		return fmt.Errorf("server/discover: %w", err)
	}
	return nil
}

// Ping tells whether the server at url is up and accepts token, speaking
// version ("" means DefaultProtocolVersion): on a legacy revision it
// opens a session and closes it again; on a per-request one it asks
// server/discover.
func Ping(ctx context.Context, url, token, version string) error {
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &client{http: &http.Client{Transport: tr}, url: url}
	version = cmp.Or(version, DefaultProtocolVersion)
	if perRequest(version) {
		return newSession(cl, token, version).discover(ctx)
	}
	sessions, err := cl.open(ctx, Config{Sessions: 1, Tokens: []string{token}, ProtocolVersion: version})
	cl.closeAll(sessions)
	return err
}
