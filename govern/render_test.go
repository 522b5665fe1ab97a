package govern

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
)

// twins are two records that differ only in what they hold: the label and
// the fields' values (empty, short, long, with quotes and invisible
// characters), and even which fields the application filled in. An agent
// that names either must observe the same thing.
var twins = [2]*Record{
	{Label: "#7 A", Fields: map[string]string{"name": "", "value": "12"}},
	{Label: "#7 " + strings.Repeat(`Long "label" `, 40), Fields: map[string]string{
		"name":  strings.Repeat("n\u202e\"", 120),
		"value": "not a number " + strings.Repeat("v", 300),
		"extra": strings.Repeat("z", 500),
	}},
}

// describeTwins renders the push of a tool with policy p for args, once
// per twin, and reports what an agent could observe of each: the refusal's
// words, or nothing.
func describeTwins(t *testing.T, p Policy, args map[string]any) (refusals [2]string, actions [2]string) {
	t.Helper()
	d, err := newDescriber("t", &p, []string{"a", "b"})
	require.NoError(t, err)
	for i, rec := range twins {
		action, _, err := d.describe(args, rec)
		if err != nil {
			refusals[i] = err.Error()
		}
		actions[i] = action
	}
	return refusals, actions
}

// TestStoredValuesInTemplates is the review's finding: templates that turn
// a stored value into something other than a printed, cut value made the
// refusal depend on hidden data and say its exact length. Each is now
// refused when the policy is compiled, naming the tool and the field.
func TestStoredValuesInTemplates(t *testing.T) {
	ref := &RecordRef{Arg: "a", Kind: "k"}
	tests := []struct {
		name   string
		policy Policy
		want   string // in the compile error
	}{
		{"printf quotes the label", Policy{Scopes: []string{"s"}, Record: ref, Action: `{{printf "%q" .record.label}}`}, `tool "t": policy action: {{printf "%q" .record.label}}`},
		{"print a field", Policy{Scopes: []string{"s"}, Record: ref, Action: `{{print .record.fields.name}}`}, `tool "t": policy action: {{print .record.fields.name}}`},
		{"the fields map", Policy{Scopes: []string{"s"}, Record: ref, Action: `{{.record.fields}}`}, `tool "t": policy action: {{.record.fields}}`},
		{"a row's new value", Policy{Scopes: []string{"s"}, Record: ref, Rows: []Row{{Key: "who", New: "{{.record.fields.name}}"}}}, `tool "t": policy rows[0].new: {{.record.fields.name}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newDescriber("t", &tt.policy, nil)
			if err == nil {
				refusals, _ := describeTwins(t, tt.policy, map[string]any{"a": 7})
				t.Fatalf("compiled; the twins' refusals: %q", refusals)
			}
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestRecordTemplatesRefused: every other way a template could compute
// with a stored value is refused when compiled.
func TestRecordTemplatesRefused(t *testing.T) {
	for _, src := range []string{
		`{{.record}}`, `{{$.record}}`, `{{.}}`, `{{$}}`, `{{printf "%v" .}}`,
		`{{len .record.label}}`, `{{html .record.label}}`, `{{urlquery .record.fields.name}}`, `{{js .record.label}}`,
		`{{index .record.fields "name"}}`, `{{slice .record.label 1}}`, `{{eq .record.label "x"}}`, `{{not .record.fields.name}}`,
		`{{money .record.fields.value "EUR"}}`, `{{quote .record.fields}}`, `{{.record.label | printf "%s"}}`, `{{.record.label | quote | printf "%s"}}`,
		`{{show "x" .record.label}}`, `{{.record.restricted}}`, `{{.record.label.x}}`, `{{.record.fields.name.x}}`, `{{(.record).label}}`,
		`{{if .record.fields.name}}a{{else}}b{{end}}`, `{{if eq .record.label "x"}}a{{end}}`, `{{if $x := .record.label}}a{{end}}`,
		`{{with .record}}{{.label}}{{end}}`, `{{with .record.label}}{{.}}{{end}}`, `{{range .record.fields}}{{.}}{{end}}`,
		`{{range $k, $v := .record.fields}}{{$k}}{{end}}`, `{{$x := .record.label}}{{$x}}`, `{{$x := .}}{{$x.record.label}}`,
		`{{define "x"}}{{printf "%q" .label}}{{end}}{{template "x" .record}}`, `{{block "x" .}}{{.record.label}}{{end}}`,
		`{{with .a}}{{$.record.fields}}{{end}}`, `{{range .a}}{{len $.record.label}}{{end}}`,
	} {
		p := Policy{Scopes: []string{"s"}, Record: &RecordRef{Arg: "a", Kind: "k"}, Action: src}
		_, err := newDescriber("t", &p, nil)
		if assert.Error(t, err, "%s compiled", src) {
			assert.Contains(t, err.Error(), `tool "t": policy action: `, src)
		}
	}
	// What the CRM and the example policies write still compiles.
	for _, src := range []string{
		`{{.record.label}}`, `{{$.record.label}}`, `{{quote .record.fields.name}}`, `{{.record.fields.name | quote}}`,
		`#{{.record.fields.id}} {{.record.fields.name}}{{if .record.fields.company}} ({{.record.fields.company}}){{end}}`,
		`{{if .record}}List of {{.record.label}}{{else}}List{{end}}`, `{{with .a}}{{$.record.label}}{{.record}}{{end}}`,
		`{{range .a}}{{.record.fields}}{{end}}`, `{{if .a}}{{quote .a}}{{else}}none{{end}}`,
	} {
		p := Policy{Scopes: []string{"s"}, Record: &RecordRef{Arg: "a", Kind: "k"}, Action: src}
		_, err := newDescriber("t", &p, nil)
		assert.NoError(t, err, src)
	}
	// Without a record, .record is an argument like any other.
	p := Policy{Scopes: []string{"s"}, Action: `{{printf "%q" .record.label}}`}
	_, err := newDescriber("t", &p, nil)
	assert.NoError(t, err)
}

// pieces are the small grammar the property test draws templates from:
// ways to print arguments and stored values, allowed and not, and blocks
// that nest them.
var (
	leaves = []string{
		"x ", `"q" `, "{{.a}}", "{{quote .a}}", "{{.b}}", "{{len .a}}", `{{printf "%q" .a}}`,
		"{{.record.label}}", "{{quote .record.label}}", "{{.record.fields.name}}", "{{.record.fields.name | quote}}",
		"{{.record.fields.value}}", "{{.record.fields.extra}}", "{{.record.fields.gone}}", "{{$.record.label}}",
		`{{printf "%q" .record.label}}`, "{{print .record.fields.name}}", "{{.record.fields}}", "{{.record}}",
		"{{len .record.label}}", "{{html .record.label}}", "{{urlquery .record.fields.name}}", `{{index .record.fields "name"}}`,
		`{{eq .record.label "#7 A"}}`, `{{money .record.fields.value "EUR"}}`, "{{money .b .a}}", "{{.}}",
		"{{$x := .record.label}}{{$x}}", "{{$y := .a}}{{$y}}",
		// what reads a stored value once a block has made it the dot
		"{{.label}}", `{{printf "%q" .label}}`, "{{.fields}}", `{{printf "%q" .}}`,
	}
	blocks = []string{
		"{{if .record.fields.name}}%s{{end}}", "{{if .record.fields.name}}%s{{else}}%s{{end}}", "{{if .record}}%s{{else}}%s{{end}}",
		"{{if .a}}%s{{else}}%s{{end}}", "{{with .record}}%s{{end}}", "{{with .a}}%s{{end}}", "{{range .record.fields}}%s{{end}}",
		"{{if not .record.fields.value}}%s{{end}}",
	}
)

func genTemplate(r *rand.Rand, depth int) string {
	var b strings.Builder
	for range 1 + r.IntN(4) {
		if depth < 2 && r.IntN(4) == 0 {
			blk := blocks[r.IntN(len(blocks))]
			args := []any{genTemplate(r, depth+1)}
			if strings.Count(blk, "%s") == 2 {
				args = append(args, genTemplate(r, depth+1))
			}
			fmt.Fprintf(&b, blk, args...)
			continue
		}
		b.WriteString(leaves[r.IntN(len(leaves))])
	}
	return b.String()
}

// TestStoredValuesDecideNothing is the rule as a property: for any policy
// that compiles, whether a call is refused, and the refusal's words,
// depend on the request alone, never on the named record's stored values;
// and the push shows stored values cut, never refuses them for length.
func TestStoredValuesDecideNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 2))
	argSets := []map[string]any{
		{"a": "short", "b": 3},
		{"a": strings.Repeat("a", 150), "b": 1200},
		{"a": strings.Repeat("a", 199)},
		{"a": strings.Repeat("a", 201), "b": "x"},
		{"a": "", "b": nil},
	}
	const n = 8000
	compiled, refusedSome := 0, 0
	for range n {
		src := genTemplate(r, 0)
		asRow := r.IntN(3) == 0
		p := Policy{Scopes: []string{"s"}, Record: &RecordRef{Arg: "a", Kind: "k"}, Action: src}
		if asRow {
			p = Policy{Scopes: []string{"s"}, Record: &RecordRef{Arg: "a", Kind: "k"}, Rows: []Row{{Key: "k", New: src}}}
		}
		d, err := newDescriber("t", &p, []string{"a", "b"})
		if err != nil {
			assert.Contains(t, err.Error(), `tool "t": policy `, src)
			continue
		}
		compiled++
		for _, args := range argSets {
			refusals, actions := describeTwins(t, p, args)
			if refusals[0] != "" {
				refusedSome++
			}
			if !assert.Equal(t, refusals[0], refusals[1], "template %q (row %v), args %v: the refusal depends on stored data", src, asRow, args) {
				return
			}
			for i, a := range actions {
				assert.NotContains(t, a, strings.Repeat("z", maxStored), "a stored value is cut: %q", src)
				assert.NotContains(t, a, strings.Repeat("n\\u202e\\\"", 20), "a stored value is cut: %q", src)
				assert.NotContains(t, a, "\u202e", "a stored value is escaped: %q", src)
				if refusals[i] != "" || asRow {
					continue
				}
				// What stepup judges again, the sentence's length, cannot
				// differ either: the real render is never longer than the
				// render the refusal was judged from.
				worst, err := execute(d.action, d.data(args, twins[i], true))
				require.NoError(t, err)
				if !assert.LessOrEqual(t, utf8.RuneCountInString(a), max(utf8.RuneCountInString(worst), utf8.RuneCountInString(d.fallback)), "template %q, args %v: longer than its placeholder render", src, args) {
					return
				}
			}
		}
	}
	t.Logf("%d of %d templates compiled; %d renders refused", compiled, n, refusedSome)
	assert.Greater(t, compiled, n/10, "the grammar exercises templates that compile")
	assert.Greater(t, refusedSome, n/20, "the grammar exercises refusals")
}

