package devduo

import (
	"net/http"
	"time"
)

// Test knobs. crm-mcp dev uses none of them, so they are not part of the
// package's surface.

// GrantScope and RevokeScope are the admin page's grant and revoke.
func (si *SignIn) GrantScope(user, scope string) error  { return si.grantScope(user, scope) }
func (si *SignIn) RevokeScope(user, scope string) error { return si.revokeScope(user, scope) }

// SetTokenLifetime sets the life of access tokens issued at the token
// endpoint (default one hour). It panics unless d > 0.
func (si *SignIn) SetTokenLifetime(d time.Duration) {
	if d <= 0 {
		panic("devduo: SetTokenLifetime: not positive")
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	si.tokenTTL = d
}

// SetMetadataDocumentClient sets the HTTP client that fetches Client ID
// Metadata Documents, so that a test can trust the certificate of the
// server it serves a document from (httptest.Server.Client). nil restores
// the default, which connects only to public and loopback addresses (no
// private networks: server-side request forgery) and uses no proxy.
// Whatever c says, redirects are not followed (its CheckRedirect is
// replaced), at most 5 KB are read, and a fetch fails after 5 seconds
// (sooner if c.Timeout says so).
func (si *SignIn) SetMetadataDocumentClient(c *http.Client) {
	si.mu.Lock()
	defer si.mu.Unlock()
	si.documentClient = c
}

// SetMetadataDocumentTimeout shortens the limit on fetching a Client ID
// Metadata Document, so that the test of a slow document server does not
// wait out the real 5 seconds. 0 restores the default.
func (si *SignIn) SetMetadataDocumentTimeout(d time.Duration) {
	si.mu.Lock()
	defer si.mu.Unlock()
	si.documentTimeout = d
}

// DialPublicOrLoopback is the address policy of the default metadata
// document client.
var DialPublicOrLoopback = dialPublicOrLoopback

// DefaultDocumentClient fetches metadata documents unless a test sets
// another.
var DefaultDocumentClient = defaultDocumentClient

const MaxClients = maxClients
