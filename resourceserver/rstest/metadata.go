package rstest

import (
	"encoding/json"
	"net/http"
)

// SetScopesSupported sets the scopes_supported list of the metadata; an
// empty list leaves the field out. The default is crm.contacts.read
// crm.contacts.write crm.deals.read crm.deals.write. [AuthServer.GrantScope]
// grants only scopes in this list, unless it is empty.
func (a *AuthServer) SetScopesSupported(scopes []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.scopes = append([]string(nil), scopes...)
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

// DisableOpenIDDiscovery makes the OpenID Connect Discovery location (issuer
// path + /.well-known/openid-configuration) answer 404, leaving only RFC
// 8414 metadata.
func (a *AuthServer) DisableOpenIDDiscovery() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.oidcDisabled = true
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
// document is the same at both.
func (a *AuthServer) serveMetadata(w http.ResponseWriter, r *http.Request, rfc8414 bool) {
	a.mu.Lock()
	a.metadataFetches++
	disabled := a.oidcDisabled
	if rfc8414 {
		disabled = a.rfc8414Disabled
	}
	down := a.metadataDown
	scopes := a.scopes
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
	md := map[string]any{
		"issuer":                                        a.issuer,
		"jwks_uri":                                      a.JWKSURL(),
		"authorization_endpoint":                        a.AuthorizationURL(),
		"token_endpoint":                                a.TokenURL(),
		"registration_endpoint":                         a.RegistrationURL(),
		"revocation_endpoint":                           a.RevocationURL(),
		"introspection_endpoint":                        a.IntrospectionURL(),
		"response_types_supported":                      []string{"code"},
		"response_modes_supported":                      []string{"query"},
		"grant_types_supported":                         []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":              []string{"S256"},
		"subject_types_supported":                       []string{"public"}, // required by OpenID Connect Discovery
		"id_token_signing_alg_values_supported":         algorithms,
		"token_endpoint_auth_methods_supported":         clientAuthMethods,
		"revocation_endpoint_auth_methods_supported":    clientAuthMethods,
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		// RFC 9207: the authorization response carries iss.
		"authorization_response_iss_parameter_supported": true,
		// draft-ietf-oauth-client-id-metadata-document section 6.
		"client_id_metadata_document_supported": true,
	}
	if len(scopes) > 0 {
		md["scopes_supported"] = scopes
	}
	writeJSON(w, http.StatusOK, md)
}

// clientAuthMethods are the client authentication methods of the token and
// revocation endpoints; "none" is for public clients, which rely on PKCE.
var clientAuthMethods = []string{"none", "client_secret_basic", "client_secret_post"}

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
