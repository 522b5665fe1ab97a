package stepup

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on the pushinfo parameter, in bytes of its URL-encoded form. Duo
// accepts up to 20,000 bytes, but a phone screen shows a few lines and the
// person must decide quickly, so we send far less: at most maxPushInfo in
// all. Each field has its own budget so that a long summary cannot push the
// tool name off the screen; the summary gets whatever is left. A field that
// does not fit is cut at a character boundary and ends in "…".
const (
	maxPushInfo  = 2000
	budgetTool   = 200
	budgetReason = 400
	budgetClient = 300
	budgetServer = 200
)

// ellipsis marks a cut field, already encoded.
var ellipsis = url.QueryEscape("…")

// pushInfo builds the pushinfo for req: tool, reason, summary, client and
// server, in that order (Duo Mobile shows the pairs as given, so the most
// important comes first; url.Values.Encode would sort them). Empty fields
// are left out. The result is form-encoded like url.Values.Encode, and Duo
// encodes it once more on the wire.
func pushInfo(server string, req Request) string {
	type field struct {
		key, val string
		budget   int // 0: whatever is left
	}
	fields := []field{
		{"tool", req.Tool, budgetTool},
		{"reason", req.Reason, budgetReason},
		{"summary", req.Summary, 0},
		{"client", req.ClientID, budgetClient},
		{"server", server, budgetServer},
	}
	enc := make([]string, len(fields))
	used := 0
	for i, f := range fields {
		if f.val == "" || f.budget == 0 {
			continue
		}
		enc[i] = f.key + "=" + escapeWithin(f.val, f.budget)
		used += len(enc[i]) + 1 // "&"
	}
	for i, f := range fields {
		if f.val == "" || f.budget != 0 {
			continue
		}
		if left := maxPushInfo - used - len(f.key) - 1; left > len(ellipsis) {
			enc[i] = f.key + "=" + escapeWithin(f.val, left)
		}
	}
	var out []string
	for _, e := range enc {
		if e != "" {
			out = append(out, e)
		}
	}
	return strings.Join(out, "&")
}

// escapeWithin returns s, cleaned for display and query-escaped, cut so that
// the result (with the ellipsis, if cut) is at most budget bytes.
func escapeWithin(s string, budget int) string {
	s = displayable(s)
	if full := url.QueryEscape(s); len(full) <= budget {
		return full
	}
	var b strings.Builder
	for _, r := range s {
		e := url.QueryEscape(string(r))
		if b.Len()+len(e)+len(ellipsis) > budget {
			break
		}
		b.WriteString(e)
	}
	return b.String() + ellipsis
}

// displayable replaces invalid UTF-8 and control characters (newlines, bidi
// overrides...) with spaces, so that text taken from tool arguments cannot
// lay out the approval screen to look like something else.
func displayable(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
}
