package stepup_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
)

func TestNewTerms(t *testing.T) {
	_, err := stepup.NewTerms(nil)
	assert.Error(t, err)
	_, err = stepup.NewTerms([]string{"defence", "  "})
	assert.ErrorContains(t, err, "term 2 is empty")
	_, err = stepup.NewTerms([]string{"bad\xff"})
	assert.Error(t, err)
	terms, err := stepup.NewTerms([]string{"Defence", "defence", " top secret "})
	require.NoError(t, err)
	term, ok := terms.Find("TOP SECRET plans")
	assert.True(t, ok)
	assert.Equal(t, "top secret", term, "the term as configured, trimmed")
}

func TestTermsFind(t *testing.T) {
	terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	require.NoError(t, err)

	type contact struct {
		Name  string `json:"name"`
		Notes string `json:"notes"`
	}
	tests := []struct {
		name string
		args any
		want string // "" for no match
	}{
		{"plain", "defence", "defence"},
		{"mixed case", "Ministry of DeFeNcE", "defence"},
		{"american spelling", "Department of Defense", "defense"},
		{"inside a longer word", "defenceless", ""},
		{"prefix of a word", "militaryish", ""},
		{"suffix of a word", "paramilitary", ""},
		{"hyphen is a boundary", "Defence-sector contacts", "defence"},
		{"underscore is a boundary", "defence_budget", "defence"},
		{"punctuation", `"classified!"`, "classified"},
		{"digits are word characters", "defence2", ""},
		{"unicode letters are word characters", "défence militaryé", ""},
		{"unicode boundary", "«intelligence»", "intelligence"},
		{"not a term", "Aegis Systems", ""},
		{"empty", "", ""},
		{"nil", nil, ""},
		{"number", 42.0, ""},
		{"map value", map[string]any{"query": "military contacts"}, "military"},
		{"map key is not searched", map[string]any{"defence": "budget"}, ""},
		{"nested", map[string]any{"filter": map[string]any{"tags": []any{"retail", "Classified"}}}, "classified"},
		{"sorted keys decide the first match", map[string]any{"b": "military", "a": "defence"}, "defence"},
		{"raw JSON", json.RawMessage(`{"q":{"deep":["x","INTELLIGENCE report"]}}`), "intelligence"},
		{"raw JSON key", json.RawMessage(`{"military":"no"}`), ""},
		{"bytes", []byte(`["defense"]`), "defense"},
		{"escaped in JSON", json.RawMessage(`{"q":"\u0064efence"}`), "defence"},
		{"invalid JSON is searched as text", []byte(`{"q": "defence`), "defence"},
		{"struct", contact{Name: "Ann", Notes: "works in intelligence"}, "intelligence"},
		{"map of strings", map[string]string{"q": "military"}, "military"},
		{"slice of strings", []string{"a", "classified"}, "classified"},
		{"struct without a term", contact{Name: "Aegis"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := terms.Find(tt.args)
			assert.Equal(t, tt.want != "", ok, "found")
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCanonicalKey(t *testing.T) {
	same := []string{
		`{"a":1,"b":2}`,
		`{"b":2, "a":1}`,
		"{\n  \"a\": 1,\n  \"b\": 2\n}\n",
	}
	want := stepup.CanonicalKey("t", json.RawMessage(same[0]))
	assert.Equal(t, `"t" {"a":1,"b":2}`, want)
	for _, s := range same {
		assert.Equal(t, want, stepup.CanonicalKey("t", json.RawMessage(s)), s)
	}
	nested1 := stepup.CanonicalKey("t", json.RawMessage(`{"x":{"d":[1,{"z":1,"y":2}],"c":null}}`))
	nested2 := stepup.CanonicalKey("t", json.RawMessage(`{ "x" : { "c" : null, "d" : [ 1, { "y" : 2, "z" : 1 } ] } }`))
	assert.Equal(t, nested1, nested2)

	differ := []struct{ tool, args string }{
		{"u", `{"a":1,"b":2}`},
		{"t", `{"a":1,"b":3}`},
		{"t", `{"a":1.0,"b":2}`},
		{"t", `{"a":"1","b":2}`},
		{"t", `[{"a":1,"b":2}]`},
		{"t", `{"a":1,"b":2`},
	}
	for _, d := range differ {
		assert.NotEqual(t, want, stepup.CanonicalKey(d.tool, json.RawMessage(d.args)), "%s %s", d.tool, d.args)
	}
	assert.Equal(t, `"t" null`, stepup.CanonicalKey("t", nil))
	assert.Equal(t, `"t" null`, stepup.CanonicalKey("t", json.RawMessage(" ")))
	assert.Equal(t, `"t" !{"a":`, stepup.CanonicalKey("t", json.RawMessage(`{"a":`)))
	// A tool name cannot spill into the arguments.
	assert.NotEqual(t, stepup.CanonicalKey(`t {"a":1}`, nil), stepup.CanonicalKey("t", json.RawMessage(`{"a":1}`)))
}
