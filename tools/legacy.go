package tools

import "net/http"

// Legacy only: what the endpoint does for revisions before 2026-07-28.
// It can go when no client of 2025-11-25 or earlier is served (the
// 2026-07-28 revision has no standalone GET stream). The legacy body
// reader the scope gate needs for those revisions' POSTs lives in govern
// (body.go), fuzzed against go-sdk's own reading.

// refuseGET answers the standalone SSE stream (GET, 2025-03-26 to
// 2025-11-25) with 405 and the method the endpoint does accept (RFC 9110
// section 15.5.6), which those revisions allow a server that offers no
// such stream: go-sdk's client, the TypeScript SDK and mcp-remote take it
// to mean "no stream" and carry on. It runs behind the front door, so an
// unauthenticated GET still gets its 401. A DELETE has no session to end
// (stateless): go-sdk answers it.
func refuseGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Allow", "POST")
			http.Error(w, "this server offers no standalone SSE stream: it sends nothing outside a request's own response", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}
