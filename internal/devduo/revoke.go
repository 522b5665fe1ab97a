package devduo

import "net/http"

// serveRevoke is the revocation endpoint (RFC 7009 section 2). Clients
// authenticate as at the token endpoint. Revoking an access token
// deactivates that token; revoking a refresh token revokes its grant: the
// refresh token and every access token issued from the same authorization
// (section 2.1 says the server SHOULD). The answer is 200 whether or not
// the token was known, and a token issued to another client is left alone
// with the same 200, so the endpoint tells nobody which tokens exist.
func (si *SignIn) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	form, e := readForm(w, r, "token", "token_type_hint")
	if e != nil {
		writeOAuthError(w, r, e)
		return
	}
	c, e := si.authenticateClient(r, form)
	if e != nil {
		writeOAuthError(w, r, e)
		return
	}
	token := form.Get("token")
	if token == "" {
		writeOAuthError(w, r, badRequest("invalid_request", "token is required"))
		return
	}
	// token_type_hint only speeds up a lookup (section 2.1); both kinds are
	// looked up anyway.
	si.mu.Lock()
	if rt, ok := si.refresh[token]; ok && rt.grant.clientID == c.id {
		rt.grant.revoked = true
	} else if at, ok := si.access[token]; ok && at.grant.clientID == c.id {
		si.as.Revoke(token)
	}
	si.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
