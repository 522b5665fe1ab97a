package rstest

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"time"
)

// issued is a token the fake issued, as introspection sees it.
type issued struct {
	claims  map[string]any // decoded from JSON, numbers as json.Number
	revoked bool
	answer  func(claims map[string]any) map[string]any // WithIntrospection; nil: the claims as minted
}

// remember records a token for introspection. The claims are copied through
// JSON so that later changes to the caller's map do not show, and so that
// JWT and opaque tokens introspect alike. A token minted
// WithIntrospection comes from a long-running sign-in rather than a test,
// so recording one forgets the expired ones of its kind: tests may
// introspect the others after they expire.
func (a *AuthServer) remember(token string, claims map[string]any, answer func(map[string]any) map[string]any) {
	raw, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("rstest: encoding claims: %v", err))
	}
	var copied map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&copied); err != nil {
		panic(fmt.Sprintf("rstest: decoding claims: %v", err))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if answer != nil {
		now := time.Now()
		for raw, t := range a.tokens {
			if t.answer != nil && !current(t.claims, now) {
				delete(a.tokens, raw)
			}
		}
	}
	a.tokens[token] = &issued{claims: copied, answer: answer}
}

// MintOpaque returns a random opaque access token that the introspection
// endpoint answers for with claims (RFC 7662 section 2.2), until it expires
// (by its exp claim, if any) or is revoked. It panics if claims cannot be
// encoded as JSON.
func (a *AuthServer) MintOpaque(claims map[string]any) string {
	token := randomString(32)
	a.remember(token, claims, nil)
	return token
}

// Revoke makes token, JWT or opaque, introspect as inactive from now on.
// Unknown tokens are ignored. A revoked JWT still verifies against the
// JWKS: only introspection can tell.
func (a *AuthServer) Revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tokens[token]; ok {
		t.revoked = true
	}
}

// SetIntrospectionClient sets the client credentials the introspection
// endpoint requires. The defaults are [DefaultIntrospectionClientID] and
// [DefaultIntrospectionClientSecret].
func (a *AuthServer) SetIntrospectionClient(id, secret string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clientID, a.clientSecret = id, secret
}

// SetIntrospectionDown makes the introspection endpoint answer 503 while
// down is true.
func (a *AuthServer) SetIntrospectionDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.introspectionDown = down
}

// IntrospectionCalls reports how many requests the introspection endpoint
// has received, whatever it answered.
func (a *AuthServer) IntrospectionCalls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.introspectionCalls
}

// serveIntrospection implements RFC 7662 section 2.
func (a *AuthServer) serveIntrospection(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.introspectionCalls++
	down := a.introspectionDown
	wantID, wantSecret := a.clientID, a.clientSecret
	a.mu.Unlock()

	// Responses carry token state; RFC 6749 section 5.1 asks the same of
	// token responses.
	w.Header().Set("Cache-Control", "no-store")
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	if down {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "temporarily_unavailable"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}

	// Client authentication, RFC 7662 section 2.1 and RFC 6749 section 2.3.1.
	id, secret, basic := r.BasicAuth()
	if basic {
		if r.PostForm.Has("client_secret") {
			// RFC 6749 section 2.3: one authentication method per request.
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
			return
		}
		// The client id and secret are form-urlencoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			id, secret = "", ""
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if !equal(id, wantID) || !equal(secret, wantSecret) || id == "" {
		if basic || r.Header.Get("Authorization") != "" {
			// RFC 6749 section 5.2: required when the client tried the header.
			w.Header().Set("WWW-Authenticate", `Basic realm="rstest"`)
		}
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client"})
		return
	}

	token := r.PostForm.Get("token")
	if token == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	// token_type_hint is only a hint (RFC 7662 section 2.1): every token is
	// looked up the same way.

	a.mu.Lock()
	t, ok := a.tokens[token]
	var resp map[string]any
	var answer func(map[string]any) map[string]any
	if ok && !t.revoked && current(t.claims, time.Now()) {
		resp = maps.Clone(t.claims)
		answer = t.answer
	}
	a.mu.Unlock()
	if answer != nil {
		// Asked without the lock: it may take its owner's, which is held
		// while its owner mints.
		resp = answer(resp)
	}

	if resp == nil {
		// RFC 7662 section 2.2: say nothing more about inactive tokens.
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	resp["active"] = true
	if _, ok := resp["token_type"]; !ok {
		resp["token_type"] = "Bearer"
	}
	writeJSON(w, http.StatusOK, resp)
}

// current reports whether now lies within the token's exp and nbf, where
// present.
func current(claims map[string]any, now time.Time) bool {
	if exp, ok := numericDate(claims["exp"]); ok && !now.Before(exp) {
		return false
	}
	if nbf, ok := numericDate(claims["nbf"]); ok && now.Before(nbf) {
		return false
	}
	return true
}

// numericDate reads a JWT NumericDate (RFC 7519 section 2), which may have
// a fraction.
func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(f * 1000)), true
}

// equal compares secrets in constant time.
func equal(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
