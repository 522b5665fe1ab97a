// Package resourceserver is the front door of an MCP server: an OAuth 2.1
// resource server that admits a request only when it carries an access token
// issued by a trusted authorization server (Cisco Duo, in this product) for
// this very server.
//
// It follows the MCP authorization specification (revisions 2025-06-18,
// 2025-11-25 and 2026-07-28), RFC 6750 (bearer tokens and their challenges),
// RFC 9728 (protected resource metadata), RFC 8707 (audience-restricted
// tokens), RFC 8414 (authorization server discovery) and RFC 7662 (token
// introspection).
//
// Use:
//
//	rs, err := resourceserver.New(ctx, resourceserver.Config{
//		Resource: "https://crm.example.com/mcp",
//		Issuers:  []resourceserver.Issuer{{URL: "https://sso-x.sso.duosecurity.com/oauth2/DIXXXX"}},
//		ScopesSupported: []string{"crm.contacts.read"},
//	})
//	if err != nil { ... }
//	defer rs.Close()
//	for _, p := range rs.MetadataPaths() {
//		mux.Handle(p, rs.MetadataHandler())
//	}
//	mux.Handle("/mcp", rs.Middleware(mcpHandler))
//
// Everything is strict when left empty: audiences other than the resource
// URL, plain-HTTP issuers and symmetric algorithms are refused unless a named
// option says otherwise, and start-up logs each loosening.
//
// The middleware maps every failure to an HTTP status and exactly one
// WWW-Authenticate challenge in one place (errors.go). The precise reason a
// token was refused goes to the log; the client sees a short, safe
// description. No token, Authorization header or client secret is ever
// logged or put into an error message.
package resourceserver
