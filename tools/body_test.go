package tools

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadCalls(t *testing.T) {
	call := func(name string) string {
		return `{"jsonrpc":"2.0","id":"` + name + `","method":"tools/call","params":{"name":"` + name + `"}}`
	}
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"one call", " " + call("list_deals") + "\n", []string{"list_deals"}},
		{"no call", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil},
		{"batch", "[" + call("a") + `,{"jsonrpc":"2.0","method":"ping","id":2},` + call("b") + "]", []string{"a", "b"}},
		{"keys match exactly, as go-sdk reads them", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_deals","NAME":"list_contacts"}}`, []string{"list_deals"}},
		{"METHOD is not method", `{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","params":{"name":"list_deals"}}`, nil},
		{"escaped key and name", `{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools/call","params":{"n\u0061me":"get\u005fcontact"}}`, []string{"get_contact"}},
		{"not JSON-RPC 2.0: go-sdk cannot decode it, so it calls nothing", `{"id":1,"method":"tools/call","params":{"name":"x"}}`, nil},
		{"name not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}`, []string{""}},
		{"huge number: an id go-sdk cannot decode either", `{"jsonrpc":"2.0","id":1e999,"method":"tools/call","params":{"name":"x"}}`, nil},
		{"not JSON-RPC 2.0 in a batch: go-sdk refuses the batch", `[{"id":1,"method":"tools/call","params":{"name":"x"}}]`, nil},
		{"scalar", `"tools/call"`, nil},
		{"empty batch", `[]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCalls([]byte(tt.body))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// Bodies go-sdk might read otherwise than encoding/json are refused with
// a reason that says what is wrong.
func TestReadCallsRefusesAmbiguousBodies(t *testing.T) {
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","arguments":{"id":6}}}`
	tests := []struct {
		name, body, want string
	}{
		{"trailing bytes (go-sdk runs the call)", call + " x", "data after the JSON-RPC message"},
		{"a second message", call + call, "data after the JSON-RPC message"},
		{"trailing bytes after a batch", "[" + call + "]]", "data after the JSON-RPC message"},
		{"repeated name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","name":"get_contact"}}`, `repeats the key "name"`},
		{"repeated method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"get_contact"}}`, `repeats the key "method"`},
		{"repeated after unescaping", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","n\u0061me":"get_contact"}}`, `repeats the key "name"`},
		{"repeated argument", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"update_contact","arguments":{"id":3,"email":"a@example.com","email":"b@example.com"}}}`, `repeats the key "email"`},
		{"repeated id in a batch", "[" + call + "," + strings.Replace(call, "get_contact", "list_contacts", 1) + "]", "repeats the JSON-RPC id 1"},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_contact\xff\"}}", "not valid UTF-8"},
		{"not JSON", `not json`, "not valid JSON"},
		{"cut short", call[:40], "ends before its JSON value does"},
		{"empty", ``, "empty"},
		{"too deep", strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), "nests deeper than 1000 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCalls([]byte(tt.body))
			require.Error(t, err, "judged %v", got)
			var be *bodyError
			require.ErrorAs(t, err, &be)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := readCalls([]byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)))
	assert.NoError(t, err, "go-sdk's own limit is allowed")
}

// FuzzCheckKeys holds the fast scan for repeated keys and depth, used on
// every valid body, to the token-by-token reading of diagnose.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"a":{"b":1,"b":2}}`, `{"a\"":1,"a\u0022":2}`, `[{"a":1},{"a":1}]`, `{"a":"\\","a":1}`,
		`{"k":[1,"k",{"k":"k"}],"x":{"k":{}}}`, `{"":1,"":2}`, `"\"{"`, `{"a":[],"b":[{},{"a":1,"a":{}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || !json.Valid(body) {
			return
		}
		fast, slow := checkKeys(body), explainInvalid(body)
		if (fast == nil) != (slow == nil) {
			t.Fatalf("checkKeys says %v, the token walk says %v, for %q", fast, slow, body)
		}
	})
}
