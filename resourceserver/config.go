package resourceserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Mode says how access tokens are validated.
type Mode string

const (
	// ModeJWT verifies signed JWT access tokens locally against the issuer's
	// JWKS. Fast, but a revoked token stays valid until it expires (or until
	// its cache entry does).
	ModeJWT Mode = "jwt"
	// ModeIntrospection asks the authorization server about every token
	// (RFC 7662), which also works for opaque tokens. Revocation takes effect
	// within IntrospectionCacheTTL.
	ModeIntrospection Mode = "introspection"
	// ModeJWTIntrospection verifies the JWT locally first, then confirms with
	// the authorization server that it is still active.
	ModeJWTIntrospection Mode = "jwt+introspection"
)

// ParseMode parses the textual form of a Mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeJWT, ModeIntrospection, ModeJWTIntrospection:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q: want jwt, introspection or jwt+introspection", s)
}

// Issuer describes one trusted authorization server.
type Issuer struct {
	// URL is the issuer identifier. A token's iss claim must equal it byte
	// for byte. It must be https, or http on a loopback host.
	URL string
	// JWKSURL overrides the jwks_uri found by discovery.
	JWKSURL string
	// Algorithms is the allowlist of JWS algorithms accepted from this
	// issuer. Empty means every asymmetric algorithm (RS*, PS*, ES*, EdDSA).
	// Symmetric algorithms and "none" are refused whatever this says.
	Algorithms []string

	// IntrospectionURL overrides the introspection_endpoint found by
	// discovery. Used only in the introspection modes.
	IntrospectionURL string
	// ClientID and ClientSecret authenticate the introspection call
	// (client_secret_basic, RFC 6749 section 2.3.1).
	ClientID     string
	ClientSecret string
}

