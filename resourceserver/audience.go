package resourceserver

import "strings"

// canonicalAudience normalizes a URL for the RFC 8707 audience comparison
// and nothing more: scheme and host are case-insensitive (RFC 3986 section
// 6.2.2.1) and an empty path equals "/" (section 6.2.3). Path, port, query
// and everything else must match byte for byte, so a token for
// https://host/other never passes for https://host/mcp. A value that is not
// an absolute URL is returned unchanged and can only match exactly.
func canonicalAudience(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return s
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if tail == "" || tail[0] != '/' {
		tail = "/" + tail
	}
	return strings.ToLower(scheme) + "://" + strings.ToLower(authority) + tail
}

// audienceOK reports whether any of auds is this server: the canonical
// resource URL or one of the explicitly configured extra audiences.
func (s *Server) audienceOK(auds []string) bool {
	for _, a := range auds {
		if canonicalAudience(a) == s.resourceCanon || s.extraAud[a] {
			return true
		}
	}
	return false
}

// parseAudience reads aud, a string or an array of strings (RFC 7519
// section 4.1.3). Anything else is malformed.
func parseAudience(v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}
