package rstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// algorithms lists the signature algorithms the fake has keys for, in the
// order the metadata lists them.
var algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// signingKey is one key pair of the fake. A key is bound to one algorithm
// because its JWK carries an "alg" member, and verifiers (jwx among them)
// use that member rather than the token header to choose the algorithm.
type signingKey struct {
	kid     string
	alg     string
	private crypto.Signer
	public  jwk.Key // public half with kid, alg and use set; never modified after creation
	retired bool
}

func newSigningKey(alg string) *signingKey {
	var priv crypto.Signer
	var err error
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		panic(fmt.Sprintf("rstest: no keys for algorithm %q; want one of %v (WithHMAC, WithKey and WithUnsigned cover the rest)", alg, algorithms))
	}
	if err != nil {
		panic(fmt.Sprintf("rstest: generating %s key: %v", alg, err))
	}
	k := &signingKey{kid: randomString(12), alg: alg, private: priv}
	full, err := jwk.FromRaw(priv)
	if err != nil {
		panic(fmt.Sprintf("rstest: %s key to JWK: %v", alg, err))
	}
	pub, err := jwk.PublicKeyOf(full)
	if err != nil {
		panic(fmt.Sprintf("rstest: public half of %s JWK: %v", alg, err))
	}
	for name, v := range map[string]any{
		jwk.KeyIDKey:     k.kid,
		jwk.AlgorithmKey: jwa.SignatureAlgorithm(alg),
		jwk.KeyUsageKey:  jwk.ForSignature,
	} {
		if err := pub.Set(name, v); err != nil {
			panic(fmt.Sprintf("rstest: setting %s on %s JWK: %v", name, alg, err))
		}
	}
	k.public = pub
	return k
}

// currentKey returns the key Mint uses for alg, making it on first use.
func (a *AuthServer) currentKey(alg string) *signingKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	if k, ok := a.current[alg]; ok {
		return k
	}
	return a.addKeyLocked(alg)
}

func (a *AuthServer) addKeyLocked(alg string) *signingKey {
	k := newSigningKey(alg)
	a.keys = append(a.keys, k)
	a.current[alg] = k
	return k
}

// Rotate makes a new current key for alg and returns its kid. Tokens minted
// afterwards carry the new kid; the old key stays published until [AuthServer.Retire].
// It panics if alg is not one of RS256, RS384, RS512, PS256, PS384, PS512,
// ES256, ES384, ES512 or EdDSA.
func (a *AuthServer) Rotate(alg string) (newKID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addKeyLocked(alg).kid
}

// Retire stops publishing the key kid in the JWKS. It does not change which
// key Mint uses: if kid is still the current key of its algorithm, tokens
// minted afterwards name a kid the JWKS no longer lists (call [AuthServer.Rotate]
// for a fresh published key). It panics if no key has that kid.
func (a *AuthServer) Retire(kid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.keys {
		if k.kid == kid {
			k.retired = true
			return
		}
	}
	panic(fmt.Sprintf("rstest: Retire: no key with kid %q", kid))
}

// KID returns the kid of the current key for alg, making the key on first
// use. It panics for the algorithms [AuthServer.Rotate] panics for.
func (a *AuthServer) KID(alg string) string { return a.currentKey(alg).kid }

// SetJWKSDown makes the JWKS endpoint answer 503 while down is true.
func (a *AuthServer) SetJWKSDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.jwksDown = down
}

// JWKSFetches reports how many requests the JWKS endpoint has received,
// whatever it answered.
func (a *AuthServer) JWKSFetches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.jwksFetches
}

// serveJWKS serves the published public keys (RFC 7517 section 5).
func (a *AuthServer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.jwksFetches++
	down := a.jwksDown
	published := make([]jwk.Key, 0, len(a.keys))
	for _, k := range a.keys {
		if !k.retired {
			published = append(published, k.public)
		}
	}
	a.mu.Unlock()

	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if down {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "temporarily_unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Keys []jwk.Key `json:"keys"`
	}{Keys: published})
}
