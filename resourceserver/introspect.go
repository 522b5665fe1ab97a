package resourceserver

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// How long a token introspection did not accept is remembered, so that a
// client repeating it costs one introspection call per period instead of
// one per request. Neither is configurable; both are named so that
// documentation and tests can refer to them.
const (
	// IntrospectionRefusalTTL: the authorization server said the token is
	// inactive, or its answer does not admit it here (audience, expiry).
	// A refused token does not become good later, so remembering it costs
	// nothing but the few seconds a just-issued token might wait for the
	// authorization server to know it.
	IntrospectionRefusalTTL = 5 * time.Second
	// IntrospectionFailureTTL: the token could not be judged (network
	// error, HTTP 5xx or 401, unreadable answer). It keeps giving 503 for
	// this long, no longer, so a transient failure does not outlast
	// itself by more than a second.
	IntrospectionFailureTTL = time.Second
)

// Bounds on what introspection may hold in memory.
const (
	// maxRemembered bounds the refusals remembered: about 100 bytes each,
	// a megabyte at most. Past it, expired entries go first, then
	// arbitrary ones.
	maxRemembered = 10000
	// maxShared bounds the introspections run apart from their callers.
	// Past it, a caller introspects on its own context, as if alone, so
	// no request can leave more than one bounded call behind it.
	maxShared = 1024
)

// introspections shares and remembers introspection calls: concurrent
// requests with one token wait for one call, and a token refused (or not
// judged) is remembered briefly. It is safe for concurrent use.
//
// The shared call runs on the Server's context, not the first caller's, so
// a caller who goes away does not fail the others waiting for the answer.
// An in-flight map like keyset.go's rather than
// golang.org/x/sync/singleflight: the result must be remembered and the
// call forgotten in one step under one lock, or a caller arriving between
// the two would start a second call.
type introspections struct {
	mu       sync.Mutex
	refused  refusalCache
	inflight map[[32]byte]*introspection
}

// introspection is one call in flight; tok and err are set before done
// is closed, and never changed after.
type introspection struct {
	done chan struct{}
	tok  *Token
	err  error
}

// refusedBefore returns the remembered refusal of the token with this key,
// or nil.
func (s *Server) refusedBefore(key [32]byte) error {
	s.intro.mu.Lock()
	defer s.intro.mu.Unlock()
	return s.intro.refused.get(key, s.cfg.Now())
}

// introspectShared is introspect, shared by concurrent callers with the
// same raw token and remembered briefly when it refuses. The Token it
// returns may be shared: it carries its Fingerprint and must not be
// changed.
func (s *Server) introspectShared(ctx context.Context, is *issuerState, raw string, jwtTok *Token) (*Token, error) {
	key := sha256.Sum256([]byte(raw))
	in := &s.intro
	in.mu.Lock()
	if err := in.refused.get(key, s.cfg.Now()); err != nil {
		in.mu.Unlock()
		return nil, err
	}
	call := in.inflight[key]
	if call == nil && len(in.inflight) >= maxShared {
		in.mu.Unlock()
		tok, err := s.introspect(ctx, is, raw, jwtTok)
		if err == nil {
			tok.Fingerprint = Fingerprint(raw)
		}
		in.mu.Lock()
		s.rememberLocked(ctx, key, err)
		in.mu.Unlock()
		return tok, err
	}
	if call == nil {
		call = &introspection{done: make(chan struct{})}
		if in.inflight == nil {
			in.inflight = make(map[[32]byte]*introspection)
		}
		in.inflight[key] = call
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tok, err := s.introspect(s.ctx, is, raw, jwtTok)
			if err == nil {
				tok.Fingerprint = Fingerprint(raw)
			}
			call.tok, call.err = tok, err
			in.mu.Lock()
			s.rememberLocked(s.ctx, key, err)
			delete(in.inflight, key)
			in.mu.Unlock()
			close(call.done)
		}()
	}
	in.mu.Unlock()
	select {
	case <-call.done:
		return call.tok, call.err
	case <-ctx.Done():
		return nil, unavailable("waiting for introspection: %v", ctx.Err())
	}
}

