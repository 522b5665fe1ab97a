package resourceserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// maxDocumentBytes bounds a discovery document, JWKS or introspection
// answer read from an authorization server.
const maxDocumentBytes = 1 << 20

// fetchTimeout bounds one discovery, JWKS or introspection round trip. It is
// separate from the request's context because a fetch is shared by every
// request waiting on it.
const fetchTimeout = 10 * time.Second

// publicKey is one verification key from a JWKS, converted once to its raw
// crypto form so the hot path does no conversion.
type publicKey struct {
	kid string
	alg string // the JWK's alg, "" when absent
	use string // the JWK's use, "" when absent
	kty jwa.KeyType
	raw any
}

// fits reports whether the key may verify a token signed with alg: its
// type must match the algorithm family, and its alg and use, when present,
// must agree (RFC 7517 sections 4.2 and 4.4).
func (k *publicKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	if k.use != "" && k.use != "sig" {
		return false
	}
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		return k.kty == jwa.RSA
	case strings.HasPrefix(alg, "ES"):
		return k.kty == jwa.EC
	case alg == "EdDSA":
		return k.kty == jwa.OKP
	}
	return false
}

// fetchCall is one JWKS fetch that concurrent callers share.
type fetchCall struct {
	done chan struct{}
	err  error
}

// keySet holds one issuer's verification keys. It refetches on an unknown
// kid at most once per cooldown, shares concurrent fetches, and keeps
// serving the last good keys for up to maxAge when refreshes fail.
type keySet struct {
	is *issuerState

	mu        sync.Mutex
	keys      []*publicKey
	fetchedAt time.Time // last successful fetch
	lastErr   error     // last fetch failure, nil after a success
	failures  uint64    // fetch failures since start, for metrics
	lastMiss  time.Time // last fetch caused by an unknown kid
	inflight  *fetchCall
}

// lookup returns the candidate keys for kid ("" means every key). An unknown
// kid causes one refetch, unless one ran within the cooldown.
func (ks *keySet) lookup(ctx context.Context, kid string) ([]*publicKey, error) {
	cfg := ks.is.s.cfg
	for attempt := 0; ; attempt++ {
		ks.mu.Lock()
		now := cfg.Now()
		usable := !ks.fetchedAt.IsZero() && now.Sub(ks.fetchedAt) <= cfg.KeyMaxAge
		if usable {
			if found := matchKID(ks.keys, kid); len(found) > 0 {
				ks.mu.Unlock()
				return found, nil
			}
		}
		call := ks.inflight
		coolingDown := !ks.lastMiss.IsZero() && now.Sub(ks.lastMiss) < cfg.KeyMissCooldown
		if attempt > 0 || (call == nil && coolingDown) {
			// Waited for one fetch already, or may not start one: give up.
			lastErr := ks.lastErr
			ks.mu.Unlock()
			if !usable {
				return nil, unavailable("no usable keys for issuer %q: %s", ks.is.cfg.URL, errOr(lastErr, "keys are older than the maximum age"))
			}
			return nil, invalid(descSignature, "unknown kid %q for issuer %q", truncate(kid), ks.is.cfg.URL)
		}
		if call == nil {
			ks.lastMiss = now
			call = ks.startFetchLocked()
		}
		ks.mu.Unlock()

		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, unavailable("waiting for keys of issuer %q: %v", ks.is.cfg.URL, ctx.Err())
		}
	}
}

func errOr(err error, fallback string) string {
	if err != nil {
		return err.Error()
	}
	return fallback
}

// matchKID returns the keys a token with kid may be verified with: all of
// them when the token names none, else every key with that kid (RFC 7517
// section 4.5 allows keys of different types to share one; fits picks).
func matchKID(keys []*publicKey, kid string) []*publicKey {
	if kid == "" {
		return keys
	}
	var out []*publicKey
	for _, k := range keys {
		if k.kid == kid {
			out = append(out, k)
		}
	}
	return out
}

// refresh fetches the keys now (sharing a fetch already under way) and
// waits for the result.
func (ks *keySet) refresh(ctx context.Context) error {
	ks.mu.Lock()
	call := ks.inflight
	if call == nil {
		call = ks.startFetchLocked()
	}
	ks.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startFetchLocked starts a fetch in the background. ks.mu must be held.
func (ks *keySet) startFetchLocked() *fetchCall {
	call := &fetchCall{done: make(chan struct{})}
	ks.inflight = call
	go func() {
		ctx, cancel := context.WithTimeout(ks.is.s.ctx, fetchTimeout)
		keys, err := ks.fetch(ctx)
		cancel()
		ks.mu.Lock()
		if err == nil {
			ks.keys = keys
			ks.fetchedAt = ks.is.s.cfg.Now()
			ks.lastErr = nil
		} else {
			ks.lastErr = err
			ks.failures++
		}
		ks.inflight = nil
		ks.mu.Unlock()
		switch {
		case ks.is.s.ctx.Err() != nil:
			// Closing; nothing to report.
		case err != nil:
			ks.is.s.log.Warn("fetching JWKS failed; the last good keys keep serving up to the maximum age",
				"issuer", ks.is.cfg.URL, "error", err.Error())
		default:
			ks.is.s.log.Debug("fetched JWKS", "issuer", ks.is.cfg.URL, "keys", len(keys))
		}
		call.err = err
		close(call.done)
	}()
	return call
}

// fetch downloads and parses the JWKS.
func (ks *keySet) fetch(ctx context.Context) ([]*publicKey, error) {
	ep, err := ks.is.endpoints(ctx)
	if err != nil {
		return nil, err
	}
	if ep.jwksURI == "" {
		return nil, fmt.Errorf("issuer metadata has no jwks_uri")
	}
	body, err := ks.is.s.getJSON(ctx, ep.jwksURI)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", ep.jwksURI, err)
	}
	var keys []*publicKey
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if k.KeyType() == jwa.OctetSeq {
			continue // symmetric keys are never used
		}
		raw, err := jwk.PublicRawKeyOf(k)
		if err != nil {
			continue
		}
		alg := ""
		if a := k.Algorithm(); a != nil {
			alg = a.String()
		}
		keys = append(keys, &publicKey{kid: k.KeyID(), alg: alg, use: k.KeyUsage(), kty: k.KeyType(), raw: raw})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS %s holds no usable public key", ep.jwksURI)
	}
	return keys, nil
}

