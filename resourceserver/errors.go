package resourceserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors returned (wrapped) by Verify. The middleware maps them to
// HTTP responses in exactly one place, writeError.
var (
	// ErrInvalidToken: the token is bad in any way (RFC 6750 invalid_token).
	ErrInvalidToken = errors.New("invalid token")
	// ErrUnavailable: the token could not be judged because the issuer's
	// keys or introspection endpoint could not be reached. No data moves.
	ErrUnavailable = errors.New("token validation temporarily unavailable")
)

// tokenError is a refusal with two texts: desc is short, safe and sent to
// the client; detail is precise and only logged. Neither ever contains the
// token.
type tokenError struct {
	kind   error // ErrInvalidToken or ErrUnavailable
	desc   string
	detail string
}

func (e *tokenError) Error() string { return e.desc + ": " + e.detail }
func (e *tokenError) Unwrap() error { return e.kind }

// The client-facing descriptions. They say what class of problem it is, so
// a developer can act, and nothing an attacker could not learn anyway.
const (
	descMalformed   = "The access token is malformed"
	descSignature   = "The access token signature could not be verified"
	descIssuer      = "The access token was not issued by a trusted authorization server"
	descExpired     = "The access token expired"
	descNotYetValid = "The access token is not valid yet"
	descAudience    = "The access token was not issued for this resource"
	descClaims      = "The access token lacks a required claim"
	descInactive    = "The access token is not active"
	descUnavailable = "The authorization server could not be reached to validate the access token"
)

func invalid(desc, format string, args ...any) error {
	return &tokenError{kind: ErrInvalidToken, desc: desc, detail: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) error {
	return &tokenError{kind: ErrUnavailable, desc: descUnavailable, detail: fmt.Sprintf(format, args...)}
}

// requestError is a malformed request (RFC 6750 invalid_request, 400).
type requestError struct{ desc string }

func (e *requestError) Error() string { return e.desc }

// errNoCredentials: no bearer token at all (RFC 6750 section 3.1: no error
// code in the challenge).
var errNoCredentials = errors.New("no bearer token")

// errOriginRejected: the Origin header names a site that is not allowed.
var errOriginRejected = errors.New("origin not allowed")

// response is what one failure looks like on the wire.
type response struct {
	status    int
	challenge string // WWW-Authenticate value; empty for none
	code      string // JSON body "error"
	desc      string // JSON body "error_description"
}

// classify is the one place that maps a failure to a status code and a
// challenge. Authentication is judged before authorization, so every
// token problem is a 401 even if the token also lacks scopes.
func (s *Server) classify(err error) response {
	var te *tokenError
	var re *requestError
	var se *scopeError
	switch {
	case errors.Is(err, errNoCredentials):
		// RFC 6750 section 3.1: a request without credentials gets no error code.
		return response{
			status:    http.StatusUnauthorized,
			challenge: challenge("resource_metadata", s.metadataURL, "scope", strings.Join(s.cfg.ScopesSupported, " ")),
			code:      "unauthorized",
			desc:      "An access token is required",
		}
	case errors.As(err, &re):
		return response{
			status:    http.StatusBadRequest,
			challenge: challenge("error", "invalid_request", "error_description", safeDescription(re.desc), "resource_metadata", s.metadataURL),
			code:      "invalid_request",
			desc:      re.desc,
		}
	case errors.As(err, &te) && errors.Is(te.kind, ErrUnavailable):
		// Our dependency failed, not the client: 503, and no challenge, so
		// the client does not throw away a good token.
		return response{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: te.desc}
	case errors.As(err, &te):
		return response{
			status:    http.StatusUnauthorized,
			challenge: challenge("error", "invalid_token", "error_description", safeDescription(te.desc), "resource_metadata", s.metadataURL),
			code:      "invalid_token",
			desc:      te.desc,
		}
	case errors.As(err, &se):
		// RFC 6750 section 3.1 and the MCP spec's scope challenge: every
		// scope the operation needs, in one challenge.
		return response{
			status:    http.StatusForbidden,
			challenge: challenge("error", "insufficient_scope", "scope", strings.Join(se.scopes, " "), "resource_metadata", s.metadataURL, "error_description", safeDescription(se.desc)),
			code:      "insufficient_scope",
			desc:      safeDescription(se.desc),
		}
	case errors.Is(err, errOriginRejected):
		return response{status: http.StatusForbidden, code: "forbidden", desc: "Origin not allowed"}
	}
	// Anything else is a bug of ours; still never let the request through.
	return response{status: http.StatusInternalServerError, code: "server_error", desc: "Internal error"}
}

// challenge builds one Bearer challenge (RFC 6750 section 3, RFC 9728
// section 5.1) from key, value pairs, in the order given so the header is
// stable; empty values are left out. Values are quoted as they are: callers
// pass only scope tokens, URLs from configuration and sanitized text, none
// of which contains '"' or '\\'.
func challenge(kv ...string) string {
	var b strings.Builder
	b.WriteString("Bearer ")
	first := true
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(kv[i+1])
		b.WriteString(`"`)
	}
	return b.String()
}

// safeDescription keeps only the characters RFC 6750 section 3 allows in
// error_description (%x20-21 / %x23-5B / %x5D-7E), so the quoted string
// never needs escaping and never breaks the header.
func safeDescription(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// writeError writes a failure: status, at most one challenge, CORS headers
// (already set by the caller) and a JSON body.
func writeError(w http.ResponseWriter, resp response) {
	h := w.Header()
	if resp.challenge != "" {
		h.Set("WWW-Authenticate", resp.challenge)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if resp.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	w.WriteHeader(resp.status)
	body, _ := json.Marshal(map[string]string{"error": resp.code, "error_description": resp.desc})
	w.Write(append(body, '\n'))
}
