package resourceserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// maxTokenBytes bounds what is decoded at all. Real access tokens are a few
// hundred bytes to a few kilobytes.
const maxTokenBytes = 16 << 10

// b64 decodes JWS segments strictly: padding, stray characters and non-zero
// trailing bits are refused, so one token has exactly one accepted spelling.
var b64 = base64.RawURLEncoding.Strict()

// jwsHeader holds the protected header fields this package looks at. Key
// material a token carries about itself (jku, x5u, jwk, x5c) is never read:
// the key always comes from the issuer's JWKS.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

// verifyJWT checks a compact JWS access token: header, issuer, signature
// against the issuer's keys, then the claims (RFC 7519, RFC 9068).
func (s *Server) verifyJWT(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > maxTokenBytes {
		return nil, invalid(descMalformed, "token is %d bytes, over the %d byte limit", len(raw), maxTokenBytes)
	}
	dot1 := strings.IndexByte(raw, '.')
	dot2 := strings.LastIndexByte(raw, '.')
	if dot1 <= 0 || dot2 == dot1 || strings.Count(raw, ".") != 2 {
		return nil, invalid(descMalformed, "not a compact JWS with three parts")
	}
	headerB64, payloadB64, sigB64 := raw[:dot1], raw[dot1+1:dot2], raw[dot2+1:]

	var hdr jwsHeader
	if err := decodeSegment(headerB64, &hdr); err != nil {
		return nil, invalid(descMalformed, "header: %v", err)
	}
	switch {
	case hdr.Alg == "" || strings.EqualFold(hdr.Alg, "none"):
		return nil, invalid(descSignature, "unsigned token (alg %q)", truncate(hdr.Alg))
	case strings.HasPrefix(strings.ToUpper(hdr.Alg), "HS"):
		return nil, invalid(descSignature, "symmetric algorithm %q refused", truncate(hdr.Alg))
	case hdr.Crit != nil:
		// RFC 7515 section 4.1.11: we understand no extension, so any
		// critical one makes the token unacceptable.
		return nil, invalid(descMalformed, "crit header present: no extension is supported")
	case hdr.B64 != nil:
		return nil, invalid(descMalformed, "b64 header present: unencoded payloads are not supported")
	}

	var claims map[string]any
	if err := decodeSegment(payloadB64, &claims); err != nil {
		return nil, invalid(descMalformed, "payload: %v", err)
	}
	iss, _ := claims["iss"].(string)
	is := s.issuers[iss]
	if is == nil {
		return nil, invalid(descIssuer, "issuer %q is not configured", truncate(iss))
	}
	if !slices.Contains(is.cfg.Algorithms, hdr.Alg) {
		return nil, invalid(descSignature, "algorithm %q is not allowed for issuer %q", truncate(hdr.Alg), iss)
	}
	sig, err := b64.DecodeString(sigB64)
	if err != nil || len(sig) == 0 {
		return nil, invalid(descMalformed, "signature is not base64url")
	}

	keys, err := is.keys.lookup(ctx, hdr.Kid)
	if err != nil {
		return nil, err
	}
	verifier, err := jws.NewVerifier(jwa.SignatureAlgorithm(hdr.Alg))
	if err != nil {
		return nil, invalid(descSignature, "algorithm %q: %v", hdr.Alg, err)
	}
	signingInput := []byte(raw[:dot2])
	verified := false
	for _, k := range keys {
		if !k.fits(hdr.Alg) {
			continue
		}
		if verifier.Verify(signingInput, sig, k.raw) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, invalid(descSignature, "signature does not verify with any key of issuer %q (kid %q, alg %s)", iss, truncate(hdr.Kid), hdr.Alg)
	}
	return s.checkClaims(claims, iss)
}

// checkClaims validates the registered claims of a token whose signature
// (or introspection answer) is already trusted.
func (s *Server) checkClaims(claims map[string]any, iss string) (*Token, error) {
	now := s.cfg.Now()
	leeway := s.cfg.Leeway

	exp, ok := numericDate(claims["exp"])
	if !ok {
		return nil, invalid(descClaims, "exp is missing or not a number")
	}
	if now.After(exp.Add(leeway)) {
		return nil, invalid(descExpired, "expired at %s (now %s, leeway %s)", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
	}
	if v, present := claims["nbf"]; present {
		nbf, ok := numericDate(v)
		if !ok {
			return nil, invalid(descMalformed, "nbf is not a number")
		}
		if now.Add(leeway).Before(nbf) {
			return nil, invalid(descNotYetValid, "not before %s (now %s)", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	if v, present := claims["iat"]; present {
		iat, ok := numericDate(v)
		if !ok {
			return nil, invalid(descMalformed, "iat is not a number")
		}
		if now.Add(leeway).Before(iat) {
			return nil, invalid(descNotYetValid, "issued in the future at %s (now %s)", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	return s.tokenFromClaims(claims, iss, exp)
}

// tokenFromClaims checks subject and audience and builds the Token.
func (s *Server) tokenFromClaims(claims map[string]any, iss string, exp time.Time) (*Token, error) {
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, invalid(descClaims, "sub is missing or not a string")
	}
	auds, ok := parseAudience(claims["aud"])
	if !ok {
		return nil, invalid(descAudience, "aud is missing or malformed")
	}
	if !s.audienceOK(auds) {
		return nil, invalid(descAudience, "aud %q does not name resource %q", truncateAll(auds), s.cfg.Resource)
	}
	scopes, ok := parseScopes(claims)
	if !ok {
		return nil, invalid(descMalformed, "scope or scp is malformed")
	}
	clientID, _ := claims["client_id"].(string)
	if clientID == "" {
		clientID, _ = claims["azp"].(string)
	}
	jti, _ := claims["jti"].(string)
	return (&Token{
		Issuer:   iss,
		Subject:  sub,
		Scopes:   scopes,
		ClientID: clientID,
		JTI:      jti,
		Expiry:   exp,
		Claims:   claims,
	}).seal(), nil
}

// numericDate reads a JSON number of seconds since the epoch (RFC 7519
// section 2), fractions allowed.
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// decodeSegment decodes one base64url (unpadded) JSON segment into v.
func decodeSegment(seg string, v any) error {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// truncate bounds attacker-chosen strings before they reach the log.
func truncate(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func truncateAll(ss []string) []string {
	if len(ss) > 8 {
		ss = ss[:8]
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = truncate(s)
	}
	return out
}
