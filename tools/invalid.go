package tools

import (
	"context"
	"encoding/json"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// Every tools/call the server receives leaves a line in the audit trail.
// A call that a tool's handler judges records its own lines (decisions,
// tool.called). Two kinds never reach a judgement: arguments the input
// schema refuses ({"id":"6"}, an extra key, a missing id), which the
// handler turns into a tool error before anything is decided, and a tool
// that does not exist, which go-sdk refuses itself. recordInvalid writes
// tool.called with outcome invalid for those: any call during which
// nothing was recorded. Like every outcome, that line is not synced on
// its own, so refusing a bad call stays cheap.

// recordedKey marks a tools/call in progress; the flag says whether
// anything was recorded about it.
type recordedKey struct{}

// maxInvalidName bounds the name of an unknown tool as written: the name
// is the client's, and a line must not grow with what a client sends.
const maxInvalidName = 64

// recordInvalid installs the middleware on the catalog's tools and
// returns it. It wraps the record function the tools write through, so
// that it sees every line a call writes.
func (c *catalog) recordInvalid() mcp.Middleware {
	record := c.d.record
	if record == nil {
		return func(next mcp.MethodHandler) mcp.MethodHandler { return next }
	}
	c.d.record = func(ctx context.Context, e audit.Event) error {
		if seen, ok := ctx.Value(recordedKey{}).(*atomic.Bool); ok {
			seen.Store(true)
		}
		return record(ctx, e)
	}
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			call, ok := req.(*mcp.CallToolRequest)
			if method != "tools/call" || !ok || call.Params == nil {
				return next(ctx, method, req)
			}
			seen := new(atomic.Bool)
			res, err := next(context.WithValue(ctx, recordedKey{}, seen), method, req)
			if !seen.Load() {
				c.writeInvalid(ctx, call, record)
			}
			return res, err
		}
	}
}

// writeInvalid records a call refused before any judgement. The refusal
// stands whatever happens to its line.
func (c *catalog) writeInvalid(ctx context.Context, call *mcp.CallToolRequest, record func(context.Context, audit.Event) error) {
	name := call.Params.Name
	if c.byName[name] == nil {
		name = cutName(name)
	}
	ev := audit.Event{RequestID: newRequestID(), Kind: audit.ToolCalled, Outcome: "invalid", Tool: name}
	if ev.Tool == "" {
		ev.Tool = `""`
	}
	if json.Valid(call.Params.Arguments) {
		ev.Args = call.Params.Arguments
	}
	if call.Extra != nil {
		if tok := resourceserver.TokenFromInfo(call.Extra.TokenInfo); tok != nil {
			ev.Issuer, ev.Subject, ev.ClientID, ev.JTI, ev.TokenFingerprint = tok.Issuer, tok.Subject, tok.ClientID, tok.JTI, tok.Fingerprint
		}
	}
	if err := record(ctx, ev); err != nil {
		c.d.log.ErrorContext(ctx, "the audit trail refused the line of an invalid call", "error", err.Error())
	}
}

// cutName shortens a client's unknown tool name for the trail.
func cutName(name string) string {
	if len(name) <= maxInvalidName {
		return name
	}
	i := maxInvalidName
	for i > 0 && name[i]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		i--
	}
	return name[:i] + "..."
}
