package devduo

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// SignIn is the sign-in side of an OAuth 2.1 authorization server, served
// in front of an [rstest.AuthServer] that keeps the keys, mints the tokens
// and answers discovery, JWKS and introspection. It is an http.Handler;
// all methods are safe for concurrent use.
//
// Endpoints, under the issuer's path P (the rest go to the rstest fake):
//
//	POST P/register                                    RFC 7591, open registration
//	GET  P/authorize                                   code flow: login and consent pages
//	POST P/authorize                                   the login and consent forms
//	POST P/token                                       authorization_code, refresh_token
//	POST P/revoke                                      RFC 7009
//	GET  P/admin                                       scope admin page (no auth!)
//	GET  P/admin/api/users                             users and scopes as JSON
//	POST, DELETE P/admin/api/users/{user}/scopes/{scope}  grant, revoke
//
// Scopes are live: revoking one from a user (the admin page) removes it
// from the introspection answer of tokens already issued and from every
// later refresh, the way revoking a scope in Duo's Scope Authorization
// turns a tool off.
type SignIn struct {
	as     *rstest.AuthServer
	issuer string
	path   string // the issuer's path without a terminating "/"; the endpoints are under it

	// csrf guards the HTML forms (login, consent, admin) against
	// cross-origin posts; the JSON endpoints that browser-based clients call
	// cross-origin (register, token, revoke) are not behind it.
	csrf *http.CrossOriginProtection

	mu        sync.Mutex
	scopes    []string // scopes_supported: every scope the users held when set
	users     []User
	resources []string // empty: any absolute URL
	autoLogin string
	tokenTTL  time.Duration
	clients   map[string]*client
	pending   map[string]*pendingAuth
	codes     map[string]*authCode
	refresh   map[string]*refreshToken
	access    map[string]*accessToken

	// persistMu orders the saves of the registrations (clients.go), so
	// that the file ends with the latest; clientsPath is "" until
	// KeepClients.
	persistMu   sync.Mutex
	clientsPath string

	// Client ID Metadata Documents (cimd.go).
	documentClient  *http.Client  // nil: defaultDocumentClient
	documentTimeout time.Duration // 0: defaultDocumentTimeout
}

// NewSignIn returns the sign-in for the fake as, whose issuer it serves
// under, and adds its endpoints to as's discovery metadata. Nobody can sign
// in until [SignIn.SetUsers] lists who may.
func NewSignIn(as *rstest.AuthServer) *SignIn {
	u, _ := url.Parse(as.Issuer()) // checked by rstest.NewAuthServer
	si := &SignIn{
		as:       as,
		issuer:   as.Issuer(),
		path:     strings.TrimSuffix(u.Path, "/"),
		csrf:     http.NewCrossOriginProtection(),
		tokenTTL: defaultTokenLifetime,
		clients:  make(map[string]*client),
		pending:  make(map[string]*pendingAuth),
		codes:    make(map[string]*authCode),
		refresh:  make(map[string]*refreshToken),
		access:   make(map[string]*accessToken),
	}
	base := strings.TrimSuffix(si.issuer, "/")
	as.SetMetadata(map[string]any{
		"authorization_endpoint":                     base + "/authorize",
		"token_endpoint":                             base + "/token",
		"registration_endpoint":                      base + "/register",
		"revocation_endpoint":                        base + "/revoke",
		"response_modes_supported":                   []string{"query"},
		"grant_types_supported":                      []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      clientAuthMethods,
		"revocation_endpoint_auth_methods_supported": clientAuthMethods,
		// RFC 9207: the authorization response carries iss.
		"authorization_response_iss_parameter_supported": true,
		// draft-ietf-oauth-client-id-metadata-document section 6.
		"client_id_metadata_document_supported": true,
	})
	return si
}

// clientAuthMethods are the client authentication methods of the token and
// revocation endpoints; "none" is for public clients, which rely on PKCE.
var clientAuthMethods = []string{"none", "client_secret_basic", "client_secret_post"}

// AdminURL returns the URL of the scope admin page: the issuer followed by
// "/admin". Its JSON API is under AdminURL()+"/api/users".
func (si *SignIn) AdminURL() string { return strings.TrimSuffix(si.issuer, "/") + "/admin" }

// ServeHTTP serves the endpoints listed on [SignIn] and hands every other
// request to the rstest fake.
func (si *SignIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, si.path)
	if !ok {
		rest = ""
	}
	switch rest {
	case "/introspect":
		// Called by resource servers, never by browsers: no CORS.
		si.as.ServeHTTP(w, r)
	case "/register":
		if !preflight(w, r) {
			si.serveRegister(w, r)
		}
	case "/authorize":
		si.serveAuthorize(w, r)
	case "/token":
		if !preflight(w, r) {
			si.serveToken(w, r)
		}
	case "/revoke":
		if !preflight(w, r) {
			si.serveRevoke(w, r)
		}
	case "/admin":
		si.csrf.Handler(http.HandlerFunc(si.serveAdminPage)).ServeHTTP(w, r)
	default:
		if strings.HasPrefix(rest, "/admin/api/") {
			si.csrf.Handler(http.HandlerFunc(si.serveAdminAPI)).ServeHTTP(w, r)
			return
		}
		// Discovery and JWKS, which browser-based clients fetch too.
		if !preflight(w, r) {
			si.as.ServeHTTP(w, r)
		}
	}
}

// preflight makes a response readable by browser-based clients such as MCP
// Inspector, which fetch discovery documents and call the registration,
// token and revocation endpoints cross-origin, and answers a CORS
// preflight, returning true when it did. Credentials travel in the
// Authorization header or the body, never in cookies, so "*" is safe.
func preflight(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, MCP-Protocol-Version")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// allowMethod answers 405 and returns false unless r uses method.
func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeOAuthError(w, r, &oauthError{code: "invalid_request", desc: "use " + method, status: http.StatusMethodNotAllowed})
	return false
}

// writeJSON writes v as the JSON body of a response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "devduo: encoding response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
