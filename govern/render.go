package govern

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode/utf8"

	"github.com/crm-mcp/crm-mcp/stepup"
)

// The push says exactly what the call will do, so its sentence and rows
// are rendered from the request (and the named record's stored values,
// which are cut, never refused) and from nothing else, and every value is
// escaped as the CRM's pushes always were: stepup.Display, and in the
// sentence quotes escaped too so that a value cannot close a quote the
// template opened. Templates are parsed once, when the tool is added; the
// parse tree is then rewritten, as html/template does, so that every value
// an action prints passes through show, whatever the template says.

const (
	// maxShown bounds one argument printed in an action, in characters
	// once invisible characters are written out; longer is refused with a
	// tool error naming the argument.
	maxShown = 200
	// maxStored bounds a stored value (the record's label or fields) in
	// an action. It is context the approver recognises the record by, so
	// it is cut, never refused: a stored length must not decide a refusal.
	maxStored = 60
)

// shown is text already escaped for an action sentence.
type shown string

// stored is a value read from the store, cut rather than refused.
type stored string

// unshowable is a request the push cannot show whole.
type unshowable struct{ field, msg string }

func (e *unshowable) Error() string { return e.msg }

func tooLong(field string, n, max int) error {
	return &unshowable{field, fmt.Sprintf("%s is too long to show on the phone for approval: %d characters once invisible characters are written out, at most %d fit. Shorten %s and call again.", field, n, max, field)}
}

// escape is a value as an action prints it unquoted.
func escape(s string) string { return strings.ReplaceAll(stepup.Display(s), `"`, `\"`) }

// cutStored escapes a stored value and cuts it to maxStored characters.
func cutStored(s string) string {
	s = escape(s)
	if r := []rune(s); len(r) > maxStored {
		s = string(r[:maxStored-1]) + "…"
	}
	return s
}

// plain is a decoded value as text: strings as they are, numbers as
// written, objects and arrays as canonical JSON, nothing for null.
func plain(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case shown:
		return string(v)
	case stored:
		return string(v)
	case json.Number:
		return string(v)
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.Itoa(v)
	case map[string]any, []any:
		return string(canonical(v))
	}
	return fmt.Sprint(v)
}

// show is appended to every pipeline an action prints: it escapes and
// bounds the value, naming field (the argument the pipeline reads) when it
// is too long.
func show(field string, v any) (string, error) {
	var s string
	switch v := v.(type) {
	case shown:
		s = string(v)
		if n := utf8.RuneCountInString(s) - 2; strings.HasPrefix(s, `"`) && n > maxShown {
			return "", tooLong(field, n, maxShown)
		}
		return s, nil
	case stored:
		return cutStored(string(v)), nil
	default:
		s = escape(plain(v))
	}
	if n := utf8.RuneCountInString(s); n > maxShown {
		return "", tooLong(field, n, maxShown)
	}
	return s, nil
}

// quote quotes a value as the CRM's sentences do: stepup.Quote.
func quote(v any) shown {
	if s, ok := v.(stored); ok {
		return shown(`"` + cutStored(string(s)) + `"`)
	}
	return shown(stepup.Quote(plain(v)))
}

