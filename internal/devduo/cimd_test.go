package devduo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
)

// docHost is a client's web site serving Client ID Metadata Documents, over
// TLS unless plain is asked for. requests counts every request it gets.
type docHost struct {
	srv      *httptest.Server
	mux      *http.ServeMux
	base     string // scheme://host:port
	requests atomic.Int32
}

func newDocHost(t *testing.T, useTLS bool) *docHost {
	t.Helper()
	h := &docHost{mux: http.NewServeMux()}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.requests.Add(1)
		h.mux.ServeHTTP(w, r)
	}))
	if useTLS {
		h.srv.StartTLS()
	} else {
		h.srv.Start()
	}
	t.Cleanup(h.srv.Close)
	h.base = h.srv.URL
	return h
}

// serve answers path with doc as application/json and returns the path's URL.
func (h *docHost) serve(path string, doc any) string {
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { writeDoc(w, doc) })
	return h.base + path
}

func writeDoc(w http.ResponseWriter, doc any) {
	body, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// clientDoc is a good metadata document for the client whose id is id.
func clientDoc(id string) map[string]any {
	return map[string]any{
		"client_id":                  id,
		"client_name":                `Doc <b>Client</b>`,
		"client_uri":                 "https://client.example",
		"redirect_uris":              []string{redirectURI},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
}

// with returns a copy of doc with k set to v, or deleted when v is nil.
func with(doc map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(doc))
	for key, val := range doc {
		out[key] = val
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// authorizeJSON sends an authorization request asking for JSON errors and
// returns the response, not following redirects; the caller closes it.
func authorizeJSON(t *testing.T, srv *server, params url.Values) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.AuthorizationURL()+"?"+params.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/json")
	resp, err := noRedirects(srv).Do(req)
	require.NoError(t, err)
	return resp
}

func TestMetadataDocumentSupportIsAdvertised(t *testing.T) {
	srv := flowServer(t)
	for _, p := range []string{"/.well-known/oauth-authorization-server/oauth2/test", "/oauth2/test/.well-known/openid-configuration"} {
		status, body := get(t, srv, srv.HTTP.URL+p)
		require.Equal(t, http.StatusOK, status)
		var md map[string]any
		require.NoError(t, json.Unmarshal(body, &md))
		assert.Equal(t, true, md["client_id_metadata_document_supported"], p)
	}
}

// A client whose id is the https URL of its metadata document signs in
// without registering: the fake fetches the document, shows its name on
// the login and consent pages, and issues tokens to the URL.
func TestMetadataDocumentFlow(t *testing.T) {
	srv := flowServer(t)
	host := newDocHost(t, true)
	srv.SetMetadataDocumentClient(host.srv.Client())
	id := host.base + "/oauth/client.json"
	var accept atomic.Value
	host.mux.HandleFunc("/oauth/client.json", func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		writeDoc(w, clientDoc(id))
	})

	verifier, challenge := pkce()
	params := authParams(id, challenge)
	params.Set("scope", "crm.contacts.read crm.deals.read")
	pending, page := pendingID(t, authorize(t, srv, params))
	assert.Equal(t, int32(1), host.requests.Load(), "the document is fetched for the request")
	assert.Equal(t, "application/json", accept.Load())
	u, _ := url.Parse(id)
	assert.Contains(t, page, "Doc &lt;b&gt;Client&lt;/b&gt;", "client_name, escaped")
	assert.NotContains(t, page, "<b>Client</b>")
	assert.Contains(t, page, "<strong>"+u.Host+"</strong>", "the host that served the document")

	consentID, page := pendingID(t, postForm(t, srv, url.Values{"pending": {pending}, "step": {"login"}, "user": {"carol"}}))
	assert.Contains(t, page, "<strong>Doc &lt;b&gt;Client&lt;/b&gt;</strong>", "client_name on the consent page")
	assert.Contains(t, page, "<code>"+id+"</code>", "and the client_id URL")
	assert.Contains(t, page, "<strong>"+u.Host+"</strong>")
	q := redirected(t, postForm(t, srv, url.Values{"pending": {consentID}, "step": {"consent"}, "decision": {"approve"}}))
	require.NotEmpty(t, q.Get("code"), "error %s: %s", q.Get("error"), q.Get("error_description"))

	status, tok := token(t, srv, exchangeForm(id, q.Get("code"), verifier), "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	access := tok["access_token"].(string)
	parsed, err := jwt.Parse([]byte(access), jwt.WithKeySet(fetchJWKS(t, srv)), jwt.WithIssuer(srv.Issuer()), jwt.WithAudience(resource))
	require.NoError(t, err)
	cid, _ := parsed.Get("client_id")
	assert.Equal(t, id, cid, "tokens carry the URL as client_id")
	assert.Equal(t, "carol", parsed.Subject())

	// Refresh, with the id in Basic as x/oauth2 sends it: the client is
	// public (the document says none), so the password is empty.
	status, refreshed := token(t, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}}, id, "")
	require.Equal(t, http.StatusOK, status, "refresh answer %v", refreshed)
	assert.NotEmpty(t, refreshed["access_token"])

	// A secret is refused: a document cannot establish one.
	status, body := token(t, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshed["refresh_token"].(string)}}, id, "guess")
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Equal(t, "invalid_client", body["error"])

	// Each authorization request fetches afresh, so an edit takes effect
	// at once.
	code(t, srv, params, "alice")
	assert.Equal(t, int32(2), host.requests.Load())
}

