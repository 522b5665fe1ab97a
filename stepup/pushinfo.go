package stepup

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A Detail is one row of the push under the action: one field the call
// sets or changes. Duo Mobile shows each pushinfo pair as its own row, so
// the approver reads "email: priya@ledgerstone.example → priya.raman@…"
// rather than a JSON object.
type Detail struct {
	// Key names the field, as the tool's argument is named. It is shown
	// escaped (Display), and refused when longer than MaxKeyChars, when
	// it would read as a row the server writes (Reserved) or as another
	// row's name: a row's name must not pass for something it is not.
	Key string
	// New is the value the call sets. It is shown whole, or the call is
	// refused (Unshowable): what will happen is never cut.
	New string
	// Old is the value now, when HasOld; shown before an arrow. It is
	// context, read from the store, so it is cut to a fixed budget rather
	// than refused: how long a stored value is must not decide whether a
	// call is refused.
	Old    string
	HasOld bool
}

// Limits of a push, in characters after escaping (see Display) and, for
// the whole, in bytes of the form-encoded pushinfo.
const (
	// MaxValueChars bounds each Detail.New. Longer values are refused,
	// not cut: the approver must see all of them.
	MaxValueChars = 300
	// MaxKeyChars bounds each Detail.Key once escaped: an argument's
	// name, not a sentence.
	MaxKeyChars = 64
	// MaxActionChars bounds Request.Action. The tool builds the sentence
	// from bounded parts, so a longer one is a bug of the tool's.
	MaxActionChars = 400
	// maxOldChars bounds each Detail.Old; longer ones are cut with "…".
	maxOldChars = 80
	// MaxPushInfo is Duo's limit on pushinfo (under 20,000 bytes).
	MaxPushInfo = 19999
	// budgets of the rows the server fills in, in encoded bytes
	budgetReason = 400
	budgetClient = 300
	budgetServer = 200
)

