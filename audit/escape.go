package audit

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Audit lines are read in terminals, pagers and log viewers, and their
// strings come from tokens (sub, client_id) and from tool arguments. A
// right-to-left override (U+202E) or a zero-width character there would
// make a reader's screen show something the file does not say: the push
// escapes them for the approver (stepup.Display), and so does the trail.
//
// The escaping is JSON's own: such a character is written as \uXXXX
// inside its string, so a JSON reader still decodes the exact value (a
// subject compares equal, the arguments still hash to args_sha256) while
// the bytes of the file hold only characters that show as themselves.
// The hash chain covers the bytes as written, escapes included.

// escapeLine rewrites the JSON line b (as encoding/json wrote it) with
// every hidden character escaped. Outside strings a JSON document holds
// only ASCII structure, so any non-ASCII or control character is inside
// a string, where \uXXXX (a surrogate pair above U+FFFF) stands for it.
// encoding/json has already escaped '"', '\\' and the C0 controls, and
// replaced invalid UTF-8 with U+FFFD.
func escapeLine(b []byte) []byte {
	i := 0
	for i < len(b) {
		if b[i] < utf8.RuneSelf && b[i] != 0x7f {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if !hidden(r) {
			i += size
			continue
		}
		break
	}
	if i == len(b) {
		return b // the common case: nothing to escape, no copy
	}
	out := make([]byte, 0, len(b)+32)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case !hidden(r):
			out = append(out, b[i:i+size]...)
		case r > 0xFFFF:
			hi, lo := utf16Pair(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, hi, lo)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += size
	}
	return out
}

func utf16Pair(r rune) (hi, lo rune) {
	r -= 0x10000
	return 0xD800 + (r>>10)&0x3FF, 0xDC00 + r&0x3FF
}

// hidden reports whether r would not show as itself on a screen: the
// characters stepup.Display escapes for the approver (controls, format
// and bidi characters, invisible and unusual spaces, private use,
// unassigned code points, blank-looking letters, enclosing marks), less
// the backslash, which JSON escapes itself. A test holds the two lists
// together.
func hidden(r rune) bool {
	switch {
	case r == ' ':
		return false
	case r < utf8.RuneSelf:
		// encoding/json escapes the C0 controls in strings; the only one
		// left is the "\n" that ends the line. DEL it writes as itself.
		return r == 0x7f
	case r == utf8.RuneError:
		return true
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Bidi_Control, unicode.Join_Control, unicode.Variation_Selector,
		unicode.Other_Default_Ignorable_Code_Point, unicode.White_Space):
		return true
	case r == 0x2800, r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0, r == 0x034F, r == 0xFFFC:
		return true
	case unicode.Is(unicode.Me, r):
		return true
	case unicode.In(r, arrows):
		// As in a push: a value must not fake an "old → new".
		return true
	}
	return !unicode.IsGraphic(r) && !unicode.IsMark(r)
}

// arrows are the Unicode arrow blocks, as stepup escapes them.
var arrows = &unicode.RangeTable{R16: []unicode.Range16{
	{Lo: 0x2190, Hi: 0x21FF, Stride: 1},
	{Lo: 0x2794, Hi: 0x27BF, Stride: 1},
	{Lo: 0x27F0, Hi: 0x27FF, Stride: 1},
	{Lo: 0x2900, Hi: 0x297F, Stride: 1},
	{Lo: 0x2B00, Hi: 0x2BFF, Stride: 1},
}}