// Without SetMetadataDocumentClient, the default client fetches from
// loopback over plain http (a client under development), and does not
// trust a certificate it has no reason to.
func TestMetadataDocumentDefaultClient(t *testing.T) {
	srv := flowServer(t)
	_, challenge := pkce()

	plain := newDocHost(t, false)
	id := plain.base + "/client.json"
	plain.serve("/client.json", clientDoc(id))
	assert.NotEmpty(t, code(t, srv, authParams(id, challenge), "alice"), "http on a loopback host")

	untrusted := newDocHost(t, true)
	id = untrusted.base + "/client.json"
	untrusted.serve("/client.json", clientDoc(id))
	resp := authorizeJSON(t, srv, authParams(id, challenge))
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	body := decode(t, resp)
	assert.Equal(t, "invalid_client", body["error"])
	assert.Equal(t, "The client's metadata document (its client_id URL) could not be fetched.", body["error_description"],
		"no TLS or network detail")
}

func TestMetadataDocumentErrors(t *testing.T) {
	srv := flowServer(t)
	host := newDocHost(t, true)
	srv.SetMetadataDocumentClient(host.srv.Client())
	srv.SetMetadataDocumentTimeout(time.Second)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before host.srv.Close, which waits for handlers
	var redirectTargetHit atomic.Bool

	big := strings.Repeat("x", 5<<10)
	tests := []struct {
		name    string
		setup   func(path string) string // serves something at path, returns the client_id
		edit    func(url.Values)
		code    string
		desc    string // in error_description
		fetched bool   // whether the document host was asked at all
	}{
		{name: "http URL, not loopback", code: "invalid_client", desc: "must use https",
			setup: func(string) string { return "http://client.example/oauth/client.json" }},
		{name: "other scheme", code: "invalid_client", desc: "must use https",
			setup: func(p string) string { return "ftp://" + strings.TrimPrefix(host.base, "https://") + p }},
		{name: "not a URL", code: "invalid_client", desc: "absolute https URL",
			setup: func(string) string { return "urn:example:client" }},
		{name: "fragment", code: "invalid_client", desc: "fragment",
			setup: func(p string) string { return host.base + p + "#x" }},
		{name: "user information", code: "invalid_client", desc: "user information",
			setup: func(p string) string { return strings.Replace(host.base, "https://", "https://me@", 1) + p }},
		{name: "no path", code: "invalid_client", desc: "must have a path",
			setup: func(string) string { return host.base }},
		{name: "dot segment", code: "invalid_client", desc: "segments",
			setup: func(p string) string { return host.base + "/a/.." + p }},
		{name: "not normal form", code: "invalid_client", desc: "normal form",
			setup: func(p string) string { return "HTTPS" + strings.TrimPrefix(host.base, "https") + p }},
		{name: "unreachable", code: "invalid_client", desc: "could not be fetched.",
			setup: func(p string) string { return "https://127.0.0.1:1" + p }},
		{name: "redirect", code: "invalid_client", desc: "redirect (HTTP 302)", fetched: true,
			setup: func(p string) string {
				host.mux.HandleFunc(p+"/real", func(w http.ResponseWriter, r *http.Request) {
					redirectTargetHit.Store(true)
					writeDoc(w, clientDoc(host.base+p))
				})
				host.mux.Handle(p, http.RedirectHandler(p+"/real", http.StatusFound))
				return host.base + p
			}},
		{name: "404", code: "invalid_client", desc: "HTTP 404 instead of 200", fetched: true,
			setup: func(p string) string { return host.base + p + "/missing" }},
		{name: "too large", code: "invalid_client", desc: "larger than 5120 bytes", fetched: true,
			setup: func(p string) string { return host.serve(p, with(clientDoc(host.base+p), "padding", big)) }},
		{name: "slow to answer", code: "invalid_client", desc: "did not arrive within 1s", fetched: true,
			setup: func(p string) string {
				host.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
					select {
					case <-r.Context().Done():
					case <-release:
					}
				})
				return host.base + p
			}},
		{name: "slow body", code: "invalid_client", desc: "did not arrive within 1s", fetched: true,
			setup: func(p string) string {
				host.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"client_id": `))
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
					case <-release:
					}
				})
				return host.base + p
			}},
		{name: "not JSON", code: "invalid_client", desc: "application/json", fetched: true,
			setup: func(p string) string {
				host.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) })
				return host.base + p
			}},
		{name: "not an object", code: "invalid_client", desc: "not a JSON object", fetched: true,
			setup: func(p string) string { return host.serve(p, []string{host.base + p}) }},
		{name: "field of the wrong type", code: "invalid_client", desc: "redirect_uris of the wrong type", fetched: true,
			setup: func(p string) string {
				return host.serve(p, with(clientDoc(host.base+p), "redirect_uris", redirectURI))
			}},
		{name: "client_id differs", code: "invalid_client", desc: "differs from the URL", fetched: true,
			setup: func(p string) string { return host.serve(p, clientDoc(host.base+p+"/other")) }},
		{name: "client_id missing", code: "invalid_client", desc: "missing", fetched: true,
			setup: func(p string) string { return host.serve(p, with(clientDoc(host.base+p), "client_id", nil)) }},
		{name: "client_id compared without normalization", code: "invalid_client", desc: "character for character", fetched: true,
			setup: func(p string) string {
				// Requested as %7E, served at ~, claiming ~: equivalent
				// URLs, different strings.
				host.serve(p+"~", clientDoc(host.base+p+"~"))
				return host.base + p + "%7E"
			}},
		{name: "no client_name", code: "invalid_client", desc: "no client_name", fetched: true,
			setup: func(p string) string { return host.serve(p, with(clientDoc(host.base+p), "client_name", nil)) }},
		{name: "client_secret", code: "invalid_client", desc: "must not contain client_secret", fetched: true,
			setup: func(p string) string { return host.serve(p, with(clientDoc(host.base+p), "client_secret", "s3cret")) }},
		{name: "shared-secret auth method", code: "invalid_client", desc: "shared-secret", fetched: true,
			setup: func(p string) string {
				return host.serve(p, with(clientDoc(host.base+p), "token_endpoint_auth_method", "client_secret_basic"))
			}},
		{name: "private_key_jwt", code: "invalid_client", desc: "does not support", fetched: true,
			setup: func(p string) string {
				return host.serve(p, with(clientDoc(host.base+p), "token_endpoint_auth_method", "private_key_jwt"))
			}},
		{name: "no redirect_uris", code: "invalid_client", desc: "redirect_uris is required", fetched: true,
			setup: func(p string) string { return host.serve(p, with(clientDoc(host.base+p), "redirect_uris", nil)) }},
		{name: "bad redirect URI in the document", code: "invalid_client", desc: "must use https", fetched: true,
			setup: func(p string) string {
				return host.serve(p, with(clientDoc(host.base+p), "redirect_uris", []string{"http://client.example/cb"}))
			}},
		{name: "redirect_uri not listed", code: "invalid_request", desc: "redirect_uri", fetched: true,
			setup: func(p string) string { return host.serve(p, clientDoc(host.base+p)) },
			edit:  func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:3142/elsewhere") }},
		{name: "redirect_uri of another host", code: "invalid_request", desc: "redirect_uri", fetched: true,
			setup: func(p string) string { return host.serve(p, clientDoc(host.base+p)) },
			edit:  func(v url.Values) { v.Set("redirect_uri", "https://evil.example/callback") }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := host.requests.Load()
			id := tt.setup(fmt.Sprintf("/c%d", i))
			_, challenge := pkce()
			params := authParams(id, challenge)
			params.Set("login_hint", "alice")
			if tt.edit != nil {
				tt.edit(params)
			}
			resp := authorizeJSON(t, srv, params)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Empty(t, resp.Header.Get("Location"), "never a redirect to an unverified redirect URI")
			body := decode(t, resp)
			assert.Equal(t, tt.code, body["error"])
			desc, _ := body["error_description"].(string)
			assert.Contains(t, desc, tt.desc)
			for _, internal := range []string{"dial", "tcp", "x509", "certificate", "context", "connection refused", "EOF"} {
				assert.NotContains(t, desc, internal, "no internals in the description")
			}
			assert.Equal(t, tt.fetched, host.requests.Load() > before, "document host asked")

			// A client that failed is not known at the token endpoint.
			status, tok := token(t, srv, url.Values{"grant_type": {"authorization_code"}, "client_id": {id}, "code": {"x"}, "code_verifier": {strings.Repeat("v", 43)}}, "", "")
			if tt.code == "invalid_client" {
				assert.Equal(t, http.StatusUnauthorized, status)
				assert.Equal(t, "invalid_client", tok["error"])
			}
		})
	}
	assert.False(t, redirectTargetHit.Load(), "redirects are not followed")

	t.Run("the error page is HTML for a browser", func(t *testing.T) {
		id := host.serve("/html", clientDoc(host.base+"/other"))
		_, challenge := pkce()
		resp := authorize(t, srv, authParams(id, challenge))
		defer resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	})

	t.Run("a document of exactly 5120 bytes is read", func(t *testing.T) {
		id := host.base + "/limit"
		doc := with(clientDoc(id), "padding", "")
		raw, err := json.Marshal(doc)
		require.NoError(t, err)
		doc["padding"] = strings.Repeat("x", 5<<10-len(raw))
		raw, _ = json.Marshal(doc)
		require.Len(t, raw, 5<<10)
		host.serve("/limit", doc)
		_, challenge := pkce()
		assert.NotEmpty(t, code(t, srv, authParams(id, challenge), "alice"))
	})
}

// go-sdk's client uses its Client ID Metadata Document URL when the
// authorization server advertises support, instead of registering.
func TestGoSDKClientWithMetadataDocument(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newGoSDKSetup(t)
	host := newDocHost(t, true)
	s.as.SetMetadataDocumentClient(host.srv.Client())
	id := host.base + "/oauth/go-sdk-client.json"
	host.serve("/oauth/go-sdk-client.json", with(clientDoc(id), "client_name", "go-sdk CIMD test"))
	// x/oauth2 refreshes a token 10 s before it expires: a 5 s token is
	// refreshed on every use, so refreshes run as the URL client too.
	s.as.SetTokenLifetime(5 * time.Second)

	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		ClientIDMetadataDocumentConfig: &auth.ClientIDMetadataDocumentConfig{URL: id},
		RedirectURL:                    redirectURI,
		AuthorizationCodeFetcher:       s.fetchCode(url.Values{"login_hint": {"carol"}}),
		RequestRefreshToken:            true,
	})
	require.NoError(t, err)
	client := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-cimd-test", Version: "0.0.1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             s.resource,
		OAuthHandler:         handler,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
	require.NoError(t, err)
	defer session.Close()

	assert.Equal(t, "carol crm.contacts.read", whoami(t, ctx, session))
	assert.Equal(t, "carol crm.contacts.read", whoami(t, ctx, session))
	assert.Equal(t, int32(0), s.registers.Load(), "no dynamic registration")
	assert.Equal(t, int32(1), s.authorizing.Load())
	assert.GreaterOrEqual(t, s.tokenCalls.Load(), int32(2), "exchange and refreshes")
	assert.Equal(t, int32(1), host.requests.Load(), "the document is fetched once, at authorization")

	u, err := url.Parse(s.authURL.Load().(string))
	require.NoError(t, err)
	assert.Equal(t, id, u.Query().Get("client_id"))

	ts, err := handler.TokenSource(ctx)
	require.NoError(t, err)
	tok, err := ts.Token()
	require.NoError(t, err)
	parsed, err := jwt.ParseInsecure([]byte(tok.AccessToken)) // signature checked by the resource server above
	require.NoError(t, err)
	cid, _ := parsed.Get("client_id")
	assert.Equal(t, id, cid)
}

// The default client dials loopback and public addresses only (section 8.6
// of the draft: no special-use addresses, loopback allowed for development).
func TestMetadataDocumentDialPolicy(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:443", true},
		{"127.8.9.10:8443", true},
		{"[::1]:443", true},
		{"93.184.215.14:443", true},
		{"[2606:4700:4700::1111]:443", true},
		{"10.0.0.1:443", false},
		{"172.16.0.1:443", false},
		{"192.168.1.1:443", false},
		{"169.254.169.254:80", false}, // cloud metadata service
		{"100.64.0.1:443", false},
		{"0.0.0.0:443", false},
		{"192.0.2.1:443", false},
		{"198.18.0.1:443", false},
		{"224.0.0.1:443", false},
		{"255.255.255.255:443", false},
		{"240.0.0.1:443", false},
		{"[::]:443", false},
		{"[fe80::1]:443", false},
		{"[fc00::1]:443", false},
		{"[::ffff:10.0.0.1]:443", false},
		{"[64:ff9b::a00:1]:443", false}, // NAT64 of 10.0.0.1
		{"[2002:a00:1::1]:443", false},  // 6to4 of 10.0.0.1
		{"[2001:db8::1]:443", false},
		{"[ff02::1]:443", false},
	} {
		err := devduo.DialPublicOrLoopback("tcp", tt.addr, nil)
		assert.Equal(t, tt.ok, err == nil, "%s: %v", tt.addr, err)
	}

	// The default client's dialer applies it, before connecting, and no
	// proxy dials in its place.
	tr := devduo.DefaultDocumentClient.Transport.(*http.Transport)
	assert.Nil(t, tr.Proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tr.DialContext(ctx, "tcp", "169.254.169.254:80")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "only from public or loopback addresses")
}