// Display returns s as the approver should see it: every character that
// does not show as itself (controls, format and bidi characters, zero-width
// and other invisible characters, spaces other than U+0020, unassigned or
// private-use code points, invalid UTF-8) is written as an escape such as
// \u2800, and a backslash as \\, so that text taken from tool arguments can
// neither hide part of the request nor lay out the screen to look like
// something else.
func Display(s string) string {
	var b strings.Builder
	marks := 0 // combining marks in a row
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Mc, r) {
			marks++
		} else {
			marks = 0
		}
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case hidden(r), marks > 2:
			// A long run of combining marks stacks glyphs over the rows
			// around it; two are enough for any language's accents.
			if r <= 0xFFFF {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				fmt.Fprintf(&b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// Quote is s as an action sentence quotes a value: Display, and \" for a
// quote, between quotes, so that a value cannot close its quotes itself.
func Quote(s string) string {
	return `"` + strings.ReplaceAll(Display(s), `"`, `\"`) + `"`
}

// hidden reports whether r would not be seen as itself on a phone screen.
func hidden(r rune) bool {
	switch {
	case r == ' ':
		return false
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Bidi_Control, unicode.Join_Control, unicode.Variation_Selector,
		unicode.Other_Default_Ignorable_Code_Point, unicode.White_Space):
		return true
	case r == 0x2800, r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0, r == 0x034F, r == 0xFFFC, r == 0xFFFD:
		// Blank-looking letters and symbols (braille blank, Hangul fillers),
		// the combining grapheme joiner, replacement characters.
		return true
	case unicode.Is(unicode.Me, r):
		// Enclosing marks draw over their neighbours.
		return true
	case unicode.In(r, arrows):
		// Arrows: a value must not fake the "old → new" of a row.
		return true
	}
	return !unicode.IsGraphic(r) && !unicode.IsMark(r)
}

// arrows are the Unicode arrow blocks.
var arrows = &unicode.RangeTable{R16: []unicode.Range16{
	{Lo: 0x2190, Hi: 0x21FF, Stride: 1}, // Arrows
	{Lo: 0x2794, Hi: 0x27BF, Stride: 1}, // Dingbat arrows
	{Lo: 0x27F0, Hi: 0x27FF, Stride: 1}, // Supplemental Arrows-A
	{Lo: 0x2900, Hi: 0x297F, Stride: 1}, // Supplemental Arrows-B
	{Lo: 0x2B00, Hi: 0x2BFF, Stride: 1}, // Miscellaneous Symbols and Arrows
}}

// Reserved are the names of the rows the push writes itself. A detail
// whose key reads as one of them (ignoring case and surrounding space)
// is refused: a second "action" or "server" row is a forgery.
var Reserved = []string{"action", "reason", "client", "server"}

// RowName is the form in which two row names read the same to the
// approver, and a row name reads as a reserved one.
func RowName(key string) string { return strings.ToLower(strings.TrimSpace(Display(key))) }

// checkKey refuses a key that cannot be shown as what it is: too long, the
// name of a row the push writes itself, or another row's name. The key is
// the tool's (a policy's row or an argument's name); govern refuses these
// before a push is asked for, with words for the caller, so this is the
// last line.
func checkKey(key string, seen map[string]bool) error {
	shownKey := Display(key)
	if n := utf8.RuneCountInString(shownKey); n > MaxKeyChars {
		return unshowable(cut(shownKey, MaxKeyChars), "An argument name is too long to show on the phone for approval: %d characters once invisible characters are written out, at most %d fit.", n, MaxKeyChars)
	}
	name := RowName(key)
	if slices.Contains(Reserved, name) {
		return unshowable(shownKey, "The argument name %s would show on the phone as the push's own %q row, so it cannot be shown for approval.", Quote(key), name)
	}
	if seen[name] {
		return unshowable(shownKey, "Two rows of the push would read %s, so it cannot be shown for approval.", Quote(key))
	}
	seen[name] = true
	return nil
}

// unshowable is the refusal for a value that cannot be shown faithfully.
func unshowable(field, format string, args ...any) *Error {
	e := newError(Unshowable, nil, format, args...)
	e.Field = field
	return e
}

// pushInfo builds the pushinfo for req: action, then one row per detail,
// then reason, client and server, in that order (Duo Mobile shows the
// pairs as given; url.Values.Encode would sort them). The result is
// form-encoded like url.Values.Encode, and Duo encodes it once more on the
// wire.
//
// Nothing the approver must see is ever cut: an action or a new value
// longer than MaxValueChars, or rows that would pass MaxPushInfo, are an
// Unshowable error and no push is sent. Whether that happens depends on the
// request alone: old values are cut to a fixed budget, and the size check
// counts each at that budget, whatever the store holds.
func pushInfo(server string, req Request) (string, error) {
	var rows []string
	worst := 0 // encoded size, with every Old at its full budget
	add := func(key, val string, worstVal int) {
		e := url.QueryEscape(key) + "=" + url.QueryEscape(val)
		rows = append(rows, e)
		worst += len(url.QueryEscape(key)) + 1 + worstVal + 1
	}
	// The action is shown as the tool wrote it: built from Display and
	// Quote, it holds no character that does not show as itself. It
	// counts at its full budget, whatever the record names it holds.
	action := req.Action
	if strings.IndexFunc(action, hidden) >= 0 || !utf8.ValidString(action) || utf8.RuneCountInString(action) > MaxActionChars {
		return "", newError(Misconfigured, nil, "The description of %s is not fit to show on the phone (a bug in this server), so the call was not run.", req.Tool)
	}
	add("action", action, MaxActionChars*12)
	seen := map[string]bool{}
	for _, d := range req.Details {
		if d.Key == "" {
			return "", newError(Misconfigured, nil, "A push row has no name (a bug in this server), so the call was not run.")
		}
		if err := checkKey(d.Key, seen); err != nil {
			return "", err
		}
		nv := shown(d.New)
		if n := utf8.RuneCountInString(nv); n > MaxValueChars {
			return "", unshowable(d.Key, "%s is too long to show on the phone for approval: %d characters once invisible characters are written out, at most %d fit. Shorten %s and call again.", d.Key, n, MaxValueChars, d.Key)
		}
		val, worstVal := nv, len(url.QueryEscape(nv))
		if d.HasOld {
			old := cut(shown(d.Old), maxOldChars)
			val = old + " → " + nv
			// The worst an old value can take: maxOldChars characters of
			// at most 12 encoded bytes each (a 4-byte rune), plus the arrow.
			worstVal += maxOldChars*12 + len(url.QueryEscape(" → "))
		}
		add(Display(d.Key), val, worstVal)
	}
	for _, f := range []struct {
		key, val string
		budget   int
	}{{"reason", req.Reason, budgetReason}, {"client", ClientLabel(req.ClientID), budgetClient}, {"server", server, budgetServer}} {
		if f.val == "" {
			continue
		}
		v := cutEncoded(Display(f.val), f.budget)
		rows = append(rows, f.key+"="+v)
		worst += len(f.key) + 1 + f.budget + 1
	}
	if worst > MaxPushInfo {
		return "", unshowable("", "The change is too large to show on the phone for approval. Change fewer fields, or shorter values, per call.")
	}
	return strings.Join(rows, "&"), nil
}

// shown is a value as the approver reads it; an empty one says so.
func shown(s string) string {
	if s == "" {
		return "(empty)"
	}
	if s == "(empty)" {
		return `\(empty)`
	}
	// Display escapes every arrow, so a value cannot fake a second change.
	return Display(s)
}

// ClientLabel is how the push names the agent's OAuth client. A client id
// that is an https URL (a Client ID Metadata Document) is shown as its
// host, which the approver can recognise. Any other id (one a Dynamic
// Client Registration handed out, such as "raT3opbCIqn7a3fPv7Eyew") means
// nothing to a person, so it is labelled as such and shortened.
func ClientLabel(id string) string {
	if id == "" {
		return ""
	}
	if u, err := url.Parse(id); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Hostname() != "" && u.User == nil {
		return u.Host
	}
	r := []rune(id)
	if len(r) > 8 {
		return "registered app " + string(r[:8]) + "…"
	}
	return "registered app " + id
}

// cut shortens s to at most max characters, ending in "…" when cut.
func cut(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// ellipsis marks a cut field, already encoded.
var ellipsis = url.QueryEscape("…")

// cutEncoded query-escapes s, cut at a character boundary so that the
// result (with the ellipsis, if cut) is at most budget bytes. Only for the
// rows the server writes (reason, client, server), never for what the call
// does.
func cutEncoded(s string, budget int) string {
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
