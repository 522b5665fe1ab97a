package govern

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/crm-mcp/crm-mcp/stepup"
)

// Policy is what one governed tool goes through, declared as a plain value
// beside the tool so that it can be written in Go for the CRM's own tools
// or decoded from YAML (or JSON) for a tool the product did not write. Its
// field names follow the gateway's policy file:
//
//	write_file:
//	  scopes: [files.write]
//	  writes: true
//	  action: "Write {{len .content}} bytes to {{.path}}"
//	  stepup: {terms_in: [path], when_argument_over: {size: 1000}}
//
// The zero Policy is not servable: a tool needs at least one scope, so that
// nothing is served that no administrator decided to grant.
type Policy struct {
	// Scopes are the Duo-managed scopes a call needs, all of them.
	Scopes []string `yaml:"scopes" json:"scopes"`
	// Writes marks a tool that changes data: STEPUP_ON_WRITE applies to
	// it, its call is on record ("started") before it runs, and an
	// approval covers that one call only.
	Writes bool `yaml:"writes,omitempty" json:"writes,omitempty"`
	// StepUp says which requests need a Duo Push before they run.
	StepUp StepUp `yaml:"stepup,omitempty" json:"stepup,omitempty"`
	// Record names the stored record whose classification decides too,
	// read through Config.Records before anything is decided.
	Record *RecordRef `yaml:"record,omitempty" json:"record,omitempty"`
	// Action is the sentence the approver reads first, a text/template
	// over the arguments (by name) and, under .record, the named record
	// (.record.label, .record.fields.NAME). Funcs: quote, money, len and
	// text/template's own. Without one the sentence names the tool (and
	// the upstream). Every value it prints is escaped and bounded.
	//
	// A stored value is escaped and cut to 60 characters, and may only be
	// printed, directly or through quote, or tested alone with an if that
	// has no else ({{if .record.fields.company}} ({{.record.fields.company}}){{end}});
	// {{if .record}} (is a record named?) is free. Anything else that
	// reads the record (printf, len, eq, index, money, a bare .record or
	// .record.fields, with or range over it) is refused when the policy
	// is added, so that whether a call is refused, and its words, never
	// depend on data the agent was not approved to see.
	Action string `yaml:"action,omitempty" json:"action,omitempty"`
	// Rows are the push's rows under the action. Empty means one row per
	// argument the call gives, in the input schema's property order. A
	// row's name must show as itself, fit stepup.MaxKeyChars and not read
	// as another row's or one the push writes itself (stepup.Reserved),
	// which an input property must not either when there are no rows.
	Rows []Row `yaml:"rows,omitempty" json:"rows,omitempty"`
	// Upstream names the server a gateway forwards the tool to; it only
	// appears in the default action sentence.
	Upstream string `yaml:"-" json:"-"`
}

// StepUp says when a call needs approval. Every reason but the record's
// comes from the request alone, so an agent can be told it.
type StepUp struct {
	// Always: every call needs approval (as the tool in STEPUP_TOOLS).
	// YAML and JSON also accept the bare string "always" for the whole
	// StepUp.
	Always bool `yaml:"always,omitempty" json:"always,omitempty"`
	// TermsIn names the arguments whose string values (nested ones
	// included) are searched for the sensitive terms; "*" searches every
	// argument.
	TermsIn []string `yaml:"terms_in,omitempty" json:"terms_in,omitempty"`
	// WhenArgumentOver: a numeric argument above its threshold.
	WhenArgumentOver map[string]float64 `yaml:"when_argument_over,omitempty" json:"when_argument_over,omitempty"`
	// WhenArgumentIs: an argument equal to one of its values (strings
	// compare ignoring case and surrounding space). Such a call asks for
	// sensitive data by itself: Call.ApprovedSensitive tells the handler
	// it was approved for it.
	WhenArgumentIs map[string][]any `yaml:"when_argument_is,omitempty" json:"when_argument_is,omitempty"`
	// Reason is what the approver and the agent read for a
	// WhenArgumentIs match, such as "the call asks for restricted
	// records". Default: which argument matched.
	Reason string `yaml:"reason,omitempty" json:"reason,omitempty"`
}

// IsZero reports whether s asks for no approval, for omitempty.
func (s StepUp) IsZero() bool {
	return !s.Always && len(s.TermsIn) == 0 && len(s.WhenArgumentOver) == 0 && len(s.WhenArgumentIs) == 0 && s.Reason == ""
}

