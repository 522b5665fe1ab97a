package rstest

import "time"

// SetMetadataDocumentTimeout shortens the limit on fetching a Client ID
// Metadata Document, so that the test of a slow document server does not
// wait out the real 5 seconds. 0 restores the default.
func (a *AuthServer) SetMetadataDocumentTimeout(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.documentTimeout = d
}

// DialPublicOrLoopback is the address policy of the default metadata
// document client.
var DialPublicOrLoopback = dialPublicOrLoopback

// DefaultDocumentClient fetches metadata documents unless a test sets
// another.
var DefaultDocumentClient = defaultDocumentClient
