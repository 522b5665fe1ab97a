package resourceserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

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
