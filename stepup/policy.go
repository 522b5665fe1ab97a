package stepup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultSensitiveTerms are the words that make a call need approval when
// no other list is configured.
var DefaultSensitiveTerms = []string{"defence", "defense", "classified", "military", "intelligence"}

// Terms finds sensitive words in tool arguments. It is immutable and safe
// for concurrent use.
type Terms struct {
	terms []term
}

type term struct {
	orig  string // as configured, returned by Find
	lower string
}

// NewTerms returns a matcher for terms. Terms are matched as whole words,
// ignoring case; a term may hold several words ("top secret"). Empty or
// blank terms are an error, since they would match nothing (or everything)
// and hide a configuration mistake.
func NewTerms(terms []string) (*Terms, error) {
	if len(terms) == 0 {
		return nil, errors.New("stepup: no sensitive terms given")
	}
	t := &Terms{}
	seen := make(map[string]bool)
	for i, s := range terms {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, fmt.Errorf("stepup: sensitive term %d is empty", i+1)
		}
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("stepup: sensitive term %d is not valid UTF-8", i+1)
		}
		lower := strings.ToLower(s)
		if seen[lower] {
			continue
		}
		seen[lower] = true
		t.terms = append(t.terms, term{orig: s, lower: lower})
	}
	return t, nil
}

// Find reports the first term that occurs in args, and whether one did.
//
// args may be a JSON-like value (map[string]any, []any, string, numbers,
// bools, nil), JSON text as json.RawMessage or []byte, or any other value,
// which is searched through its JSON encoding. Only string values are
// searched, not object keys: keys are the tool's parameter names, chosen by
// the tool's author, and a parameter called "defence_budget" must not make
// every call sensitive. Maps are walked in sorted key order, so the answer
// is deterministic.
//
// Matching is case-insensitive and on whole words: letters, digits and
// combining marks are word characters, so "defenceless" does not contain
// "defence" but "Defence-sector" and "defence_budget" do.
//
// Find fails closed: bytes that are not valid JSON, or a value that cannot
// be encoded as JSON, are searched as plain text (keys included).
func (t *Terms) Find(args any) (string, bool) {
	switch v := args.(type) {
	case json.RawMessage:
		return t.findJSON(v)
	case []byte:
		return t.findJSON(v)
	case nil, string, bool, float64, json.Number, map[string]any, []any:
		return t.walk(v)
	}
	b, err := json.Marshal(args)
	if err != nil {
		return t.findText(fmt.Sprint(args))
	}
	return t.findJSON(b)
}

func (t *Terms) findJSON(b []byte) (string, bool) {
	v, err := decodeJSON(b)
	if err != nil {
		return t.findText(string(b))
	}
	return t.walk(v)
}

func (t *Terms) walk(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return t.findText(v)
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if term, ok := t.walk(v[k]); ok {
				return term, true
			}
		}
	case []any:
		for _, e := range v {
			if term, ok := t.walk(e); ok {
				return term, true
			}
		}
	}
	return "", false
}

// findText returns the first configured term that occurs in s as a whole
// word.
func (t *Terms) findText(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	lower := strings.ToLower(s)
	for _, tm := range t.terms {
		if containsWord(lower, tm.lower) {
			return tm.orig, true
		}
	}
	return "", false
}

// containsWord reports whether w occurs in s with no word character right
// before or after it. Both are already lower case.
func containsWord(s, w string) bool {
	for i := 0; i <= len(s)-len(w); {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(w)
		before, _ := utf8.DecodeLastRuneInString(s[:start])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if (start == 0 || !isWordRune(before)) && (end == len(s) || !isWordRune(after)) {
			return true
		}
		_, size := utf8.DecodeRuneInString(s[start:])
		i = start + size
	}
	return false
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// decodeJSON decodes one JSON value, keeping numbers as written.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

// CanonicalKey identifies a tool call for grants and for sharing one push:
// the tool name, quoted, a space, and the arguments as canonical JSON
// (object keys sorted, no insignificant whitespace, numbers as written).
// So {"a":1,"b":2} and { "b": 2, "a": 1 } give one key, while 1 and 1.0
// give two (a spare push, never a wrong grant). Empty arguments read as
// null. Arguments that are not valid JSON are kept verbatim after a "!",
// which no canonical JSON starts with, so they never share a key with a
// valid call.
func CanonicalKey(tool string, args json.RawMessage) string {
	prefix := strconv.Quote(tool) + " "
	if len(bytes.TrimSpace(args)) == 0 {
		return prefix + "null"
	}
	v, err := decodeJSON(args)
	if err != nil {
		return prefix + "!" + string(args)
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for decoded JSON; fail apart, not together
		return prefix + "!" + string(args)
	}
	return prefix + string(b)
}