// money formats an amount in minor units: 1200000 and EUR read
// "12,000.00 EUR".
func money(amount, currency any) (shown, error) {
	a, err := strconv.ParseInt(plain(amount), 10, 64)
	if err != nil {
		return "", fmt.Errorf("money: %q is not a whole number of minor units", plain(amount))
	}
	sign := ""
	if a < 0 {
		sign, a = "-", -a
	}
	units := strconv.FormatInt(a/100, 10)
	var b strings.Builder
	for i, r := range units {
		if i > 0 && (len(units)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return shown(fmt.Sprintf("%s%s.%02d %s", sign, b.String(), a%100, escape(plain(currency)))), nil
}

// text is appended to every pipeline a row prints: the value as text,
// unescaped (the push escapes and bounds rows itself).
func text(_ string, v any) string { return plain(v) }

var funcs = template.FuncMap{"quote": quote, "money": money, "show": show, "text": text}

// compile parses src once and rewrites it so that every printed pipeline
// ends in fn. what names the field in errors ("action", "rows[1].new").
func compile(tool, what, src, fn string) (*template.Template, error) {
	t, err := template.New(what).Funcs(funcs).Option("missingkey=zero").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("govern: tool %q: policy %s: %v", tool, what, err)
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if err := rewrite(tt.Tree.Root, fn); err != nil {
			return nil, fmt.Errorf("govern: tool %q: policy %s: %v", tool, what, err)
		}
	}
	return t, nil
}

// rewrite appends fn, with the name of the field the pipeline reads, to
// every printing pipeline under n, and refuses literal text the phone
// would not show as itself.
func rewrite(n parse.Node, fn string) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := rewrite(c, fn); err != nil {
				return err
			}
		}
	case *parse.TextNode:
		s := strings.ReplaceAll(string(n.Text), `\`, "")
		if !utf8.ValidString(s) || stepup.Display(s) != s {
			return fmt.Errorf("the text %q holds characters the phone would not show as themselves", string(n.Text))
		}
	case *parse.ActionNode:
		if len(n.Pipe.Decl) > 0 {
			return nil // an assignment prints nothing
		}
		n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{
			NodeType: parse.NodeCommand,
			Args: []parse.Node{
				parse.NewIdentifier(fn).SetTree(nil).SetPos(n.Pos),
				&parse.StringNode{NodeType: parse.NodeString, Pos: n.Pos, Quoted: strconv.Quote(fieldOf(n.Pipe)), Text: fieldOf(n.Pipe)},
			},
		})
	case *parse.IfNode:
		return rewriteBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		return rewriteBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		return rewriteBranch(&n.BranchNode, fn)
	}
	return nil
}

func rewriteBranch(b *parse.BranchNode, fn string) error {
	if err := rewrite(b.List, fn); err != nil {
		return err
	}
	if b.ElseList != nil {
		return rewrite(b.ElseList, fn)
	}
	return nil
}

// fieldOf names the first argument field a pipeline reads, for errors.
func fieldOf(p *parse.PipeNode) string {
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			switch a := a.(type) {
			case *parse.FieldNode:
				return strings.Join(a.Ident, ".")
			case *parse.ChainNode:
				if len(a.Field) > 0 {
					return strings.Join(a.Field, ".")
				}
			case *parse.PipeNode:
				if f := fieldOf(a); f != "value" {
					return f
				}
			}
		}
	}
	return "value"
}

// describer renders one tool's push: the action sentence and the rows.
type describer struct {
	tool, fallback string
	action         *template.Template // nil: fallback
	rows           []rowTmpl          // nil: one row per argument
	order          []string           // property order of the input schema
}

type rowTmpl struct {
	key, arg, old string
	new           *template.Template // nil: the argument's value
}

func newDescriber(tool string, p *Policy, order []string) (*describer, error) {
	d := &describer{tool: tool, order: order, fallback: "Call " + escape(tool)}
	if p.Upstream != "" {
		d.fallback += " on " + escape(p.Upstream)
	}
	var err error
	if p.Action != "" {
		if d.action, err = compile(tool, "action", p.Action, "show"); err != nil {
			return nil, err
		}
	}
	for i, r := range p.Rows {
		rt := rowTmpl{key: r.Key, arg: r.Arg, old: r.Old}
		if r.New != "" {
			if rt.new, err = compile(tool, fmt.Sprintf("rows[%d].new", i), r.New, "text"); err != nil {
				return nil, err
			}
		}
		d.rows = append(d.rows, rt)
	}
	return d, nil
}

// data is what the templates see: the arguments by name and, under
// "record", the named record.
func data(args map[string]any, rec *Record, worst bool) map[string]any {
	m := make(map[string]any, len(args)+1)
	maps.Copy(m, args)
	if rec != nil {
		label := stored(rec.Label)
		fields := make(map[string]any, len(rec.Fields))
		for k, v := range rec.Fields {
			fields[k] = stored(v)
			if worst {
				fields[k] = stored(strings.Repeat("W", maxStored))
			}
		}
		if worst {
			label = stored(strings.Repeat("W", maxStored))
		}
		m["record"] = map[string]any{"label": label, "restricted": rec.Restricted, "fields": fields}
	}
	return m
}

// describe renders the push for a call, or an *unshowable naming what
// cannot be shown. Whether it fails depends on the request alone: the
// sentence's length is judged with every stored value at its full budget.
func (d *describer) describe(args map[string]any, rec *Record) (string, []stepup.Detail, error) {
	action := d.fallback
	if d.action != nil {
		var err error
		if action, err = execute(d.action, data(args, rec, false)); err != nil {
			return "", nil, err
		}
		worst := action
		if rec != nil {
			if worst, err = execute(d.action, data(args, rec, true)); err != nil {
				return "", nil, err
			}
		}
		if n := max(utf8.RuneCountInString(action), utf8.RuneCountInString(worst)); n > stepup.MaxActionChars {
			return "", nil, &unshowable{"action", fmt.Sprintf("The description of this call is too long to show on the phone for approval (%d characters, at most %d fit). Shorten its arguments and call again.", n, stepup.MaxActionChars)}
		}
		if strings.TrimSpace(action) == "" {
			action = d.fallback
		}
	}
	var rows []stepup.Detail
	if d.rows == nil {
		for _, k := range d.argOrder(args) {
			rows = append(rows, stepup.Detail{Key: k, New: plain(args[k])})
		}
	}
	for _, r := range d.rows {
		v, given := args[r.arg]
		if r.arg != "" && !given {
			continue
		}
		row := stepup.Detail{Key: r.key, New: plain(v)}
		if r.new != nil {
			var err error
			if row.New, err = execute(r.new, data(args, rec, false)); err != nil {
				return "", nil, err
			}
		}
		if r.old != "" && rec != nil {
			row.Old, row.HasOld = rec.Fields[r.old], true
		}
		rows = append(rows, row)
	}
	for _, r := range rows {
		s := r.New
		if s == "" {
			s = "(empty)"
		}
		if n := utf8.RuneCountInString(stepup.Display(s)); n > stepup.MaxValueChars {
			return "", nil, tooLong(r.Key, n, stepup.MaxValueChars)
		}
	}
	return action, rows, nil
}

// argOrder is the arguments given, in the schema's property order, then
// any others sorted.
func (d *describer) argOrder(args map[string]any) []string {
	out := make([]string, 0, len(args))
	for _, k := range d.order {
		if _, ok := args[k]; ok {
			out = append(out, k)
		}
	}
	if len(out) < len(args) {
		var rest []string
		for k := range args {
			if !slices.Contains(d.order, k) {
				rest = append(rest, k)
			}
		}
		slices.Sort(rest)
		out = append(out, rest...)
	}
	return out
}

// execute runs t, turning an unshowable value into that error and any
// other failure into one the caller can act on.
func execute(t *template.Template, data any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		var u *unshowable
		if asUnshowable(err, &u) {
			return "", u
		}
		return "", &unshowable{t.Name(), "The call cannot be described for approval (" + t.Name() + ": " + templateReason(err) + "), so it was not run; check its arguments."}
	}
	return b.String(), nil
}

func asUnshowable(err error, u **unshowable) bool { return errors.As(err, u) }

// templateReason says why a template failed without quoting values.
func templateReason(error) string { return "a value it needs is missing or of another type" }
