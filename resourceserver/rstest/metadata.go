package rstest

import (
	"encoding/json"
	"maps"
	"net/http"
)

// SetMetadata sets fields of the discovery document, adding them or
// replacing the fake's own; a nil value removes a field. A test uses it to
// serve odd metadata, and the dev sign-in (internal/devduo) to advertise
// the endpoints it serves in front of the fake (authorization_endpoint,
// token_endpoint, registration_endpoint, ...).
func (a *AuthServer) SetMetadata(fields map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	maps.Copy(a.metadata, fields)
}

// DisableRFC8414 makes the RFC 8414 metadata location
// (/.well-known/oauth-authorization-server + issuer path) answer 404, as
// authorization servers that only implement OpenID Connect Discovery do, so
// that a client's fallback can be tested.
func (a *AuthServer) DisableRFC8414() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rfc8414Disabled = true
}

// SetMetadataDown makes both discovery locations answer 503 while down is true.
func (a *AuthServer) SetMetadataDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.metadataDown = down
}

// MetadataFetches reports how many requests the two discovery locations
// have received together, whatever they answered.
func (a *AuthServer) MetadataFetches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metadataFetches
}

// serveMetadata serves the authorization server metadata (RFC 8414 section
// 3) at the RFC 8414 location or the OpenID Connect Discovery one; the
// document is the same at both. It lists what the fake serves, and the
// fields RFC 8414 and OpenID Connect Discovery require of every server.
func (a *AuthServer) serveMetadata(w http.ResponseWriter, r *http.Request, rfc8414 bool) {
	md := map[string]any{
		"issuer":                 a.issuer,
		"jwks_uri":               a.JWKSURL(),
		"introspection_endpoint": a.IntrospectionURL(),
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"response_types_supported":                      []string{"code"},   // required by RFC 8414
		"subject_types_supported":                       []string{"public"}, // required by OpenID Connect Discovery
		"id_token_signing_alg_values_supported":         algorithms,
	}
	a.mu.Lock()
	a.metadataFetches++
	disabled := rfc8414 && a.rfc8414Disabled
	down := a.metadataDown
	for k, v := range a.metadata {
		if v == nil {
			delete(md, k)
		} else {
			md[k] = v
		}
	}
	a.mu.Unlock()

	if disabled {
		http.NotFound(w, r)
		return
	}
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if down {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "temporarily_unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, md)
}

// writeJSON writes v as the JSON body of a response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "rstest: encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}
