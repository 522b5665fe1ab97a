package resourceserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// Token is what a verified access token tells later layers. It never holds
// the raw token.
type Token struct {
	Issuer  string
	Subject string
	// Scopes granted, from scope (space-separated) or scp (array or string).
	Scopes []string
	// ClientID is client_id, or azp when client_id is absent. It may be an
	// https URL (Client ID Metadata Documents); treat it as opaque.
	ClientID string
	JTI      string
	Expiry   time.Time
	// Fingerprint names the raw token in logs and audit trails without
	// revealing it (see Fingerprint).
	Fingerprint string
	// Claims are all claims of the token (or of the introspection answer),
	// as decoded from JSON. Treat as read-only: the value is shared by every
	// request that presents the same token.
	Claims map[string]any

	info *auth.TokenInfo // built once by seal, shared by every request
}

// seal builds the go-sdk form once, so a cached token costs nothing more
// per request. It returns t.
func (t *Token) seal() *Token {
	t.info = t.TokenInfo()
	return t
}

// TokenInfo converts t into go-sdk's form. UserID is "issuer subject" so
// that a Streamable HTTP session is bound to one user of one issuer.
func (t *Token) TokenInfo() *auth.TokenInfo {
	return &auth.TokenInfo{
		Scopes:     t.Scopes,
		Expiration: t.Expiry,
		UserID:     t.Issuer + " " + t.Subject,
		Extra:      map[string]any{"client_id": t.ClientID, "iss": t.Issuer, "sub": t.Subject, tokenExtraKey: t},
	}
}

// tokenExtraKey holds the *Token itself in TokenInfo.Extra.
const tokenExtraKey = "resourceserver.Token"

// TokenFromInfo returns the Token behind go-sdk's TokenInfo, or nil. MCP
// handlers use it with req.Extra.TokenInfo, which go-sdk sets from the
// HTTP request that carries each message. The handler's context is not
// the place to look: on a Streamable HTTP session it may come from the
// session's first request, whose token may belong to another client or
// have expired since.
func TokenFromInfo(info *auth.TokenInfo) *Token {
	if info == nil {
		return nil
	}
	t, _ := info.Extra[tokenExtraKey].(*Token)
	return t
}

type tokenKey struct{}

// TokenFromContext returns the verified token the middleware put into the
// request's context, or nil.
func TokenFromContext(ctx context.Context) *Token {
	t, _ := ctx.Value(tokenKey{}).(*Token)
	return t
}

// ContextWithToken returns ctx carrying t. Tests of later layers use it;
// production code gets the token from the middleware.
func ContextWithToken(ctx context.Context, t *Token) context.Context {
	return context.WithValue(ctx, tokenKey{}, t)
}

// parseScopes reads scope (RFC 8693 / RFC 9068: space-separated string) or
// scp (array of strings, or a string). Anything malformed yields ok=false.
func parseScopes(claims map[string]any) (scopes []string, ok bool) {
	if v, present := claims["scope"]; present {
		s, isString := v.(string)
		if !isString {
			return nil, false
		}
		return strings.Fields(s), true
	}
	switch v := claims["scp"].(type) {
	case nil:
		return nil, true
	case string:
		return strings.Fields(v), true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, isString := e.(string)
			if !isString || s == "" || strings.ContainsAny(s, " \t") {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// validScopeToken reports whether s is a scope-token per RFC 6749 section
// 3.3: 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// HasScope reports whether granted covers required. A granted scope covers
// itself and, as the 2026-07-28 MCP revision asks, every scope below it in
// the dotted hierarchy: "crm" covers "crm.contacts.read", "crm.contacts"
// covers "crm.contacts.write", but "crm.contacts.read" does not cover
// "crm.contacts" and "crm.con" covers nothing but itself.
func HasScope(granted []string, required string) bool {
	for _, g := range granted {
		if g == required {
			return true
		}
		if len(required) > len(g) && required[len(g)] == '.' && strings.HasPrefix(required, g) {
			return true
		}
	}
	return false
}

// Fingerprint is a short, stable name for a raw token that does not reveal
// it: "sha256:" and the first 16 hex digits of its SHA-256. Enough to tell
// tokens apart in an audit trail; useless for presenting the token.
func Fingerprint(raw string) string {
	if raw == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(raw))
	return "sha256:" + hex.EncodeToString(sum[:8])
}
