// Package rstest provides a fake OAuth 2.1 authorization server for testing
// the resource server, and for the dev mode that runs without a real one.
//
// NEVER USE IT IN PRODUCTION. Its keys, tokens and client secrets are for
// tests only, anyone who can reach it can sign in as any of its users
// without a password, and its scope admin page and API have no
// authentication at all.
//
// The fake speaks the real protocols, so the code under test (and real MCP
// clients, in the dev mode) do their real work against it: RFC 8414 and
// OpenID Connect discovery, a JWKS endpoint with key rotation, RFC 7662
// token introspection, RFC 7591 dynamic client registration, Client ID
// Metadata Documents (a client_id that is an https URL naming the client's
// metadata; see [AuthServer.SetMetadataDocumentClient]), the authorization
// code grant with PKCE (RFC 7636, S256 only) and resource indicators (RFC
// 8707), rotating refresh tokens and RFC 7009 revocation.
// It mints tokens, good and deliberately broken, and can be told to fail
// (JWKS or discovery down). It is modelled on net/http/httptest: an
// [AuthServer] is an http.Handler, [NewServer] and [NewTLSServer] put it on
// a loopback listener, and the setup helpers panic instead of returning
// errors.
//
//	srv := rstest.NewServer()
//	defer srv.Close()
//
//	tok := srv.Mint(srv.Claims("alice", "http://127.0.0.1:8080/mcp", "crm.contacts.read"))
//	bad := srv.Mint(srv.Claims("alice", "http://127.0.0.1:8080/mcp"), rstest.WithTamperedSignature())
//
// For the full flow, give it users and, optionally, the resources it
// issues tokens for; a client then registers, sends the user to the
// authorization endpoint and exchanges the code:
//
//	srv.SetUsers(rstest.DevUsers()...)
//	srv.SetResources("http://127.0.0.1:8080/mcp")
//	srv.SetAutoLogin("alice") // or login_hint=alice, or the login page
//
// Endpoints, under the issuer's path P:
//
//	GET  /.well-known/oauth-authorization-server + P   RFC 8414 metadata
//	GET  P/.well-known/openid-configuration            OpenID Connect discovery
//	GET  P/jwks                                        signing keys
//	POST P/introspect                                  RFC 7662 (client secret auth)
//	POST P/register                                    RFC 7591, open registration
//	GET  P/authorize                                   code flow: login and consent pages
//	POST P/authorize                                   the login and consent forms
//	POST P/token                                       authorization_code, refresh_token
//	POST P/revoke                                      RFC 7009
//	GET  P/admin                                       scope admin page (no auth!)
//	GET  P/admin/api/users                             users and scopes as JSON
//	POST, DELETE P/admin/api/users/{user}/scopes/{scope}  grant, revoke
//
// Scopes are live: revoking one from a user ([AuthServer.RevokeScope] or
// the admin page) removes it from the introspection answer of tokens
// already issued and from every later refresh, the way revoking a scope in
// Duo's Scope Authorization turns a tool off.
package rstest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Default client credentials accepted by the introspection endpoint; see
// [AuthServer.SetIntrospectionClient].
const (
	DefaultIntrospectionClientID     = "rs-client"
	DefaultIntrospectionClientSecret = "rs-secret"
)

// ClientID is the client_id claim that [AuthServer.Claims] sets: the OAuth
// client the fake pretends to have issued its tokens to.
const ClientID = "rstest-client"

// defaultScopes are listed in scopes_supported until
// [AuthServer.SetScopesSupported] changes them.
var defaultScopes = []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}

// AuthServer is a fake authorization server. It is an http.Handler; all
// methods are safe for concurrent use.
type AuthServer struct {
	issuer string // exactly as given: the value of iss and of metadata "issuer"
	base   string // issuer without a terminating "/", to which endpoint paths are appended

	// Request paths of the endpoints (RFC 8414 section 3.1 and OpenID
	// Connect Discovery 1.0 section 4.1 both drop a terminating "/").
	path           string // the issuer's path without a terminating "/"; other endpoints are under it
	rfc8414Path    string
	oidcPath       string
	jwksPath       string
	introspectPath string

	// csrf guards the HTML forms (login, consent, admin) against
	// cross-origin posts; the JSON endpoints that browser-based clients call
	// cross-origin (register, token, revoke) are not behind it.
	csrf *http.CrossOriginProtection

	mu                 sync.Mutex
	keys               []*signingKey          // every key made, in creation order
	current            map[string]*signingKey // algorithm -> key Mint uses
	tokens             map[string]*issued     // tokens introspection knows
	scopes             []string
	rfc8414Disabled    bool
	oidcDisabled       bool
	jwksDown           bool
	metadataDown       bool
	introspectionDown  bool
	clientID           string
	clientSecret       string
	jwksFetches        int
	metadataFetches    int
	introspectionCalls int

	// The authorization code flow (users.go, register.go, authorize.go,
	// token.go, revoke.go).
	users     []User
	resources []string // empty: any absolute URL
	autoLogin string
	tokenTTL  time.Duration
	clients   map[string]*client
	pending   map[string]*pendingAuth
	codes     map[string]*authCode
	refresh   map[string]*refreshToken

	// Client ID Metadata Documents (cimd.go).
	documentClient  *http.Client  // nil: defaultDocumentClient
	documentTimeout time.Duration // 0: defaultDocumentTimeout
}

