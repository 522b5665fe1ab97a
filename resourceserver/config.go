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
	"strconv"
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
	// ScopesSupported is advertised in the metadata and in the 401
	// challenge: what a client asks for when it signs in. List every scope
	// the resource uses so that one sign-in covers all the user is granted,
	// or fewer for least privilege: further scopes are then asked for
	// through 403 insufficient_scope challenges.
	ScopesSupported []string
	// ResourceName and ResourceDocumentation are published in the metadata.
	ResourceName          string
	ResourceDocumentation string
	// AllowedOrigins lists the browser origins (scheme://host[:port]) allowed
	// to call the protected endpoint, besides the Resource's own origin,
	// which is always allowed (a page served by the MCP server itself). A
	// request with any other Origin gets 403. Requests without an Origin
	// header (non-browser clients) pass.
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
	// and whether it failed (err is nil for an answer, active or not). It
	// hears only calls really made: requests that shared another's call or
	// met a remembered refusal (IntrospectionRefusalTTL,
	// IntrospectionFailureTTL) cost none.
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

// FieldError is a problem with one field of Config, in the manner of
// fs.PathError: Field names it as Go code would ("Resource",
// "Issuers[0].URL", "AllowedOrigins[1]"), so that a caller can use
// errors.As to tell the user which of its own settings is wrong instead
// of parsing the message. Err never holds a secret: a client secret is
// never quoted, and URLs are quoted with any password hidden.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	return "resourceserver: Config." + e.Field + ": " + e.Err.Error()
}
func (e *FieldError) Unwrap() error { return e.Err }

// Validate reports every problem of c at once: a join of *FieldError
// values, or nil. New calls it; it is exported for programs that want to
// check a configuration before starting anything, as New does not return
// before it has started fetching keys.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	// The resource identifier (RFC 8707 section 2), which clients compare
	// byte for byte, obeys the same rules as the issuer's URLs.
	if err := checkServerURL(c.Resource); err != nil {
		bad("Resource", "%w", err)
	}
	if len(c.Issuers) == 0 {
		bad("Issuers", "at least one issuer is required")
	}
	seen := map[string]bool{}
	for i, is := range c.Issuers {
		field := fmt.Sprintf("Issuers[%d].", i)
		if seen[is.URL] {
			bad(field+"URL", "%s is listed twice", quoteURL(is.URL))
		}
		seen[is.URL] = true
		if err := checkServerURL(is.URL); err != nil {
			bad(field+"URL", "%w", err)
		}
		if is.JWKSURL != "" {
			if err := checkServerURL(is.JWKSURL); err != nil {
				bad(field+"JWKSURL", "%w", err)
			}
		}
		if is.IntrospectionURL != "" {
			if err := checkServerURL(is.IntrospectionURL); err != nil {
				bad(field+"IntrospectionURL", "%w", err)
			}
		}
		for j, a := range is.Algorithms {
			if !slices.Contains(asymmetricAlgs, a) {
				bad(fmt.Sprintf("%sAlgorithms[%d]", field, j), "%q is not allowed: only asymmetric algorithms (%s) are", truncate(a), strings.Join(asymmetricAlgs, ", "))
			}
		}
		if c.Mode == ModeIntrospection || c.Mode == ModeJWTIntrospection {
			if is.ClientID == "" {
				bad(field+"ClientID", "required in mode %s: the client id the introspection endpoint authenticates", c.Mode)
			}
			if is.ClientSecret == "" {
				bad(field+"ClientSecret", "required in mode %s: the client secret the introspection endpoint authenticates", c.Mode)
			}
		}
	}
	if c.Mode != "" {
		if _, err := ParseMode(string(c.Mode)); err != nil {
			bad("Mode", "%q is not a mode: want jwt, introspection or jwt+introspection", truncate(string(c.Mode)))
		}
	}
	// An opaque token names no issuer, and sending it to the wrong one would
	// leak it, so pure introspection trusts exactly one.
	if c.Mode == ModeIntrospection && len(c.Issuers) > 1 {
		bad("Mode", "introspection supports exactly one issuer (%d are listed): an opaque token does not say which one to ask; use jwt+introspection", len(c.Issuers))
	}
	for i, a := range c.ExtraAudiences {
		if strings.TrimSpace(a) == "" {
			bad(fmt.Sprintf("ExtraAudiences[%d]", i), "must not be empty")
		}
	}
	for i, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			bad(fmt.Sprintf("AllowedOrigins[%d]", i), "%w", err)
		}
	}
	for i, s := range c.ScopesSupported {
		if !validScopeToken(s) {
			bad(fmt.Sprintf("ScopesSupported[%d]", i), "%q is not a valid scope (RFC 6749 section 3.3: printable ASCII without spaces, '\"' or '\\')", truncate(s))
		}
	}
	if c.ResourceDocumentation != "" {
		// Published for people to open: a web page, never javascript: or
		// a URL carrying a password.
		if u, err := url.Parse(c.ResourceDocumentation); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			bad("ResourceDocumentation", "%s is not an absolute http(s) URL without user information", quoteURL(c.ResourceDocumentation))
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"Leeway", c.Leeway}, {"CacheTTL", c.CacheTTL}, {"IntrospectionCacheTTL", c.IntrospectionCacheTTL},
		{"KeyRefreshInterval", c.KeyRefreshInterval}, {"KeyMissCooldown", c.KeyMissCooldown}, {"KeyMaxAge", c.KeyMaxAge},
	} {
		if d.v < 0 {
			bad(d.field, "must not be negative, got %s", d.v)
		}
	}
	return errors.Join(errs...)
}

// withDefaults validates c and returns a copy with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	issuers := make([]Issuer, len(c.Issuers))
	for i, is := range c.Issuers {
		if len(is.Algorithms) == 0 {
			is.Algorithms = asymmetricAlgs
		}
		issuers[i] = is
	}
	c.Issuers = issuers
	if c.Mode == "" {
		c.Mode = ModeJWT
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

// checkServerURL refuses a URL that is not absolute https, or http on a
// loopback host (MCP authorization spec, "Communication Security"), or
// that carries user information, a query or a fragment.
func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%s is not an absolute URL such as https://host/path", quoteURL(s))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%s uses plain HTTP: only https is allowed, except on a loopback host (127.0.0.1, ::1, localhost) for development", quoteURL(s))
		}
	default:
		return fmt.Errorf("%s must use https", quoteURL(s))
	}
	if u.User != nil {
		return fmt.Errorf("%s must not carry user information", quoteURL(s))
	}
	if u.RawQuery != "" || u.ForceQuery || strings.Contains(s, "#") {
		return fmt.Errorf("%s must not have a query or fragment", quoteURL(s))
	}
	return nil
}

// checkOrigin accepts a browser origin, scheme://host[:port] (RFC 6454),
// of a web page: http or https only, and never "*".
func checkOrigin(o string) error {
	if o == "*" {
		return errors.New(`"*" is not allowed: list each browser origin, e.g. http://localhost:6274`)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(o, "#") {
		return fmt.Errorf("%s is not an origin: want http(s)://host[:port], e.g. https://app.example.com", quoteURL(o))
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

// quoteURL quotes a URL for an error message with any password hidden:
// https://user:pass@host would otherwise put a credential in a log.
func quoteURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		s = u.Redacted()
	} else if err != nil && strings.Contains(s, "@") {
		return "(an unparsable URL with '@', not shown)"
	}
	return strconv.Quote(truncate(s))
}