// run refreshes the keys in the background until the server closes. After
// a failure it retries at the miss cooldown rather than the full interval.
func (ks *keySet) run(ctx context.Context) {
	cfg := ks.is.s.cfg
	for {
		next := cfg.KeyRefreshInterval
		if err := ks.refresh(ctx); err != nil && ctx.Err() == nil {
			next = min(cfg.KeyMissCooldown, cfg.KeyRefreshInterval)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// status reports the key set's state for readiness.
func (ks *keySet) status() (fetchedAt time.Time, n int, lastErr error, failures uint64) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.fetchedAt, len(ks.keys), ks.lastErr, ks.failures
}

// endpointsDoc is the part of RFC 8414 / OpenID metadata this package uses.
type endpointsDoc struct {
	Issuer                string `json:"issuer"`
	JWKSURI               string `json:"jwks_uri"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
}

type endpoints struct {
	jwksURI          string
	introspectionURL string
}

// endpoints returns the issuer's JWKS and introspection URLs: explicit
// configuration first, then discovery (RFC 8414 path-inserted location,
// then OpenID discovery). A successful discovery is remembered.
func (is *issuerState) endpoints(ctx context.Context) (endpoints, error) {
	ep := endpoints{jwksURI: is.cfg.JWKSURL, introspectionURL: is.cfg.IntrospectionURL}
	needJWKS := is.s.cfg.Mode != ModeIntrospection
	needIntrospection := is.s.cfg.Mode != ModeJWT
	if (!needJWKS || ep.jwksURI != "") && (!needIntrospection || ep.introspectionURL != "") {
		return ep, nil
	}

	is.mu.Lock()
	defer is.mu.Unlock()
	if is.discovered == nil {
		// After a failure, requests fail fast for the miss cooldown
		// instead of each retrying discovery in turn.
		now := is.s.cfg.Now()
		if is.discoverErr != nil && now.Sub(is.discoverAt) < is.s.cfg.KeyMissCooldown {
			return ep, is.discoverErr
		}
		ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		defer cancel()
		doc, err := is.discover(ctx)
		if err != nil {
			is.discoverErr, is.discoverAt = err, now
			return ep, err
		}
		is.discovered, is.discoverErr = doc, nil
	}
	if ep.jwksURI == "" {
		ep.jwksURI = is.discovered.JWKSURI
	}
	if ep.introspectionURL == "" {
		ep.introspectionURL = is.discovered.IntrospectionEndpoint
	}
	return ep, nil
}

// discoveryURLs lists where to look for the issuer's metadata, in order.
func discoveryURLs(issuer string) []string {
	scheme, rest, _ := strings.Cut(issuer, "://")
	host, path, _ := strings.Cut(rest, "/")
	path = strings.TrimSuffix(path, "/")
	rfc8414 := scheme + "://" + host + "/.well-known/oauth-authorization-server"
	if path != "" {
		rfc8414 += "/" + path
	}
	return []string{rfc8414, strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"}
}

func (is *issuerState) discover(ctx context.Context) (*endpointsDoc, error) {
	var errs []error
	for _, u := range discoveryURLs(is.cfg.URL) {
		body, err := is.s.getJSON(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var doc endpointsDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		// RFC 8414 section 3.3: the issuer in the document must be
		// identical to the one it was fetched for.
		if doc.Issuer != is.cfg.URL {
			errs = append(errs, fmt.Errorf("%s: issuer %q does not match %q", u, truncate(doc.Issuer), is.cfg.URL))
			continue
		}
		if doc.JWKSURI != "" {
			if err := checkServerURL(doc.JWKSURI); err != nil {
				return nil, fmt.Errorf("metadata of issuer %q: jwks_uri %w", is.cfg.URL, err)
			}
		}
		if doc.IntrospectionEndpoint != "" {
			if err := checkServerURL(doc.IntrospectionEndpoint); err != nil {
				return nil, fmt.Errorf("metadata of issuer %q: introspection_endpoint %w", is.cfg.URL, err)
			}
		}
		return &doc, nil
	}
	return nil, fmt.Errorf("discovering metadata of issuer %q: %w", is.cfg.URL, errors.Join(errs...))
}

// getJSON GETs a small JSON document.
func (s *Server) getJSON(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("%s: document larger than %d bytes", u, maxDocumentBytes)
	}
	return body, nil
}
