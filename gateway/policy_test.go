package gateway

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const examplePath = "../examples/gateway/policy.yaml"

const secretValue = "s3cr3t-everything-token"

func env(kv ...string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == name {
				return kv[i+1], true
			}
		}
		return "", false
	}
}

// TestExamplePolicy: the README's example, as written, loads.
func TestExamplePolicy(t *testing.T) {
	pol, err := Load(examplePath, env("EVERYTHING_TOKEN", secretValue))
	require.NoError(t, err)
	require.Len(t, pol.Upstreams, 2)
	ev, files := pol.Upstreams[0], pol.Upstreams[1]
	assert.Equal(t, "everything", ev.Name)
	assert.Equal(t, "http://127.0.0.1:3001/mcp", ev.URL)
	assert.Equal(t, "Bearer "+secretValue, ev.headers.Get("Authorization"))
	assert.Equal(t, []string{"Authorization"}, ev.HeaderNames())
	assert.Equal(t, []string{"echo", "get-env", "get-sum", "trigger-long-running-operation"}, ev.ToolNames())
	assert.True(t, ev.Tools["get-env"].StepUp.Always)
	assert.Equal(t, map[string]float64{"duration": 10}, ev.Tools["trigger-long-running-operation"].StepUp.WhenArgumentOver)
	assert.Equal(t, "everything", ev.Tools["echo"].Upstream)
	assert.Equal(t, DefaultTimeout, ev.Timeout)
	assert.Equal(t, []string{"npx", "-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "/srv/shared"}, files.Command)
	assert.True(t, files.Tools["write_file"].Writes)
	assert.Equal(t, []string{"path"}, files.Tools["read_text_file"].StepUp.TermsIn)
	assert.Equal(t, examplePath+":9", ev.Where("get-sum"))
}

// TestBadPolicy: a policy that cannot be served stops the start with an
// error naming the line and the field, and never a secret.
func TestBadPolicy(t *testing.T) {
	const head = "upstreams:\n  - name: up\n    url: http://127.0.0.1:1/mcp\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"syntax", "upstreams: [\n", []string{"p.yaml:1: did not find"}},
		{"empty", "", []string{"p.yaml: upstreams: the file is empty"}},
		{"no upstreams", "other: 1\n", []string{"p.yaml:1: other: unknown field"}},
		{"missing env", head + "    headers: {Authorization: \"Bearer ${NOPE}\"}\n    tools: {echo: {scopes: [a]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers.Authorization: ${NOPE} is not set in the environment"}},
		{"unclosed var", head + "    headers: {X-Key: \"${KEY\"}\n    tools: {echo: {scopes: [a]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers.X-Key: holds an unclosed ${"}},
		{"typo in stepup", head + "    tools:\n      echo:\n        scopes: [a]\n        step_up: always\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo.step_up: unknown field"}},
		{"typo nested", head + "    tools:\n      echo:\n        scopes: [a]\n        stepup: {when_arg_over: {n: 1}}\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo.stepup.when_arg_over: unknown field"}},
		{"bad stepup", head + "    tools:\n      echo:\n        scopes: [a]\n        stepup: sometimes\n",
			[]string{`p.yaml:7: upstreams[0].tools.echo: stepup must be "always" or a mapping`}},
		{"no scopes", head + "    tools:\n      echo: {action: hi}\n",
			[]string{"p.yaml:5: upstreams[0].tools.echo: policy scopes: is empty"}},
		{"bad template", head + "    tools:\n      echo:\n        scopes: [a]\n        action: \"Say {{.message\"\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo: policy action: "}},
		{"record", head + "    tools:\n      echo:\n        scopes: [a]\n        record: {arg: id, kind: x}\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo.record: the gateway reads no records"}},
		{"no tools", head, []string{"p.yaml:2: upstreams[0].tools: names no tool"}},
		{"both", head + "    command: [x]\n    tools: {echo: {scopes: [a]}}\n", []string{"p.yaml:2: upstreams[0]: has both url and command"}},
		{"neither", "upstreams:\n  - name: up\n    tools: {echo: {scopes: [a]}}\n", []string{"p.yaml:2: upstreams[0]: needs url (Streamable HTTP) or command (stdio)"}},
		{"dotted name", "upstreams:\n  - name: a.b\n    command: [x]\n    tools: {echo: {scopes: [a]}}\n", []string{"p.yaml:2: upstreams[0].name: \"a.b\": use letters"}},
		{"twice", "upstreams:\n  - {name: a, command: [x], tools: {t: {scopes: [s]}}}\n  - {name: a, command: [y], tools: {t: {scopes: [s]}}}\n",
			[]string{"p.yaml:3: upstreams[1].name: \"a\" is used twice"}},
		{"credentials in url", "upstreams:\n  - name: a\n    url: http://u:" + secretValue + "@h/mcp\n    tools: {t: {scopes: [s]}}\n",
			[]string{"p.yaml:3: upstreams[0].url: must not hold credentials"}},
		{"headers on command", "upstreams:\n  - name: a\n    command: [x]\n    headers: {A: b}\n    tools: {t: {scopes: [s]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers: apply to url only"}},
		{"timeout", head + "    timeout: forever\n    tools: {echo: {scopes: [a]}}\n", []string{"p.yaml:4: upstreams[0].timeout: must be a duration"}},
		{"scopes not a list", head + "    tools:\n      echo:\n        scopes: 3\n", []string{"p.yaml:6: upstreams[0].tools.echo: "}},
		// ${VAR} is expanded in headers and env only: elsewhere it is
		// refused, not kept as written.
		{"var in url", "upstreams:\n  - name: a\n    url: http://x/${KEY}\n    tools: {t: {scopes: [s]}}\n",
			[]string{"p.yaml:3: upstreams[0].url: ${KEY} is expanded only in headers and env"}},
		{"var in command", "upstreams:\n  - name: a\n    command: [x, \"--token=${KEY}\"]\n    tools: {t: {scopes: [s]}}\n",
			[]string{"p.yaml:3: upstreams[0].command[1]: ${KEY} is expanded only in headers and env"}},
		{"var in action", head + "    tools:\n      echo:\n        scopes: [a]\n        action: \"Say ${KEY}\"\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo.action: ${KEY} is expanded only in headers and env"}},
		{"var in row", head + "    tools:\n      echo:\n        scopes: [a]\n        rows: [{key: k, new: \"${KEY}\"}]\n",
			[]string{"p.yaml:7: upstreams[0].tools.echo.rows[0].new: ${KEY} is expanded only"}},
		// A header value is an RFC 9110 field-value once expanded.
		{"header control", head + "    headers: {X-Key: \"${CTL}\"}\n    tools: {echo: {scopes: [a]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers.X-Key: is not a header value once expanded"}},
		{"header space", head + "    headers: {X-Key: \"${KEY} \"}\n    tools: {echo: {scopes: [a]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers.X-Key: is not a header value once expanded"}},
		{"header DEL", head + "    headers: {X-Key: \"a\\x7fb\"}\n    tools: {echo: {scopes: [a]}}\n",
			[]string{"p.yaml:4: upstreams[0].headers.X-Key: is not a header value"}},
		// Tool names keep MCP's rule once served as upstream.tool.
		{"tool name odd", head + "    tools:\n      'a b/../\u202e': {scopes: [s]}\n", []string{`p.yaml:5: upstreams[0].tools: "a b/../\u202e": use letters, digits`}},
		{"tool name empty", head + "    tools:\n      '': {scopes: [s]}\n", []string{`p.yaml:5: upstreams[0].tools: "": use letters, digits`}},
		{"tool name long", head + "    tools:\n      " + strings.Repeat("t", 126) + ": {scopes: [s]}\n", []string{`at most 128 characters with the upstream's name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.yaml), env("KEY", secretValue, "CTL", secretValue+"\x01"))
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), secretValue)
			var fe *FieldError
			assert.True(t, errors.As(err, &fe), "a *FieldError")
		})
	}
}

// TestPolicyLiterals: what is not a ${VAR} passes as written (a dollar
// amount in a template), a tool name may use every MCP name character up
// to 128 with its upstream's, and a header value may hold inner spaces
// and obs-text.
func TestPolicyLiterals(t *testing.T) {
	long := strings.Repeat("t", 125)
	pol, err := Parse("p.yaml", []byte("upstreams:\n  - name: up\n    url: http://h/mcp\n    headers: {X-A: \"Bearer ${KEY}\", X-B: \"caf\u00e9 \\tau lait\"}\n    tools:\n      "+
		"get_Thing-v2.x: {scopes: [s], action: \"Pay ${{.amount}}\"}\n      "+long+": {scopes: [s]}\n"), env("KEY", secretValue))
	require.NoError(t, err)
	u := pol.Upstreams[0]
	assert.Equal(t, []string{"get_Thing-v2.x", long}, u.ToolNames())
	assert.Equal(t, "Pay ${{.amount}}", u.Tools["get_Thing-v2.x"].Action)
	assert.Equal(t, "café \tau lait", u.headers.Get("X-B"))
}

func TestPolicySettings(t *testing.T) {
	pol, err := Parse("p.yaml", []byte("upstreams:\n  - name: a\n    command: [x]\n    env: {TOKEN: \"${KEY}\"}\n    timeout: 5s\n    max_calls: 3\n    tools: {t: {scopes: [s]}}\n"), env("KEY", secretValue))
	require.NoError(t, err)
	u := pol.Upstreams[0]
	assert.Equal(t, 5*time.Second, u.Timeout)
	assert.Equal(t, 3, u.MaxCalls)
	assert.Equal(t, []string{"TOKEN=" + secretValue}, u.env)
}

// FuzzParse: the loader never panics, every error is a *FieldError, and a
// header's expanded value never reaches an error.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	require.NoError(f, err)
	f.Add(string(example))
	f.Add("upstreams:\n  - name: a\n    url: http://h/mcp\n    headers: {A: \"x ${KEY} y\"}\n    tools:\n      t:\n        scopes: [s]\n        stepup: {terms_in: ['*'], when_argument_is: {k: [1, x]}}\n        rows: [{key: k, arg: a}]\n")
	f.Add("upstreams:\n  - {name: a, command: [x, y], env: {B: \"${KEY}\"}, timeout: 1s, max_calls: 2, tools: {t: {scopes: [s], stepup: always, writes: true}}}\n")
	f.Add("upstreams: [ {name: &a x, url: *a} ]")
	f.Add("upstreams:\n - !!map {name: a}\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, err := Parse("p.yaml", []byte(s), env("KEY", secretValue))
		if err == nil {
			return
		}
		if strings.Contains(err.Error(), secretValue) && !strings.Contains(s, secretValue) {
			t.Fatalf("an error holds the expanded secret: %v", err)
		}
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("not a *FieldError: %v", err)
		}
	})
}
