// Package devduo is the local stand-in of Duo's user-facing side that
// crm-mcp dev runs: the sign-in of Duo's OAuth 2.1 authorization server
// ([SignIn]: login and consent pages, RFC 7591 registration, Client ID
// Metadata Documents, the authorization code grant with PKCE and resource
// indicators, rotating refresh tokens, RFC 7009 revocation, the dev
// users), the scope admin page that plays Duo's Scope Authorization, and
// the push page that plays Duo Mobile ([PushPage]).
//
// It is a product for a person trying the server on one machine, not a
// test fake. It builds on the fakes the tests use: a SignIn serves its
// pages in front of a resourceserver/rstest AuthServer, which keeps the
// signing keys, mints the tokens and answers discovery, JWKS and
// introspection; the push page shows and answers the pushes of a
// stepup/duotest Duo.
//
//	as := rstest.NewAuthServer("http://127.0.0.1:8080/oauth2/dev")
//	signIn := devduo.NewSignIn(as)
//	signIn.SetUsers(devduo.DefaultUsers()...)
//	signIn.SetResources("http://127.0.0.1:8080/mcp")
//	mux.Handle("/.well-known/oauth-authorization-server/oauth2/dev", signIn)
//	mux.Handle("/oauth2/dev/", signIn)
//	mux.Handle("/dev/push", devduo.PushPage(duo, "/dev/push", nil))
//
// NEVER SERVE IT BEYOND LOOPBACK. It authenticates nobody: whoever reaches
// it signs in as any user without a password, grants any user any scope
// on the admin page, and approves any push. crm-mcp dev listens on
// loopback only and refuses requests for other host names.
package devduo