// UnmarshalYAML accepts "always" or a mapping.
func (s *StepUp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "always" {
			return fmt.Errorf("line %d: stepup must be \"always\" or a mapping, not %q", n.Line, n.Value)
		}
		*s = StepUp{Always: true}
		return nil
	}
	type plain StepUp
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = StepUp(p)
	return nil
}

// UnmarshalJSON accepts "always" or an object.
func (s *StepUp) UnmarshalJSON(b []byte) error {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '"' {
		var v string
		if err := json.Unmarshal(t, &v); err != nil {
			return err
		}
		if v != "always" {
			return fmt.Errorf("stepup must be \"always\" or an object, not %q", v)
		}
		*s = StepUp{Always: true}
		return nil
	}
	type plain StepUp
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = StepUp(p)
	return nil
}

// RecordRef names the argument that identifies a stored record.
type RecordRef struct {
	// Arg is the argument holding the record's id.
	Arg string `yaml:"arg" json:"arg"`
	// Kind is passed to Records.Lookup ("contact", "deal").
	Kind string `yaml:"kind" json:"kind"`
	// NonZero: the call names a record only when the argument is given
	// and not zero or empty (list_deals' contact_id filter). Otherwise a
	// missing argument is an invalid call.
	NonZero bool `yaml:"non_zero,omitempty" json:"non_zero,omitempty"`
}

// Row is one row of the push.
type Row struct {
	// Key is the row's name on the phone. Required.
	Key string `yaml:"key" json:"key"`
	// Arg, when set, shows the row only when the call gives that
	// argument; New defaults to its value.
	Arg string `yaml:"arg,omitempty" json:"arg,omitempty"`
	// New is a template for the value the call sets (as Action's, but
	// not escaped: the push escapes rows itself). It is shown whole or
	// the call is refused, so it reads no stored value (Old shows it).
	New string `yaml:"new,omitempty" json:"new,omitempty"`
	// Old names a field of the record (Record.Fields) shown as the value
	// now, before an arrow; cut, never refused.
	Old string `yaml:"old,omitempty" json:"old,omitempty"`
}

// rowNames refuses names that cannot each be a row of the push: longer
// than stepup.MaxKeyChars once escaped, reading as a row the push writes
// itself, or as another of them (stepup.RowName).
func rowNames(names []string) error {
	seen := map[string]bool{}
	for _, k := range names {
		if k == "" {
			continue
		}
		q := stepup.Quote(cutName(k))
		switch n := stepup.RowName(k); {
		case utf8.RuneCountInString(stepup.Display(k)) > stepup.MaxKeyChars:
			return fmt.Errorf("%s is longer than %d characters, too long to name a row of the push", q, stepup.MaxKeyChars)
		case slices.Contains(stepup.Reserved, n):
			return fmt.Errorf("%s would read as the push's own %q row", q, n)
		case seen[n]:
			return fmt.Errorf("%s reads as another row's name", q)
		default:
			seen[n] = true
		}
	}
	return nil
}

// validate reports what is wrong with p for tool, naming the field.
func (p *Policy) validate(tool string) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("govern: tool %q: policy %s: %s", tool, field, fmt.Sprintf(format, args...)))
	}
	if len(p.Scopes) == 0 {
		bad("scopes", "is empty: every governed tool needs a scope")
	}
	for i, s := range p.Scopes {
		if s == "" {
			bad(fmt.Sprintf("scopes[%d]", i), "is empty")
		}
	}
	if p.Record != nil && (p.Record.Arg == "" || p.Record.Kind == "") {
		bad("record", "needs arg and kind")
	}
	keys := make([]string, 0, len(p.Rows))
	for i, r := range p.Rows {
		if r.Key == "" {
			bad(fmt.Sprintf("rows[%d].key", i), "is empty")
		} else if stepup.Display(r.Key) != r.Key {
			bad(fmt.Sprintf("rows[%d].key", i), "holds characters the phone would not show as themselves")
		}
		keys = append(keys, r.Key)
		if r.Arg == "" && r.New == "" {
			bad(fmt.Sprintf("rows[%d]", i), "needs arg or new")
		}
		if r.Old != "" && p.Record == nil {
			bad(fmt.Sprintf("rows[%d].old", i), "names a record field, but the policy names no record")
		}
	}
	if err := rowNames(keys); err != nil {
		bad("rows", "key %v", err)
	}
	for name, v := range p.StepUp.WhenArgumentIs {
		if len(v) == 0 {
			bad("stepup.when_argument_is."+name, "lists no value")
		}
	}
	return errors.Join(errs...)
}
