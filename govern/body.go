package govern

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"
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
	raws := []json.RawMessage{body}
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		raws = nil
		if json.Unmarshal(body, &raws) != nil {
			return nil, nil // unreachable for a checked array; go-sdk answers
		}
	}
	var names []string
	ids := map[string]bool{}
	for _, raw := range raws {
		method, params, ok := readRequest(raw)
		if !ok {
			continue
		}
		// go-sdk answers one request per id and drops the others of a
		// batch unanswered; refuse rather than guess which one runs.
		if id, ok := requestID(raw); ok && len(raws) > 1 {
			if ids[id] {
				return nil, &bodyError{fmt.Sprintf("the request body repeats the JSON-RPC id %s", cutName(id[2:]))}
			}
			ids[id] = true
		}
		if method == "tools/call" {
			names = append(names, paramName(params))
		}
	}
	return names, nil
}

// requestID is the id of a request readRequest accepted, as go-sdk tells
// ids apart (a number and a string never equal, 1 and 1.0 do), or false
// for none (a notification, or a null id).
func requestID(raw []byte) (string, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m["id"] == nil {
		return "", false
	}
	var id any
	if json.Unmarshal(m["id"], &id) != nil {
		return "", false
	}
	switch v := id.(type) {
	case float64:
		return "n:" + strconv.FormatFloat(v, 'g', -1, 64), true
	case string:
		return "s:" + v, true
	}
	return "", false
}

// readRequest reads one message as jsonrpc.DecodeMessage does (go-sdk
// v1.8, internal/jsonrpc2/messages.go), for a body checkUnambiguous
// passed: an object, its keys matched exactly; "jsonrpc" the string "2.0";
// an "id", if any, null, a number or a string; a "method" key, which makes
// it a request, whose value is a string. It returns the method and the
// params of a request, and ok false for anything else: a response, or a
// message go-sdk cannot decode either (and so refuses the whole body for).
//
// It decodes into a map of raw values with encoding/json rather than with
// go-sdk's decoder, which allocates a 32 KiB read buffer for every value it
// decodes (twice per message here).
//
// The "error" member of a request is not checked: where go-sdk could not
// decode it, the gate judges a call go-sdk then refuses, which is harmless,
// where the reverse would let a call through unjudged.
func readRequest(raw []byte) (method string, params json.RawMessage, ok bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return "", nil, false
	}
	var version string
	if v, ok := m["jsonrpc"]; ok && json.Unmarshal(v, &version) != nil {
		return "", nil, false
	}
	if version != "2.0" {
		return "", nil, false
	}
	if v, ok := m["id"]; ok {
		var id any
		if json.Unmarshal(v, &id) != nil {
			return "", nil, false
		}
		switch id.(type) {
		case nil, float64, string:
		default:
			return "", nil, false
		}
	}
	v, ok := m["method"]
	if !ok || json.Unmarshal(v, &method) != nil {
		return "", nil, false
	}
	return method, m["params"], true
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
// UTF-8 without repeated keys and within maxDepth, or nil.
//
// A body json.Valid accepts (one value, whitespace around it) is checked
// by checkKeys in one pass; any other is walked token by token by
// explainInvalid, which says what is wrong.
func checkUnambiguous(body []byte) error {
	if !utf8.Valid(body) {
		return &bodyError{"the request body is not valid UTF-8"}
	}
	if json.Valid(body) {
		return checkKeys(body)
	}
	if err := explainInvalid(body); err != nil {
		return err
	}
	return &bodyError{"the request body is not valid JSON"} // unreachable: explainInvalid finds why
}

// checkKeys reports a repeated key or a nesting deeper than maxDepth in
// body, one valid JSON value, or nil. It reads only the structure: quotes,
// brackets, colons and commas; in valid JSON a string right after '{' or
// a ',' inside an object is a key.
func checkKeys(body []byte) error {
	type frame struct {
		object bool
		first  int             // this object's keys are keys[first:]
		set    map[string]bool // instead, for an object with many keys
	}
	const linear = 16 // keys compared one by one up to this many
	var (
		stack   []frame
		keys    [][]byte
		wantKey bool
	)
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"':
			end := i + 1
			escaped := false
			for ; body[end] != '"'; end++ {
				if body[end] == '\\' {
					escaped = true
					end++
				}
			}
			if wantKey {
				wantKey = false
				key := body[i+1 : end]
				if escaped {
					var k string
					if json.Unmarshal(body[i:end+1], &k) != nil {
						return &bodyError{"the request body is not valid JSON"} // unreachable for valid JSON
					}
					key = []byte(k)
				}
				f := &stack[len(stack)-1]
				if f.set == nil && len(keys)-f.first == linear {
					f.set = make(map[string]bool, 2*linear)
					for _, k := range keys[f.first:] {
						f.set[string(k)] = true
					}
				}
				seen := f.set[string(key)]
				if f.set == nil {
					seen = slices.ContainsFunc(keys[f.first:], func(k []byte) bool { return bytes.Equal(k, key) })
				}
				if seen {
					return &bodyError{fmt.Sprintf("the request body repeats the key %q in one object", cutName(string(key)))}
				}
				if f.set != nil {
					f.set[string(key)] = true
				} else {
					keys = append(keys, key)
				}
			}
			i = end
		case '{', '[':
			if len(stack) == maxDepth {
				return &bodyError{fmt.Sprintf("the request body nests deeper than %d levels", maxDepth)}
			}
			stack = append(stack, frame{object: body[i] == '{', first: len(keys)})
			wantKey = body[i] == '{'
		case '}', ']':
			keys = keys[:stack[len(stack)-1].first]
			stack = stack[:len(stack)-1]
		case ',':
			wantKey = stack[len(stack)-1].object
		}
	}
	return nil
}

// explainInvalid walks a body that is not one valid JSON value token by
// token and says why, as checkUnambiguous would for any body.
func explainInvalid(body []byte) error {
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
					return &bodyError{fmt.Sprintf("the request body repeats the key %q in one object", cutName(key))}
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