// rememberLocked remembers a refusal or failure of the token with key,
// unless it came from ctx ending: the next caller may well get an answer.
// The caller holds s.intro.mu.
func (s *Server) rememberLocked(ctx context.Context, key [32]byte, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	ttl := IntrospectionFailureTTL
	if errors.Is(err, ErrInvalidToken) {
		ttl = IntrospectionRefusalTTL
	}
	now := s.cfg.Now()
	s.intro.refused.put(key, err, now.Add(ttl), now)
}

// introspect asks the issuer whether raw is active (RFC 7662). With jwtTok
// nil (ModeIntrospection) the answer's claims make the Token; otherwise the
// locally verified token is confirmed and its scopes narrowed to those the
// answer still grants, so a scope revoked at the authorization server stops
// working here even though the JWT still lists it.
func (s *Server) introspect(ctx context.Context, is *issuerState, raw string, jwtTok *Token) (*Token, error) {
	ep, err := is.endpoints(ctx)
	if err != nil {
		return nil, unavailable("introspection endpoint of issuer %q: %v", is.cfg.URL, err)
	}
	if ep.introspectionURL == "" {
		return nil, unavailable("issuer %q advertises no introspection_endpoint", is.cfg.URL)
	}

	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	form := url.Values{"token": {raw}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.introspectionURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, unavailable("introspection request: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 section 2.3.1: form-encode the credentials before Basic.
	req.SetBasicAuth(url.QueryEscape(is.cfg.ClientID), url.QueryEscape(is.cfg.ClientSecret))
	start := time.Now()
	resp, err := s.cfg.HTTPClient.Do(req)
	if s.cfg.OnIntrospect != nil {
		herr := err
		if herr == nil && resp.StatusCode != http.StatusOK {
			herr = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		s.cfg.OnIntrospect(time.Since(start), herr)
	}
	if err != nil {
		// The error text holds only the URL and the failure, never the body.
		return nil, unavailable("introspection call to issuer %q failed: %v", is.cfg.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes))
	if err != nil {
		return nil, unavailable("reading introspection answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, unavailable("introspection endpoint of issuer %q answered HTTP %d (check the client credentials)", is.cfg.URL, resp.StatusCode)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, unavailable("introspection answer is not JSON: %v", err)
	}
	if active, _ := claims["active"].(bool); !active {
		return nil, invalid(descInactive, "issuer %q reports the token inactive", is.cfg.URL)
	}
	if iss, present := claims["iss"]; present && iss != is.cfg.URL {
		return nil, invalid(descIssuer, "introspection answer names issuer %v, want %q", iss, is.cfg.URL)
	}

	if jwtTok != nil {
		if sub, _ := claims["sub"].(string); sub != "" && sub != jwtTok.Subject {
			return nil, invalid(descInactive, "introspection answer is about another subject")
		}
		granted, ok := parseScopes(claims)
		if !ok {
			return nil, unavailable("introspection answer has a malformed scope")
		}
		if _, present := claims["scope"]; !present && claims["scp"] == nil {
			return jwtTok, nil
		}
		t := *jwtTok
		t.Scopes = slices.DeleteFunc(slices.Clone(jwtTok.Scopes), func(sc string) bool { return !HasScope(granted, sc) })
		return t.seal(), nil
	}

	// An opaque token: the answer is all we know. exp is optional in
	// RFC 7662; when absent, the introspection cache TTL bounds the entry.
	var exp time.Time
	if v, present := claims["exp"]; present {
		e, ok := numericDate(v)
		if !ok {
			return nil, unavailable("introspection answer has a malformed exp")
		}
		if s.cfg.Now().After(e.Add(s.cfg.Leeway)) {
			return nil, invalid(descExpired, "introspection answer says expired at %s", e.UTC().Format(time.RFC3339))
		}
		exp = e
	}
	if v, present := claims["nbf"]; present {
		nbf, ok := numericDate(v)
		if !ok || s.cfg.Now().Add(s.cfg.Leeway).Before(nbf) {
			return nil, invalid(descNotYetValid, "introspection answer says not valid before %v", v)
		}
	}
	// Audience is required here too: an active token for another resource
	// must not pass (RFC 8707, no token passthrough).
	return s.tokenFromClaims(claims, is.cfg.URL, exp)
}
