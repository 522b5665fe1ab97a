package resourceserver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Server validates access tokens for one protected resource and serves its
// metadata. Create it with New; it is safe for concurrent use. Close stops
// its background key refresh.
type Server struct {
	cfg           Config
	log           *slog.Logger
	resourceCanon string
	extraAud      map[string]bool
	origins       map[string]bool
	issuers       map[string]*issuerState
	issuerOrder   []*issuerState
	cache         *tokenCache // nil when disabled
	intro         introspections

	metadataURL   string
	metadataPaths []string
	metadataJSON  []byte

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// issuerState is one trusted authorization server at run time.
type issuerState struct {
	s    *Server
	cfg  Issuer
	keys *keySet // nil in ModeIntrospection

	mu          sync.Mutex
	discovered  *endpointsDoc
	discoverErr error     // the last discovery failure
	discoverAt  time.Time // when it happened
}

// New validates cfg and returns a Server. It does not wait for the network:
// discovery and the first JWKS fetch start in the background, requests that
// arrive before the keys wait for that fetch, and Ready reports whether
// every issuer has usable keys. Call Refresh to wait for them. A bad cfg
// is refused with every problem at once, each a *FieldError (see
// Config.Validate).
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:           cfg,
		log:           cfg.Logger,
		resourceCanon: canonicalAudience(cfg.Resource),
		extraAud:      map[string]bool{},
		origins:       map[string]bool{},
		issuers:       map[string]*issuerState{},
	}
	for _, a := range cfg.ExtraAudiences {
		s.extraAud[a] = true
		s.log.Warn("accepting tokens whose aud is not this resource: only do this when the authorization server cannot put the resource URL in aud",
			"extra_audience", a, "resource", cfg.Resource)
	}
	for _, o := range cfg.AllowedOrigins {
		s.origins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	if o := resourceOrigin(cfg.Resource); o != "" {
		// A page served by this server itself (same origin) may call it.
		s.origins[o] = true
	}
	for _, ic := range cfg.Issuers {
		if strings.HasPrefix(ic.URL, "http://") {
			s.log.Warn("trusting a plain-HTTP issuer on a loopback address: development only", "issuer", ic.URL)
		}
		is := &issuerState{s: s, cfg: ic}
		if cfg.Mode != ModeIntrospection {
			is.keys = &keySet{is: is}
		}
		s.issuers[ic.URL] = is
		s.issuerOrder = append(s.issuerOrder, is)
	}
	if cfg.CacheSize > 0 {
		s.cache = newTokenCache(cfg.CacheSize)
	}
	s.intro.refused.max = maxRemembered
	s.initMetadata()

	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, is := range s.issuerOrder {
		if is.keys != nil {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				is.keys.run(s.ctx)
			}()
		}
	}
	return s, nil
}

// Close stops background refreshes. Verify keeps working on cached keys.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// Verify validates a raw access token as configured and returns what it
// says. Errors wrap ErrInvalidToken (the token is bad) or ErrUnavailable
// (it could not be judged); their text is safe to log and never contains
// the token.
func (s *Server) Verify(ctx context.Context, raw string) (*Token, error) {
	now := s.cfg.Now()
	if s.cache != nil {
		if t := s.cache.get(raw, now); t != nil {
			return t, nil
		}
	}
	var (
		tok *Token
		err error
		ttl = s.cfg.CacheTTL
	)
	switch s.cfg.Mode {
	case ModeJWT:
		tok, err = s.verifyJWT(ctx, raw)
	case ModeIntrospection:
		if len(raw) > maxTokenBytes {
			return nil, invalid(descMalformed, "token is %d bytes, over the %d byte limit", len(raw), maxTokenBytes)
		}
		tok, err = s.introspectShared(ctx, s.issuerOrder[0], raw, nil)
		ttl = s.cfg.IntrospectionCacheTTL
	case ModeJWTIntrospection:
		// A revoked JWT still verifies; remembering its refusal spares
		// the signature check as well as the call.
		if err := s.refusedBefore(sha256.Sum256([]byte(raw))); err != nil {
			return nil, err
		}
		tok, err = s.verifyJWT(ctx, raw)
		if err == nil {
			tok, err = s.introspectShared(ctx, s.issuers[tok.Issuer], raw, tok)
		}
		ttl = s.cfg.IntrospectionCacheTTL
	}
	if err != nil {
		return nil, err
	}
	if tok.Fingerprint == "" {
		// Introspected tokens have theirs already, and may be shared.
		tok.Fingerprint = Fingerprint(raw)
	}
	if s.cache != nil {
		until := now.Add(ttl)
		if !tok.Expiry.IsZero() && tok.Expiry.Before(until) {
			until = tok.Expiry
		}
		s.cache.put(raw, tok, until, now)
	}
	return tok, nil
}