// NewAuthServer returns a fake authorization server whose issuer identifier
// is issuer, a full URL such as "http://127.0.0.1:1234/oauth2/test". The
// handler serves paths relative to the issuer's host, so mount it at the root
// of that host. It panics if issuer is not an absolute http or https URL
// without query, fragment or user information (RFC 8414 section 2).
func NewAuthServer(issuer string) *AuthServer {
	u, err := url.Parse(issuer)
	if err != nil {
		panic(fmt.Sprintf("rstest: malformed issuer %q: %v", issuer, err))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		panic(fmt.Sprintf("rstest: malformed issuer %q: want an http or https URL with a host and no query, fragment or user", issuer))
	}
	p := strings.TrimSuffix(u.Path, "/")
	a := &AuthServer{
		issuer:         issuer,
		base:           strings.TrimSuffix(issuer, "/"),
		path:           p,
		rfc8414Path:    "/.well-known/oauth-authorization-server" + p,
		oidcPath:       p + "/.well-known/openid-configuration",
		jwksPath:       p + "/jwks",
		introspectPath: p + "/introspect",
		current:        make(map[string]*signingKey),
		tokens:         make(map[string]*issued),
		scopes:         append([]string(nil), defaultScopes...),
		clientID:       DefaultIntrospectionClientID,
		clientSecret:   DefaultIntrospectionClientSecret,
		csrf:           http.NewCrossOriginProtection(),
		tokenTTL:       DefaultTokenLifetime,
		clients:        make(map[string]*client),
		pending:        make(map[string]*pendingAuth),
		codes:          make(map[string]*authCode),
		refresh:        make(map[string]*refreshToken),
	}
	return a
}

// Issuer returns the issuer identifier exactly as given to [NewAuthServer].
func (a *AuthServer) Issuer() string { return a.issuer }

// JWKSURL returns the URL of the JWKS endpoint: the issuer followed by "/jwks".
func (a *AuthServer) JWKSURL() string { return a.base + "/jwks" }

// IntrospectionURL returns the URL of the RFC 7662 introspection endpoint:
// the issuer followed by "/introspect".
func (a *AuthServer) IntrospectionURL() string { return a.base + "/introspect" }

// RegistrationURL returns the URL of the RFC 7591 registration endpoint:
// the issuer followed by "/register".
func (a *AuthServer) RegistrationURL() string { return a.base + "/register" }

// AuthorizationURL returns the URL of the authorization endpoint: the
// issuer followed by "/authorize".
func (a *AuthServer) AuthorizationURL() string { return a.base + "/authorize" }

// TokenURL returns the URL of the token endpoint: the issuer followed by
// "/token".
func (a *AuthServer) TokenURL() string { return a.base + "/token" }

// RevocationURL returns the URL of the RFC 7009 revocation endpoint: the
// issuer followed by "/revoke".
func (a *AuthServer) RevocationURL() string { return a.base + "/revoke" }

// AdminURL returns the URL of the scope admin page: the issuer followed by
// "/admin". Its JSON API is under AdminURL()+"/api/users".
func (a *AuthServer) AdminURL() string { return a.base + "/admin" }

// ServeHTTP serves the endpoints listed in the package documentation;
// everything else is 404.
func (a *AuthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case a.rfc8414Path:
		if !preflight(w, r) {
			a.serveMetadata(w, r, true)
		}
		return
	case a.oidcPath:
		if !preflight(w, r) {
			a.serveMetadata(w, r, false)
		}
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, a.path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch rest {
	case "/jwks":
		if !preflight(w, r) {
			a.serveJWKS(w, r)
		}
	case "/introspect":
		// Called by resource servers, never by browsers: no CORS.
		a.serveIntrospection(w, r)
	case "/register":
		if !preflight(w, r) {
			a.serveRegister(w, r)
		}
	case "/authorize":
		a.serveAuthorize(w, r)
	case "/token":
		if !preflight(w, r) {
			a.serveToken(w, r)
		}
	case "/revoke":
		if !preflight(w, r) {
			a.serveRevoke(w, r)
		}
	case "/admin":
		a.csrf.Handler(http.HandlerFunc(a.serveAdminPage)).ServeHTTP(w, r)
	default:
		if strings.HasPrefix(rest, "/admin/api/") {
			a.csrf.Handler(http.HandlerFunc(a.serveAdminAPI)).ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
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
	writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "invalid_request"})
	return false
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Server is an [AuthServer] behind an httptest.Server on a loopback address.
type Server struct {
	*AuthServer
	HTTP *httptest.Server
}

// NewServer starts a plain-HTTP fake authorization server on a loopback
// address. Its issuer is the server's URL followed by "/oauth2/test", a path
// shaped like Duo's (https://sso-x.sso.duosecurity.com/oauth2/<app_id>), so
// path-aware discovery is exercised. The caller must call Close.
func NewServer() *Server { return newServer(false) }

// NewTLSServer is like [NewServer] but serves HTTPS; s.HTTP.Client() returns
// a client that trusts its certificate.
func NewTLSServer() *Server { return newServer(true) }

func newServer(useTLS bool) *Server {
	// The listener exists before the server starts, so the issuer (which
	// contains the address) is known before the handler is installed.
	ts := httptest.NewUnstartedServer(nil)
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	as := NewAuthServer(scheme + "://" + ts.Listener.Addr().String() + "/oauth2/test")
	ts.Config.Handler = as
	if useTLS {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	return &Server{AuthServer: as, HTTP: ts}
}

// Close shuts the server down, blocking until outstanding requests finish.
func (s *Server) Close() { s.HTTP.Close() }