// TestStoredValuesShownCut: the push shows a stored value escaped and cut
// to maxStored characters, and a long one is no reason to refuse.
func TestStoredValuesShownCut(t *testing.T) {
	p := Policy{Scopes: []string{"s"}, Record: &RecordRef{Arg: "a", Kind: "k"},
		Action: `Show {{.record.label}} {{quote .record.fields.name}}{{if .record.fields.name}} named{{end}}`}
	d, err := newDescriber("t", &p, nil)
	require.NoError(t, err)
	action, _, err := d.describe(map[string]any{"a": 7}, twins[1])
	require.NoError(t, err)
	label := cutStored(twins[1].Label)
	assert.Equal(t, maxStored, len([]rune(label)))
	assert.Equal(t, "Show "+label+` "`+cutStored(twins[1].Fields["name"])+`" named`, action)
	assert.LessOrEqual(t, len([]rune(action)), stepup.MaxActionChars)

	action, _, err = d.describe(map[string]any{"a": 7}, twins[0])
	require.NoError(t, err)
	assert.Equal(t, `Show #7 A ""`, action)
}

// TestMoneyExtremes: the template's money shows the most negative amount
// whole (its negation overflows an int64).
func TestMoneyExtremes(t *testing.T) {
	for amount, want := range map[string]string{
		"-9223372036854775808": "-92,233,720,368,547,758.08 EUR",
		"9223372036854775807":  "92,233,720,368,547,758.07 EUR",
		"-5":                   "-0.05 EUR",
	} {
		got, err := money(amount, "EUR")
		if err != nil || string(got) != want {
			t.Errorf("money(%s) = %q, %v; want %q", amount, got, err, want)
		}
	}
}
