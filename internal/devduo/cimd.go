package devduo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
// which the MCP authorization spec of 2025-11-25 recommends): a client that
// uses a URL as its client_id needs no registration. The URL serves the
// client's metadata, and the sign-in fetches it at every authorization request
// (caching is optional, and without it an edited document takes effect at
// once). The copy from the last good fetch is what the token and revocation
// endpoints authenticate the client against. Section numbers are those of
// the draft's revision -02.

const (
	// maxDocumentSize is the most of a document the sign-in reads; section 8.7
	// of the draft recommends 5 kilobytes.
	maxDocumentSize = 5 << 10
	// defaultDocumentTimeout bounds a whole fetch: connecting, TLS, headers
	// and body. The user is waiting in the browser meanwhile.
	defaultDocumentTimeout = 5 * time.Second
)

// isDocumentURL reports whether a client_id names a metadata document. The
// ids the registration endpoint issues are base64url, which has no colon,
// so anything with one is a URL attempt (and is checked as one).
func isDocumentURL(clientID string) bool { return strings.Contains(clientID, ":") }

// clientFor returns the client an authorization request names: a
// registered one or, for a URL, the one its metadata document describes,
// fetched now. Errors are worded for the user, who sees them on a page.
func (si *SignIn) clientFor(ctx context.Context, clientID string) (*client, *oauthError) {
	if !isDocumentURL(clientID) {
		si.mu.Lock()
		c := si.clients[clientID]
		si.mu.Unlock()
		if c == nil {
			return nil, badRequest("invalid_client", "The client_id is not registered here.")
		}
		return c, nil
	}
	if e := checkDocumentURL(clientID); e != nil {
		return nil, e
	}
	c, e := si.fetchDocument(ctx, clientID)
	if e != nil {
		return nil, e
	}
	si.mu.Lock()
	si.clients[clientID] = c
	si.mu.Unlock()
	return c, nil
}

// host is the host of the client's client_id URL, which the consent page
// shows next to the name the document claims (section 8.5 of the draft:
// the name is the client's word, the host is what the user can check); ""
// for registered clients.
func (c *client) host() string {
	if !isDocumentURL(c.id) {
		return ""
	}
	u, err := url.Parse(c.id) // checked by checkDocumentURL
	if err != nil {
		return ""
	}
	return u.Host
}

// checkDocumentURL enforces section 3 of the draft on a Client Identifier
// URL: https (here also http on a loopback host, for clients under
// development), no user information, a path without dot segments, no
// fragment. It must be in the form Go's URL parser prints, so that the URL
// fetched is, character for character, the one the document's client_id is
// compared with.
func checkDocumentURL(s string) *oauthError {
	bad := func(why string) *oauthError {
		return badRequest("invalid_client", "The client_id looks like a URL but is not a client identifier URL: %s.", why)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Opaque != "" || u.Host == "":
		return bad("it must be an absolute https URL such as https://client.example/oauth/metadata.json")
	case u.Scheme != "https" && (u.Scheme != "http" || !loopbackHost(u.Hostname())):
		return bad("it must use https (http only on localhost, 127.0.0.1 or [::1])")
	case u.User != nil:
		return bad("it must not contain user information")
	case strings.Contains(s, "#"):
		return bad("it must not contain a fragment")
	case u.Path == "" || slices.ContainsFunc(strings.Split(u.Path, "/"), func(seg string) bool { return seg == "." || seg == ".." }):
		return bad("it must have a path, without . or .. segments")
	case u.String() != s:
		return bad("it is not in normal form (lower-case scheme, needed escapes only)")
	}
	return nil
}

// loopbackHost reports whether host is localhost or a loopback IP address.
func loopbackHost(host string) bool { return host == "localhost" || loopbackIP(host) }

