package resourceserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// CORS lists (MCP authorization spec; Streamable HTTP transport headers).
const (
	corsAllowHeaders  = "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name"
	corsExposeHeaders = "WWW-Authenticate, Mcp-Session-Id"
	corsAllowMethods  = "GET, POST, DELETE, OPTIONS"
)

// Middleware protects next: every request except a CORS preflight must
// carry a valid bearer token in the Authorization header. On success the
// request's context carries the Token (TokenFromContext) and go-sdk's
// auth.TokenInfo, whose UserID binds a Streamable HTTP session to the user.
//
// Order of judgement: Origin, then the request's form (400), then the
// token (401); authorization (403) is left to later layers, which call
// InsufficientScope.
func (s *Server) Middleware(next http.Handler) http.Handler {
	// go-sdk keeps its TokenInfo under an unexported context key that only
	// auth.RequireBearerToken sets, so hand it the token verified here.
	withTokenInfo := auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		if t := TokenFromContext(ctx); t != nil {
			return t.info, nil
		}
		return nil, auth.ErrInvalidToken
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true, ClockSkew: s.cfg.Leeway})(next)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.cors(w, r); err != nil {
			s.refuse(w, r, err, "")
			return
		}
		if r.Method == http.MethodOptions {
			// A preflight carries no credentials (Fetch standard); let it pass.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		raw, err := bearerToken(r)
		if err != nil {
			s.refuse(w, r, err, "")
			return
		}
		tok, err := s.Verify(r.Context(), raw)
		if err != nil {
			s.refuse(w, r, err, raw)
			return
		}
		withTokenInfo.ServeHTTP(w, r.WithContext(ContextWithToken(r.Context(), tok)))
	})
}

// cors sets the CORS response headers for an allowed Origin and refuses a
// present Origin that is not allowed (MCP transport spec: servers must
// validate Origin). Requests without Origin come from non-browser clients.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) error {
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return nil
	}
	w.Header().Add("Vary", "Origin")
	if len(origins) > 1 || !s.origins[strings.ToLower(origins[0])] {
		return errOriginRejected
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origins[0])
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	h.Set("Access-Control-Allow-Methods", corsAllowMethods)
	h.Set("Access-Control-Max-Age", "600")
	return nil
}

// bearerToken extracts the token from the one Authorization header
// (RFC 6750 section 2.1). Other transmission methods are refused.
func bearerToken(r *http.Request) (string, error) {
	if r.URL.Query().Has("access_token") {
		return "", &requestError{"Access tokens are accepted only in the Authorization header, not in the query string"}
	}
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", errNoCredentials
	case 1:
	default:
		return "", &requestError{"Send exactly one Authorization header"}
	}
	scheme, token, found := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if scheme == "" {
			return "", &requestError{"The Authorization header is empty"}
		}
		// Another scheme (Basic, DPoP...) is not a bearer credential: the
		// client is told how to get one.
		return "", errNoCredentials
	}
	token = strings.TrimLeft(token, " ")
	if !found || !isToken68(token) {
		return "", &requestError{"The Authorization header must be: Bearer <token>"}
	}
	return token, nil
}

// token68Chars marks the characters of RFC 7235's token68 before any
// trailing '=': ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/".
var token68Chars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
	}
	return t
}()

// isToken68 reports whether s matches token68: 1*token68Chars *"=".
func isToken68(s string) bool {
	i := 0
	for i < len(s) && token68Chars[s[i]] {
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// InsufficientScope answers 403 with an RFC 6750 insufficient_scope
// challenge naming scopes, which should hold every scope the operation
// needs plus those already granted that stay relevant, so the client can
// re-authorize once (MCP authorization spec, scope challenge handling).
// desc is a short human-readable reason; it is sanitized.
func (s *Server) InsufficientScope(w http.ResponseWriter, r *http.Request, scopes []string, desc string) {
	valid := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		if validScopeToken(sc) {
			valid = append(valid, sc)
		}
	}
	s.refuse(w, r, &scopeError{scopes: valid, desc: desc}, "")
}

// scopeError is a valid token without the scopes an operation needs.
type scopeError struct {
	scopes []string
	desc   string
}

func (e *scopeError) Error() string { return "insufficient scope: " + e.desc }

// Refusal is what Config.OnRefuse hears of one refused request.
type Refusal struct {
	// Status is the HTTP status answered: 400, 401, 403 or 503.
	Status int
	// Reason is a short stable code, fit for a metrics label: no_token,
	// invalid_request, malformed, signature, issuer, expired,
	// not_yet_valid, audience, claims, inactive, unavailable, origin,
	// insufficient_scope, internal.
	Reason string
	// Scopes are the scopes challenged, for insufficient_scope.
	Scopes []string
	// Token is the verified token when the refusal came after
	// verification (insufficient_scope); nil otherwise.
	Token *Token
	// Fingerprint names the presented token (see Fingerprint) when one
	// was presented, verified or not.
	Fingerprint string
}

// reasonCodes maps the client-facing descriptions to Refusal.Reason.
var reasonCodes = map[string]string{
	descMalformed:   "malformed",
	descSignature:   "signature",
	descIssuer:      "issuer",
	descExpired:     "expired",
	descNotYetValid: "not_yet_valid",
	descAudience:    "audience",
	descClaims:      "claims",
	descInactive:    "inactive",
	descUnavailable: "unavailable",
}

// reasonCode is the Refusal.Reason for err.
func reasonCode(err error) string {
	var te *tokenError
	var re *requestError
	var se *scopeError
	switch {
	case errors.Is(err, errNoCredentials):
		return "no_token"
	case errors.As(err, &re):
		return "invalid_request"
	case errors.As(err, &te):
		if c, ok := reasonCodes[te.desc]; ok {
			return c
		}
		return "invalid_token"
	case errors.As(err, &se):
		return "insufficient_scope"
	case errors.Is(err, errOriginRejected):
		return "origin"
	}
	return "internal"
}

// refuse logs why a request is refused, tells OnRefuse, and writes the
// response. raw is the presented token, if any, for its fingerprint only.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error, raw string) {
	resp := s.classify(err)
	// A request refused before any token was verified is anyone's to send,
	// as often as they like: its line is Debug, so a flood cannot grow the
	// log without bound (OnRefuse counts them). A verified caller's refusal
	// (a missing scope) is Info, and a 5xx, ours, is Warn.
	level := slog.LevelDebug
	switch {
	case resp.status >= 500:
		level = slog.LevelWarn
	case TokenFromContext(r.Context()) != nil:
		level = slog.LevelInfo
	}
	attrs := []slog.Attr{
		slog.Int("status", resp.status),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("reason", err.Error()),
	}
	if t := TokenFromContext(r.Context()); t != nil {
		attrs = append(attrs, slog.String("sub", t.Subject), slog.String("client_id", t.ClientID))
	}
	var se *scopeError
	if errors.As(err, &se) {
		attrs = append(attrs, slog.String("challenged_scope", strings.Join(se.scopes, " ")))
	}
	s.log.LogAttrs(r.Context(), level, "request refused", attrs...)
	if s.cfg.OnRefuse != nil {
		rf := Refusal{Status: resp.status, Reason: reasonCode(err), Token: TokenFromContext(r.Context()), Fingerprint: Fingerprint(raw)}
		if rf.Token != nil {
			rf.Fingerprint = rf.Token.Fingerprint
		}
		if se != nil {
			rf.Scopes = se.scopes
		}
		s.cfg.OnRefuse(r.Context(), rf)
	}
	writeError(w, resp)
}
