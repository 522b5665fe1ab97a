package devduo

import (
	"fmt"
	"net/http"
)

// oauthError is an OAuth error response: its RFC error code, a description
// that is safe to show (it never holds a secret, code or token), and the
// HTTP status used when it is answered directly rather than through a
// redirect. Every endpoint of the flow reports errors through it, and
// writeOAuthError is the one place that turns it into a response.
type oauthError struct {
	code   string // RFC 6749 sections 4.1.2.1 and 5.2, RFC 7591 section 3.2.2, RFC 8707 section 2
	desc   string
	status int
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

// badRequest returns a 400 oauthError.
func badRequest(code, format string, args ...any) *oauthError {
	return &oauthError{code: code, desc: fmt.Sprintf(format, args...), status: http.StatusBadRequest}
}

// invalidClient is the answer to failed client authentication (RFC 6749
// section 5.2): 401, with a Basic challenge added by writeOAuthError when
// the client tried the Authorization header.
func invalidClient(desc string) *oauthError {
	return &oauthError{code: "invalid_client", desc: desc, status: http.StatusUnauthorized}
}

// writeOAuthError answers a token, revocation or registration request with
// e as JSON (RFC 6749 section 5.2). The response is never cached.
func writeOAuthError(w http.ResponseWriter, r *http.Request, e *oauthError) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if e.status == http.StatusUnauthorized && r.Header.Get("Authorization") != "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="crm-mcp dev"`)
	}
	body := map[string]any{"error": e.code}
	if e.desc != "" {
		body["error_description"] = e.desc
	}
	writeJSON(w, e.status, body)
}