// fetchDocument fetches the metadata document at clientID (section 5 of the
// draft) and validates it. Descriptions name what is wrong with the
// document or the answer, never a network error's text: the addresses and
// resolver details in those are the server's business, not the caller's.
func (si *SignIn) fetchDocument(ctx context.Context, clientID string) (*client, *oauthError) {
	si.mu.Lock()
	hc := si.documentClient
	timeout := si.documentTimeout
	si.mu.Unlock()
	if hc == nil {
		hc = defaultDocumentClient
	}
	if timeout == 0 {
		timeout = defaultDocumentTimeout
	}
	noRedirects := *hc
	noRedirects.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	fail := func(format string, args ...any) *oauthError {
		return badRequest("invalid_client", "The client's metadata document (its client_id URL) "+format, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientID, nil)
	if err != nil {
		return nil, fail("cannot be requested.")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := noRedirects.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fail("did not arrive within %v.", timeout)
		}
		return nil, fail("could not be fetched.")
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fail("answered with a redirect (HTTP %d). Redirects are not followed: the client_id must be the URL that serves the document.", resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fail("answered HTTP %d instead of 200.", resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil ||
		(mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))) {
		return nil, fail("is not served as application/json.")
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fail("did not arrive within %v.", timeout)
	case err != nil:
		return nil, fail("could not be read.")
	case len(body) > maxDocumentSize:
		return nil, fail("is larger than %d bytes.", maxDocumentSize)
	}

	var doc struct {
		clientMetadata
		ClientID              string          `json:"client_id"`
		ClientSecret          json.RawMessage `json:"client_secret"`
		ClientSecretExpiresAt json.RawMessage `json:"client_secret_expires_at"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fail("has a %s of the wrong type.", te.Field)
		}
		return nil, fail("is not a JSON object.")
	}
	// Section 4: compared as strings, no normalization.
	if doc.ClientID != clientID {
		return nil, fail("has a client_id that is missing or differs from the URL it was fetched from; the two must be equal, character for character.")
	}
	// Section 4.1: nobody can share a secret with a published document.
	if doc.ClientSecret != nil || doc.ClientSecretExpiresAt != nil {
		return nil, fail("must not contain client_secret or client_secret_expires_at.")
	}
	switch doc.TokenEndpointAuthMethod {
	case "", "none":
		// Omitted means none: the RFC 7591 default, client_secret_basic, is
		// what section 4.1 forbids, and a client with a document has no
		// secret to send.
		doc.TokenEndpointAuthMethod = "none"
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		return nil, fail("names token_endpoint_auth_method %s, a shared-secret method a metadata document cannot use: use none.", doc.TokenEndpointAuthMethod)
	default:
		return nil, fail("names token_endpoint_auth_method %q, which this server does not support: use none.", doc.TokenEndpointAuthMethod)
	}
	// The MCP spec requires a name: it is what the consent page shows.
	if strings.TrimSpace(doc.ClientName) == "" {
		return nil, fail("has no client_name.")
	}
	if e := normalizeMetadata(&doc.clientMetadata); e != nil {
		return nil, fail("is invalid: %s.", e.desc)
	}
	return &client{id: clientID, meta: doc.clientMetadata}, nil
}

// defaultDocumentClient fetches metadata documents unless a test sets
// another. Its dialer refuses special-use addresses (section 8.6 of the
// draft, RFC 6890) other than loopback, which the draft allows a
// development server, and it checks the address actually dialled, after
// name resolution, so that a name that resolves to a private address
// cannot get around it. No proxy, since a proxy would dial for it.
var defaultDocumentClient = &http.Client{Transport: &http.Transport{
	Proxy:                  nil,
	DialContext:            (&net.Dialer{Control: dialPublicOrLoopback}).DialContext,
	TLSHandshakeTimeout:    defaultDocumentTimeout,
	MaxResponseHeaderBytes: 16 << 10,
	ForceAttemptHTTP2:      true,
}}

var errSpecialAddress = errors.New("devduo: metadata documents are fetched only from public or loopback addresses")

// dialPublicOrLoopback is a net.Dialer Control function: it lets a
// connection proceed only to a loopback or public address.
func dialPublicOrLoopback(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("devduo: dialling %q: %w", address, err)
	}
	if ip := ap.Addr().Unmap(); ip.IsLoopback() || publicAddr(ip) {
		return nil
	}
	return errSpecialAddress
}

// specialPrefixes are the special-use blocks of RFC 6890 and its updates
// that netip's predicates do not already exclude.
var specialPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: may reach any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/23"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"), // 6to4: may embed a private IPv4 address
}

// publicAddr reports whether ip is a global unicast address outside every
// private and special-use block.
func publicAddr(ip netip.Addr) bool {
	if !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return false
	}
	return !slices.ContainsFunc(specialPrefixes, func(p netip.Prefix) bool { return p.Contains(ip) })
}