// Config configures a Server. The zero value of every optional field is the
// strict, documented default.
type Config struct {
	// Resource is the canonical URL of the protected MCP endpoint, exactly as
	// clients connect to it, for example "https://crm.example.com/mcp". It is
	// published as the metadata's resource and is the audience every token
	// must carry (RFC 8707). It is never derived from request headers.
	Resource string
	// Issuers are the trusted authorization servers; a token's iss selects
	// one of them.
	Issuers []Issuer
	// ExtraAudiences are further aud values accepted besides Resource, for
	// authorization servers that put another identifier there. Each one
	// widens what this server accepts, so New logs them as a warning.
	ExtraAudiences []string
	// ScopesSupported is the minimal set of scopes a client needs for basic
	// use; it is advertised in the metadata and in the 401 challenge. Further
	// scopes are asked for through 403 insufficient_scope challenges.
	ScopesSupported []string
	// ResourceName and ResourceDocumentation are published in the metadata.
	ResourceName          string
	ResourceDocumentation string
	// AllowedOrigins lists the browser origins (scheme://host[:port]) allowed
	// to call the protected endpoint. A request with any other Origin gets
	// 403. Requests without an Origin header (non-browser clients) pass.
	AllowedOrigins []string

	// Mode selects JWT validation, introspection or both. Default ModeJWT.
	Mode Mode
	// Leeway is the clock skew tolerated on exp, nbf and iat. Default 30 s.
	Leeway time.Duration

	// CacheSize bounds the verified-token cache (entries). Default 10,000.
	// A negative value disables the cache.
	CacheSize int
	// CacheTTL bounds how long a verified JWT stays cached; an entry never
	// outlives the token's exp either. Default 5 minutes. Within this time a
	// token is not checked again, so in ModeJWT this is how long a key
	// removed from the JWKS keeps a token it signed working.
	CacheTTL time.Duration
	// IntrospectionCacheTTL bounds how long an introspection answer is
	// reused; it is how late a revocation can bite. Default 10 s.
	IntrospectionCacheTTL time.Duration

	// KeyRefreshInterval is how often each issuer's JWKS is refetched in the
	// background. Default 10 minutes.
	KeyRefreshInterval time.Duration
	// KeyMissCooldown is the least time between two fetches caused by a
	// token whose kid is unknown. Default 30 s.
	KeyMissCooldown time.Duration
	// KeyMaxAge is how long the last good key set keeps serving when
	// refreshes fail. Past it, tokens from that issuer are refused (fail
	// closed) until a fetch succeeds. Default 24 hours.
	KeyMaxAge time.Duration

	// OnRefuse, when set, hears of every request the middleware (or
	// InsufficientScope) refuses, after the response is decided: for an
	// audit trail and metrics. It runs on the request's goroutine and must
	// not block for long. A Refusal never holds the token.
	OnRefuse func(ctx context.Context, r Refusal)

	// OnIntrospect, when set, hears how long each introspection call took
	// and whether it failed (err is nil for an answer, active or not).
	OnIntrospect func(took time.Duration, err error)

	// HTTPClient is used for discovery, JWKS and introspection. Default: a
	// client with a 10 s timeout that follows no redirect.
	HTTPClient *http.Client
	// Logger receives the precise reasons tokens are refused. Default:
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Defaults, named so that documentation and tests can refer to them.
const (
	DefaultLeeway                = 30 * time.Second
	DefaultCacheSize             = 10000
	DefaultCacheTTL              = 5 * time.Minute
	DefaultIntrospectionCacheTTL = 10 * time.Second
	DefaultKeyRefreshInterval    = 10 * time.Minute
	DefaultKeyMissCooldown       = 30 * time.Second
	DefaultKeyMaxAge             = 24 * time.Hour
)

// asymmetricAlgs are the only JWS algorithms this package will ever accept.
var asymmetricAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// withDefaults validates c and returns a copy with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if err := checkResourceURL(c.Resource); err != nil {
		errs = append(errs, err)
	}
	if len(c.Issuers) == 0 {
		errs = append(errs, errors.New("at least one issuer is required"))
	}
	seen := map[string]bool{}
	issuers := make([]Issuer, len(c.Issuers))
	for i, is := range c.Issuers {
		if seen[is.URL] {
			errs = append(errs, fmt.Errorf("issuer %q is listed twice", is.URL))
		}
		seen[is.URL] = true
		if err := checkServerURL("issuer", is.URL); err != nil {
			errs = append(errs, err)
		}
		if is.JWKSURL != "" {
			if err := checkServerURL("JWKS URL", is.JWKSURL); err != nil {
				errs = append(errs, err)
			}
		}
		if is.IntrospectionURL != "" {
			if err := checkServerURL("introspection URL", is.IntrospectionURL); err != nil {
				errs = append(errs, err)
			}
		}
		if len(is.Algorithms) == 0 {
			is.Algorithms = asymmetricAlgs
		}
		for _, a := range is.Algorithms {
			if !slices.Contains(asymmetricAlgs, a) {
				errs = append(errs, fmt.Errorf("issuer %q: algorithm %q is not allowed: only asymmetric algorithms (%s) are", is.URL, a, strings.Join(asymmetricAlgs, ", ")))
			}
		}
		issuers[i] = is
	}
	c.Issuers = issuers

	if c.Mode == "" {
		c.Mode = ModeJWT
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		errs = append(errs, err)
	}
	if c.Mode != ModeJWT {
		for _, is := range c.Issuers {
			if is.ClientID == "" || is.ClientSecret == "" {
				errs = append(errs, fmt.Errorf("issuer %q: mode %s needs a client id and secret for introspection", is.URL, c.Mode))
			}
		}
	}
	// An opaque token names no issuer, and sending it to the wrong one would
	// leak it, so pure introspection trusts exactly one.
	if c.Mode == ModeIntrospection && len(c.Issuers) > 1 {
		errs = append(errs, errors.New("mode introspection supports exactly one issuer: an opaque token does not say which one to ask"))
	}
	for _, a := range c.ExtraAudiences {
		if strings.TrimSpace(a) == "" {
			errs = append(errs, errors.New("extra audiences must not be empty strings"))
		}
	}
	for _, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range c.ScopesSupported {
		if !validScopeToken(s) {
			errs = append(errs, fmt.Errorf("scope %q is not a valid scope token (RFC 6749 section 3.3)", s))
		}
	}
	if c.ResourceDocumentation != "" {
		if u, err := url.Parse(c.ResourceDocumentation); err != nil || !u.IsAbs() {
			errs = append(errs, fmt.Errorf("resource documentation %q is not an absolute URL", c.ResourceDocumentation))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"leeway", c.Leeway}, {"cache TTL", c.CacheTTL}, {"introspection cache TTL", c.IntrospectionCacheTTL},
		{"key refresh interval", c.KeyRefreshInterval}, {"key miss cooldown", c.KeyMissCooldown}, {"key max age", c.KeyMaxAge},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", d.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}

	setDefault(&c.Leeway, DefaultLeeway)
	setDefault(&c.CacheTTL, DefaultCacheTTL)
	setDefault(&c.IntrospectionCacheTTL, DefaultIntrospectionCacheTTL)
	setDefault(&c.KeyRefreshInterval, DefaultKeyRefreshInterval)
	setDefault(&c.KeyMissCooldown, DefaultKeyMissCooldown)
	setDefault(&c.KeyMaxAge, DefaultKeyMaxAge)
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			Timeout: 10 * time.Second,
			// A redirect could carry a token (introspection) to another
			// origin, or lead from https to plain http: never follow one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// checkResourceURL refuses a resource URL that clients could not compare
// byte for byte: it must be absolute http(s), without fragment or query.
func checkResourceURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || s == "" {
		return fmt.Errorf("resource URL %q is not a valid URL", s)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("resource URL %q must use https (or http on loopback)", s)
	}
	if u.Host == "" {
		return fmt.Errorf("resource URL %q has no host", s)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("resource URL %q must use https unless its host is a loopback address", s)
	}
	if u.Fragment != "" || u.RawQuery != "" || u.ForceQuery {
		return fmt.Errorf("resource URL %q must not have a query or fragment (RFC 8707 section 2)", s)
	}
	if u.User != nil {
		return fmt.Errorf("resource URL %q must not carry user information", s)
	}
	return nil
}

// checkServerURL refuses plain-HTTP authorization server URLs unless their
// host is a loopback address (MCP authorization spec, "Communication
// Security").
func checkServerURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil || s == "" || u.Host == "" {
		return fmt.Errorf("%s %q is not an absolute URL", what, s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%s %q uses plain HTTP: only https is allowed, except for loopback hosts", what, s)
		}
	default:
		return fmt.Errorf("%s %q must use https", what, s)
	}
	if u.Fragment != "" || u.RawQuery != "" {
		return fmt.Errorf("%s %q must not have a query or fragment", what, s)
	}
	return nil
}

func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("allowed origin %q must look like scheme://host[:port]", o)
	}
	return nil
}

// isLoopback reports whether host is localhost or a loopback IP literal.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
