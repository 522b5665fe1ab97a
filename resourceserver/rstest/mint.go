package rstest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// A MintOption changes how [AuthServer.Mint] builds a token.
type MintOption func(*mintConfig)

type signMode int

const (
	signServer   signMode = iota // a key of the fake, published in its JWKS
	signKey                      // WithKey
	signHMAC                     // WithHMAC
	signUnsigned                 // WithUnsigned
)

type mintConfig struct {
	alg     string // "" means the default for the mode
	mode    signMode
	key     any
	kid     string
	headers []headerEdit
	tamper  bool
	answer  func(claims map[string]any) map[string]any
}

type headerEdit struct {
	name  string
	value any // nil removes the field
}

// WithAlg chooses the signature algorithm: "RS256" (the default), "RS384",
// "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512" or "EdDSA".
// The fake keeps one current key per algorithm, made on first use. With
// [WithKey] or [WithHMAC] it names the algorithm used with that key instead.
func WithAlg(alg string) MintOption {
	return func(c *mintConfig) { c.alg = alg }
}

// WithHeader sets the protected header field name to value, overriding what
// Mint would put there ("alg", "typ" and "kid"); a nil value removes the
// field. Any field can be set, including ones verifiers must refuse ("crit",
// "jku", "jwk", "x5u", "x5c"). Setting "alg" changes only what the header
// claims: the signature is still made with the algorithm Mint chose.
func WithHeader(name string, value any) MintOption {
	return func(c *mintConfig) { c.headers = append(c.headers, headerEdit{name, value}) }
}

// WithKey signs with key, which the fake does not publish, instead of one of
// its own: a crypto.Signer (*rsa.PrivateKey, *ecdsa.PrivateKey,
// ed25519.PrivateKey) or a []byte HMAC secret. The header carries kid unless
// kid is empty, so a token can claim a published kid while being signed by
// an attacker's key. Without [WithAlg] the algorithm follows from the key:
// RS256, ES256/ES384/ES512 by curve, EdDSA or HS256.
func WithKey(key any, kid string) MintOption {
	return func(c *mintConfig) { c.mode, c.key, c.kid = signKey, key, kid }
}

// WithUnsigned produces an unsecured JWT (RFC 7515 appendix A.5): "alg" is
// "none" and the signature is empty. Like [WithHMAC] the header names the
// current RS256 kid, as an attacker would, so a verifier that looks keys up by
// kid gets as far as its algorithm check.
func WithUnsigned() MintOption {
	return func(c *mintConfig) { c.mode = signUnsigned }
}

// WithHMAC signs with HS256 (or HS384/HS512 given by [WithAlg]) using
// secret. The header names the current RS256 kid, so the token is the shape
// of an algorithm-confusion attack: pass the PEM or DER of that public key as
// the secret to make the real thing.
func WithHMAC(secret []byte) MintOption {
	return func(c *mintConfig) { c.mode, c.key = signHMAC, secret }
}

// WithTamperedSignature flips one bit of the signature after signing.
func WithTamperedSignature() MintOption {
	return func(c *mintConfig) { c.tamper = true }
}

// WithIntrospection makes the introspection endpoint answer for the token
// with what answer returns, asked afresh at each introspection while the
// token is neither expired nor revoked: the claims to answer with (answer
// is given a copy of the minted ones, numbers as json.Number, to change or
// return), or nil for an inactive token. It is how a token's introspection
// answer changes after it is issued, as a real server's does when a grant
// is revoked or a user loses a scope; the dev sign-in (internal/devduo)
// mints every token with it. answer is called without the fake's lock held
// and must be safe for concurrent use. Such tokens are forgotten once
// expired, so that a long-running sign-in does not grow.
func WithIntrospection(answer func(claims map[string]any) map[string]any) MintOption {
	return func(c *mintConfig) { c.answer = answer }
}

// Mint returns a compact-serialized JWT whose payload is claims, used as
// given: nothing is added, so a test can build tokens with missing or wrong
// claims ([AuthServer.Claims] makes a valid set). By default the token is
// signed with the current RS256 key and its header is
// {"alg":"RS256","kid":<kid>,"typ":"JWT"}; options change that.
//
// Tokens signed with one of the fake's own keys, untampered, are remembered
// for introspection; the others were never issued by this server and
// introspect as inactive. Mint panics if it cannot build the token.
func (a *AuthServer) Mint(claims map[string]any, opts ...MintOption) string {
	var c mintConfig
	for _, o := range opts {
		o(&c)
	}

	alg, kid, key := c.alg, "", c.key
	switch c.mode {
	case signServer:
		if alg == "" {
			alg = "RS256"
		}
		k := a.currentKey(alg)
		kid, key = k.kid, k.private
	case signKey:
		if alg == "" {
			alg = inferAlg(key)
		}
		kid = c.kid
	case signHMAC:
		if !strings.HasPrefix(alg, "HS") {
			alg = "HS256"
		}
		kid = a.KID("RS256")
	case signUnsigned:
		alg = "none"
		kid = a.KID("RS256")
	}

	header := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		header["kid"] = kid
	}
	for _, e := range c.headers {
		if e.value == nil {
			delete(header, e.name)
		} else {
			header[e.name] = e.value
		}
	}

	// Built by hand rather than with jws.Sign, which would refuse some of the
	// headers and algorithms tests need (RFC 7515 section 7.1).
	input := b64JSON(header) + "." + b64JSON(claims)
	var sig []byte
	if c.mode != signUnsigned {
		signer, err := jws.NewSigner(jwa.SignatureAlgorithm(alg))
		if err != nil {
			panic(fmt.Sprintf("rstest: Mint: %v", err))
		}
		if sig, err = signer.Sign([]byte(input), key); err != nil {
			panic(fmt.Sprintf("rstest: Mint: signing with %s: %v", alg, err))
		}
	}
	if c.tamper && len(sig) > 0 {
		sig[len(sig)/2] ^= 0x01
	}
	token := input + "." + base64.RawURLEncoding.EncodeToString(sig)

	if c.mode == signServer && !c.tamper {
		a.remember(token, claims, c.answer)
	}
	return token
}

// inferAlg picks the usual JWS algorithm for a caller-supplied key.
func inferAlg(key any) string {
	switch k := key.(type) {
	case []byte:
		return "HS256"
	case crypto.Signer:
		switch pub := k.Public().(type) {
		case *rsa.PublicKey:
			return "RS256"
		case *ecdsa.PublicKey:
			switch pub.Curve.Params().BitSize {
			case 384:
				return "ES384"
			case 521:
				return "ES512"
			}
			return "ES256"
		case ed25519.PublicKey:
			return "EdDSA"
		}
	}
	panic(fmt.Sprintf("rstest: WithKey: unsupported key type %T; want an RSA, ECDSA or Ed25519 crypto.Signer or a []byte", key))
}

// b64JSON returns the base64url encoding of v as JSON, unescaped so that
// what a test put in is what the verifier sees.
func b64JSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("rstest: Mint: encoding JSON: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// Claims returns a valid claim set for an access token issued by a to
// client [ClientID] for user sub and audience aud: iss, sub, aud, scope (the
// scopes space-separated, RFC 8693 section 4.2; absent when there are none),
// client_id, iat now, exp an hour from now and a random jti. Change or delete
// entries to make broken tokens.
func (a *AuthServer) Claims(sub, aud string, scopes ...string) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss":       a.issuer,
		"sub":       sub,
		"aud":       aud,
		"client_id": ClientID,
		"iat":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"jti":       randomString(16),
	}
	if len(scopes) > 0 {
		c["scope"] = strings.Join(scopes, " ")
	}
	return c
}
