package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The scope gate must judge exactly the tools go-sdk runs, so it reads a
// POST body as go-sdk's Streamable HTTP transport does (mcp/transport.go
// readBatch, go-sdk v1.8): an array is a batch, anything else one message,
// each decoded by jsonrpc.DecodeMessage with keys matched case-sensitively,
// and a tools/call's name is params.name, matched the same way.
//
// go-sdk's decoder (segmentio/encoding, through its internal/json) reads
// the first JSON value and ignores what follows, lets a repeated key
// overwrite the first, and nests up to 1000 levels. encoding/json, which
// the gate has, refuses trailing data and nests deeper. Rather than guess
// at each difference, the gate accepts only bodies both read alike: one
// JSON value, in valid UTF-8, with no key repeated in any object and at
// most maxDepth levels. Anything else is refused with 400 before go-sdk
// sees it. FuzzGateJudgesWhatGoSDKRuns holds the two readers together.

// maxDepth is go-sdk's nesting limit (internal/json defaultMaxDepth).
const maxDepth = 1000

// bodyError is a body the gate will not pass on; its text is the reason
// given to the client.
type bodyError struct{ reason string }

func (e *bodyError) Error() string { return e.reason }

// readCalls returns the tool name of every tools/call request in a POST
// body, in order, or a *bodyError when the body is not one the gate and
// go-sdk read alike. Messages go-sdk cannot decode call nothing here: go-sdk
// refuses the whole body for them, with the same decoder on the same bytes.
func readCalls(body []byte) ([]string, error) {
	if err := checkUnambiguous(body); err != nil {
		return nil, err
	}
	var names []string
	ids := map[jsonrpc.ID]bool{}
	for _, req := range requests(body) {
		// go-sdk answers one request per id and drops the others of a
		// batch unanswered; refuse rather than guess which one runs.
		if req.IsCall() {
			if ids[req.ID] {
				return nil, &bodyError{fmt.Sprintf("the request body repeats the JSON-RPC id %s", truncateName(fmt.Sprint(req.ID.Raw())))}
			}
			ids[req.ID] = true
		}
		if req.Method == "tools/call" {
			names = append(names, paramName(req.Params))
		}
	}
	return names, nil
}

// requests decodes the JSON-RPC requests and notifications of a body that
// checkUnambiguous accepted, as go-sdk does. A batch (2025-03-26 only) goes
// through go-sdk's own jsonrpc.DecodeMessage, whose ids the gate compares.
// A single message, every request since, is read with encoding/json into
// exact keys, which is the same on such a body and several times cheaper;
// only its method and params matter. A message go-sdk would refuse to
// decode may count here as a request: go-sdk then refuses the whole body,
// so at most a call is judged that would not have run.
func requests(body []byte) []*jsonrpc.Request {
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '[' {
		var m map[string]json.RawMessage
		var method string
		if json.Unmarshal(body, &m) != nil || m["method"] == nil || json.Unmarshal(m["method"], &method) != nil {
			return nil
		}
		return []*jsonrpc.Request{{Method: method, Params: m["params"]}}
	}
	var raws []json.RawMessage
	if json.Unmarshal(body, &raws) != nil {
		return nil // not an array after all; go-sdk refuses it
	}
	var out []*jsonrpc.Request
	for _, raw := range raws {
		if msg, err := jsonrpc.DecodeMessage(raw); err == nil {
			if req, ok := msg.(*jsonrpc.Request); ok {
				out = append(out, req)
			}
		}
	}
	return out
}

// paramName reads params.name with its key matched exactly, as go-sdk
// decodes CallToolParamsRaw. A name that is not a string reads as "", an
// unknown tool; go-sdk refuses such params.
func paramName(params json.RawMessage) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(params, &m) != nil {
		return ""
	}
	var name string
	if json.Unmarshal(m["name"], &name) != nil {
		return ""
	}
	return name
}

// checkUnambiguous reports why body is not exactly one JSON value in valid
// UTF-8 without repeated keys and within maxDepth, or nil. It runs on every
// POST, so the common case is cheap: json.Valid, then a scan for keys.
func checkUnambiguous(body []byte) error {
	if !utf8.Valid(body) {
		return &bodyError{"the request body is not valid UTF-8"}
	}
	if json.Valid(body) {
		return checkKeys(body)
	}
	if err := diagnose(body); err != nil {
		return err
	}
	return &bodyError{"the request body is not valid JSON"}
}

// checkKeys finds a key repeated in one object, or nesting beyond
// maxDepth, in a body json.Valid accepted. On valid JSON a string is an
// object's key exactly when it is the object's first token or follows a
// comma there.
func checkKeys(body []byte) error {
	type frame struct {
		obj     bool
		wantKey bool
		keys    []string // few in a JSON-RPC message: a slice beats a map
	}
	var stack []frame
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{', '[':
			if len(stack) == maxDepth {
				return &bodyError{fmt.Sprintf("the request body nests deeper than %d levels", maxDepth)}
			}
			stack = append(stack, frame{obj: body[i] == '{', wantKey: body[i] == '{'})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if n := len(stack); stack[n-1].obj {
				stack[n-1].wantKey = true
			}
		case '"':
			j, escaped := i+1, false
			for ; body[j] != '"'; j++ {
				if body[j] == '\\' {
					escaped = true
					j++
				}
			}
			if n := len(stack); n > 0 && stack[n-1].wantKey {
				key := string(body[i+1 : j])
				if escaped {
					json.Unmarshal(body[i:j+1], &key) // valid: cannot fail
				}
				if slices.Contains(stack[n-1].keys, key) {
					return &bodyError{fmt.Sprintf("the request body repeats the key %q in one object", truncateName(key))}
				}
				stack[n-1].keys = append(stack[n-1].keys, key)
				stack[n-1].wantKey = false
			}
			i = j
		}
	}
	return nil
}

// diagnose says what is wrong with a body json.Valid refused, reading it
// token by token.
func diagnose(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // any number JSON allows, however large
	// One frame per open object or array; an object's frame holds its keys
	// so far, and whether its next token is a key.
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			// A complete value returns below, so the body is empty or cut.
			return &bodyError{"the request body is empty or ends before its JSON value does"}
		}
		if err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				return &bodyError{fmt.Sprintf("the request body is not valid JSON (at byte %d)", syn.Offset)}
			}
			return &bodyError{"the request body is not valid JSON"}
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				if stack[n-1].keys[key] {
					return &bodyError{fmt.Sprintf("the request body repeats the key %q in one object", truncateName(key))}
				}
				stack[n-1].keys[key] = true
				stack[n-1].wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == maxDepth {
				return &bodyError{fmt.Sprintf("the request body nests deeper than %d levels", maxDepth)}
			}
			f := frame{}
			if tok == json.Delim('{') {
				f = frame{keys: map[string]bool{}, wantKey: true}
			}
			stack = append(stack, f)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: its object wants a key next; at the top level,
		// nothing may follow.
		if n := len(stack); n > 0 {
			if stack[n-1].keys != nil {
				stack[n-1].wantKey = true
			}
			continue
		}
		if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
			return &bodyError{"the request body holds data after the JSON-RPC message"}
		}
		return nil
	}
}
