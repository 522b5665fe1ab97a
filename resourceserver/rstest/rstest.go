// Package rstest provides a fake OAuth 2.1 authorization server for testing
// the resource server: it mints tokens, rotates keys, and serves a JWKS,
// discovery metadata and RFC 7662 introspection.
//
// NEVER USE IT IN PRODUCTION. Its keys, tokens and client secrets are for
// tests only.
//
// It is modelled on net/http/httptest: an [AuthServer] is an http.Handler,
// [NewServer] and [NewTLSServer] put it on a loopback listener, and the
// setup helpers panic instead of returning errors. It mints tokens, good
// and deliberately broken, and can be told to fail (JWKS, discovery or
// introspection down):
//
//	srv := rstest.NewServer()
//	defer srv.Close()
//
//	tok := srv.Mint(srv.Claims("alice", "http://127.0.0.1:8080/mcp", "crm.contacts.read"))
//	bad := srv.Mint(srv.Claims("alice", "http://127.0.0.1:8080/mcp"), rstest.WithTamperedSignature())
//
// Endpoints, under the issuer's path P:
//
//	GET  /.well-known/oauth-authorization-server + P   RFC 8414 metadata
//	GET  P/.well-known/openid-configuration            OpenID Connect discovery
//	GET  P/jwks                                        signing keys
//	POST P/introspect                                  RFC 7662 (client secret auth)
//
// It has no sign-in: no authorization, token or registration endpoint.
// The one crm-mcp dev runs (login and consent pages, registration, Client
// ID Metadata Documents, refresh, the scope admin page) is
// internal/devduo, which serves those pages in front of an AuthServer and
// mints through it; [AuthServer.SetMetadata] and [WithIntrospection] are
// the two hooks it needs.
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

// AuthServer is a fake authorization server. It is an http.Handler; all
// methods are safe for concurrent use.
type AuthServer struct {
	issuer string // exactly as given: the value of iss and of metadata "issuer"
	base   string // issuer without a terminating "/", to which endpoint paths are appended

	// Request paths of the endpoints (RFC 8414 section 3.1 and OpenID
	// Connect Discovery 1.0 section 4.1 both drop a terminating "/").
	rfc8414Path    string
	oidcPath       string
	jwksPath       string
	introspectPath string

	mu                 sync.Mutex
	keys               []*signingKey          // every key made, in creation order
	current            map[string]*signingKey // algorithm -> key Mint uses
	tokens             map[string]*issued     // tokens introspection knows
	metadata           map[string]any         // SetMetadata's fields
	rfc8414Disabled    bool
	jwksDown           bool
	metadataDown       bool
	introspectionDown  bool
	clientID           string
	clientSecret       string
	jwksFetches        int
	metadataFetches    int
	introspectionCalls int
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
		rfc8414Path:    "/.well-known/oauth-authorization-server" + p,
		oidcPath:       p + "/.well-known/openid-configuration",
		jwksPath:       p + "/jwks",
		introspectPath: p + "/introspect",
		current:        make(map[string]*signingKey),
		tokens:         make(map[string]*issued),
		metadata:       make(map[string]any),
		clientID:       DefaultIntrospectionClientID,
		clientSecret:   DefaultIntrospectionClientSecret,
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

// ServeHTTP serves the endpoints listed in the package documentation;
// everything else is 404.
func (a *AuthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case a.rfc8414Path:
		a.serveMetadata(w, r, true)
	case a.oidcPath:
		a.serveMetadata(w, r, false)
	case a.jwksPath:
		a.serveJWKS(w, r)
	case a.introspectPath:
		a.serveIntrospection(w, r)
	default:
		http.NotFound(w, r)
	}
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
