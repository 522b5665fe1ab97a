package tools

import (
	"bytes"
	"io"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A POST is answered with an event stream only when it can need one.
//
// go-sdk writes a response as an event stream unless its handler is made
// with JSONResponse, and the choice is the handler's, not the request's.
// The stream costs a call about a tenth of its CPU (the event framing and
// a flush per message) and is there only for the messages that precede
// the answer: this server sends none but the progress of a tools/call
// waiting on a Duo Push, and only to a request that carries a progress
// token (govern's decide.go). A request without one can receive nothing
// before its answer, so it gets the answer as application/json, which
// every revision allows (Accept lists both).
//
// The choice is made from the request's own bytes, never from what the
// call reaches: a restricted record, a push or a refusal does not change
// the response's format. It errs towards the stream: a body with the
// bytes "progressToken" anywhere, or any escape (a key may be spelled
// with one), gets the stream, as does a body too large to read here.

// streamWhenNeeded routes each POST to stream (go-sdk's handler with event
// streams) or plain (the same server with JSONResponse); everything else
// goes to stream.
func streamWhenNeeded(stream, plain http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			stream.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, mcp.DefaultMaxRequestBodyBytes+1))
		if err != nil || len(body) > mcp.DefaultMaxRequestBodyBytes {
			// go-sdk reads what is left and answers as it would have.
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
			stream.ServeHTTP(w, r)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if mayNeedStream(body) {
			stream.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	})
}

// mayNeedStream reports whether a request body might carry a progress
// token: the key spelled out, or any escape sequence.
func mayNeedStream(body []byte) bool {
	return bytes.Contains(body, []byte("progressToken")) || bytes.IndexByte(body, '\\') >= 0
}