// Refresh discovers every issuer's endpoints and fetches its keys now,
// waiting for the result. Use it at start-up or in a configuration check.
// The error joins one *IssuerError per issuer that failed.
func (s *Server) Refresh(ctx context.Context) error {
	var errs []error
	for _, is := range s.issuerOrder {
		if is.keys != nil {
			if err := is.keys.refresh(ctx); err != nil {
				errs = append(errs, &IssuerError{Issuer: is.cfg.URL, Err: err})
			}
			continue
		}
		if _, err := is.endpoints(ctx); err != nil {
			errs = append(errs, &IssuerError{Issuer: is.cfg.URL, Err: err})
		}
	}
	return errors.Join(errs...)
}

// IssuerError is a failure to reach or use one issuer; Issuer is its URL
// as configured.
type IssuerError struct {
	Issuer string
	Err    error
}

func (e *IssuerError) Error() string { return "issuer " + e.Issuer + ": " + e.Err.Error() }
func (e *IssuerError) Unwrap() error { return e.Err }

// IssuerStatus describes one issuer's keys for readiness reports.
type IssuerStatus struct {
	Issuer string `json:"issuer"`
	// Keys is how many verification keys are held.
	Keys int `json:"keys"`
	// FetchedAt is when the keys were last fetched successfully.
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// Stale is true when the last refresh failed and older keys serve.
	Stale bool `json:"stale"`
	// Usable is false when no keys may be used: never fetched, or older
	// than the maximum age. Tokens from this issuer are then refused.
	Usable bool `json:"usable"`
	// LastError is the last refresh failure, if any.
	LastError string `json:"last_error,omitempty"`
	// Failures counts failed key fetches since start (a counter, for
	// metrics).
	Failures uint64 `json:"failures"`
}

// Status reports every issuer's key state.
func (s *Server) Status() []IssuerStatus {
	var out []IssuerStatus
	now := s.cfg.Now()
	for _, is := range s.issuerOrder {
		st := IssuerStatus{Issuer: is.cfg.URL, Usable: true}
		if is.keys != nil {
			fetchedAt, n, lastErr, failures := is.keys.status()
			st.Keys, st.FetchedAt, st.Failures = n, fetchedAt, failures
			st.Usable = !fetchedAt.IsZero() && now.Sub(fetchedAt) <= s.cfg.KeyMaxAge
			if lastErr != nil {
				st.LastError = lastErr.Error()
				st.Stale = st.Usable
			}
		}
		out = append(out, st)
	}
	return out
}

// Ready returns nil when tokens from every issuer can be verified: keys are
// loaded and younger than the maximum age. Stale but usable keys are ready
// (Status says they are stale), so a short outage of the authorization
// server does not take every replica out of service at once.
func (s *Server) Ready() error {
	var errs []error
	for _, st := range s.Status() {
		if !st.Usable {
			why := st.LastError
			if why == "" {
				why = "not fetched yet, or older than the maximum age"
			}
			errs = append(errs, fmt.Errorf("issuer %s: no usable keys: %s", st.Issuer, why))
		}
	}
	return errors.Join(errs...)
}

// ResourceMetadataURL is the URL of this resource's metadata document, as
// put in every challenge's resource_metadata parameter.
func (s *Server) ResourceMetadataURL() string { return s.metadataURL }

// resourceOrigin is the origin of the resource URL as a browser serializes
// it in the Origin header (RFC 6454 section 6.1): lower-case scheme and
// host, the port only when it is not the scheme's default. "" if the URL
// has no host.
func resourceOrigin(resource string) string {
	u, err := url.Parse(resource)
	if err != nil || u.Host == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	if p := u.Port(); p != "" && !(scheme == "https" && p == "443" || scheme == "http" && p == "80") {
		host += ":" + p
	}
	return scheme + "://" + host
}
