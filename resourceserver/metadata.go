package resourceserver

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

const wellKnownPRM = "/.well-known/oauth-protected-resource"

// initMetadata renders the protected resource metadata (RFC 9728 section
// 2) once; it never changes while the server runs.
func (s *Server) initMetadata() {
	u, _ := url.Parse(s.cfg.Resource) // validated in withDefaults
	path := u.EscapedPath()
	// RFC 9728 section 3.1: the well-known segment goes between host and
	// path. The root location is served too, for clients that try it.
	s.metadataPaths = []string{wellKnownPRM}
	suffixed := wellKnownPRM
	if path != "" && path != "/" {
		suffixed += path
		s.metadataPaths = append([]string{suffixed}, s.metadataPaths...)
	}
	s.metadataURL = u.Scheme + "://" + u.Host + suffixed

	servers := make([]string, len(s.cfg.Issuers))
	for i, is := range s.cfg.Issuers {
		servers[i] = is.URL
	}
	md := oauthex.ProtectedResourceMetadata{
		Resource:               s.cfg.Resource,
		AuthorizationServers:   servers,
		ScopesSupported:        s.cfg.ScopesSupported,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           s.cfg.ResourceName,
		ResourceDocumentation:  s.cfg.ResourceDocumentation,
	}
	s.metadataJSON, _ = json.MarshalIndent(md, "", "  ")
	s.metadataJSON = append(s.metadataJSON, '\n')
}

// MetadataPaths are the paths at which MetadataHandler must be mounted: the
// path-suffixed well-known location for the resource, then the root one.
func (s *Server) MetadataPaths() []string { return append([]string(nil), s.metadataPaths...) }

// MetadataHandler serves the protected resource metadata document. It is
// public, so any origin may read it (CORS "*"); browser-based clients such
// as MCP Inspector fetch it cross-origin, with MCP-Protocol-Version set.
func (s *Server) MetadataHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusNoContent)
		case http.MethodGet, http.MethodHead:
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "public, max-age=300")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				w.Write(s.metadataJSON)
			}
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			writeError(w, response{status: http.StatusMethodNotAllowed, code: "method_not_allowed", desc: "The metadata document is read with GET"})
		}
	})
}
