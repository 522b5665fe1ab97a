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
//
// Whether a push can be shown must depend on the request alone: an agent
// must not learn from a refusal (its words, or its happening) what a
// record it was not approved to see holds. So stored values enter the
// template data already escaped and cut, a template may only print them
// (directly or through quote) or test them with an if that has no else
// (recordCheck refuses anything else when the policy is compiled), and the
// refusal is judged from a render with every stored value replaced by a
// placeholder as long as a cut value can be. The real render prints a
// subset of what that render prints, each value no longer, so it fits
// whenever the placeholder render does.

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

// stored is a value read from the store, escaped and cut to maxStored
// (cutStored) before a template sees it.
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
		return string(v), nil
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
		return shown(`"` + string(s) + `"`)
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
	return shown(MinorUnits(a) + " " + escape(plain(currency))), nil
}

// MinorUnits shows an amount in minor units (cents) as a person reads it:
// 1200000 is "12,000.00", -5 is "-0.05". The templates' money and an
// application's own labels (the CRM's) use it, so that a push and an
// answer show an amount alike.
func MinorUnits(amount int64) string {
	// The magnitude as unsigned: -amount overflows for math.MinInt64,
	// whose magnitude uint64 holds.
	sign, u := "", uint64(amount)
	if amount < 0 {
		sign, u = "-", -u
	}
	units := strconv.FormatUint(u/100, 10)
	var b strings.Builder
	for i, r := range units {
		if i > 0 && (len(units)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return fmt.Sprintf("%s%s.%02d", sign, b.String(), u%100)
}

// text is appended to every pipeline a row prints: the value as text,
// unescaped (the push escapes and bounds rows itself).
func text(_ string, v any) string { return plain(v) }

var funcs = template.FuncMap{"quote": quote, "money": money, "show": show, "text": text}

// compile parses src once and rewrites it so that every printed pipeline
// ends in fn. what names the field in errors ("action", "rows[1].new").
// rc, when the policy names a record, checks how the template uses it.
func compile(tool, what, src, fn string, rc *recordCheck) (*template.Template, error) {
	t, err := template.New(what).Funcs(funcs).Option("missingkey=zero").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("govern: tool %q: policy %s: %v", tool, what, err)
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if rc != nil {
			// Only the template executed sees the data; one it invokes
			// sees what the invocation passes, never the record.
			top := tt.Name() == t.Name()
			if err := rc.list(tt.Tree.Root, scope{dot: top, dollar: top}); err != nil {
				return nil, fmt.Errorf("govern: tool %q: policy %s: %v", tool, what, err)
			}
		}
		if err := rewrite(tt.Tree.Root, fn); err != nil {
			return nil, fmt.Errorf("govern: tool %q: policy %s: %v", tool, what, err)
		}
	}
	return t, nil
}

// scope says where a node is evaluated whether dot and $ hold the whole
// template data, and so the record.
type scope struct{ dot, dollar bool }

// recordCheck refuses every use of the named record in a template but
// those whose outcome cannot depend on what it holds: printing
// .record.label or .record.fields.NAME, directly or through quote, and
// {{if .record.fields.NAME}} with no else (the placeholder render takes
// every such branch, so the real render prints less, never more). A
// builtin (printf, len, eq, index, ...) or money would compute with the
// value, a bare .record or .record.fields would print whole maps, with and
// range would hand stored values to code the check cannot follow, and an
// else could print more than the placeholder render does. {{if .record}}
// is allowed anywhere: whether a record is named depends on the request.
type recordCheck struct {
	// row: a row's new value says what the call writes, so it shows no
	// stored value at all (Row.Old does, cut).
	row bool
	// fields are the field names the templates read, so that the
	// placeholder render has every one.
	fields map[string]bool
}

func (rc *recordCheck) list(l *parse.ListNode, s scope) error {
	if l == nil {
		return nil
	}
	for _, n := range l.Nodes {
		if err := rc.node(n, s); err != nil {
			return err
		}
	}
	return nil
}

func (rc *recordCheck) node(n parse.Node, s scope) error {
	switch n := n.(type) {
	case *parse.ActionNode:
		if !touches(n.Pipe, s) || len(n.Pipe.Decl) == 0 && !rc.row && rc.printed(n.Pipe, s) {
			return nil
		}
		return rc.refuse(n.String())
	case *parse.IfNode:
		if touches(n.Pipe, s) && !isRecord(n.Pipe, s) {
			if rc.row || n.ElseList != nil || len(n.Pipe.Decl) > 0 || !rc.single(n.Pipe, s) {
				return rc.refuse("{{if " + n.Pipe.String() + "}}")
			}
		}
		if err := rc.list(n.List, s); err != nil {
			return err
		}
		return rc.list(n.ElseList, s)
	case *parse.WithNode:
		return rc.branch("with", &n.BranchNode, s)
	case *parse.RangeNode:
		return rc.branch("range", &n.BranchNode, s)
	case *parse.TemplateNode:
		if touches(n.Pipe, s) {
			return rc.refuse(n.String())
		}
	}
	return nil
}

// branch checks a with or range: its pipeline must not read the record,
// and inside it dot is request data.
func (rc *recordCheck) branch(kw string, b *parse.BranchNode, s scope) error {
	if touches(b.Pipe, s) {
		return rc.refuse("{{" + kw + " " + b.Pipe.String() + "}}")
	}
	if err := rc.list(b.List, scope{dot: false, dollar: s.dollar}); err != nil {
		return err
	}
	return rc.list(b.ElseList, s)
}

func (rc *recordCheck) refuse(what string) error {
	if rc.row {
		return fmt.Errorf("%s shows a stored value of the record, but a row's new value says what the call writes; show the value now with old", what)
	}
	return fmt.Errorf("%s uses the record otherwise than printing .record.label or .record.fields.NAME (directly or through quote) or testing one with an if without else, so whether the call is refused could depend on data the agent was not approved to see", what)
}

// printed reports whether p prints one stored value as allowed: R,
// quote R, or R | quote.
func (rc *recordCheck) printed(p *parse.PipeNode, s scope) bool {
	switch len(p.Cmds) {
	case 1:
		a := p.Cmds[0].Args
		return len(a) == 1 && rc.direct(a[0], s) || len(a) == 2 && isIdent(a[0], "quote") && rc.direct(a[1], s)
	case 2:
		a, b := p.Cmds[0].Args, p.Cmds[1].Args
		return len(a) == 1 && rc.direct(a[0], s) && len(b) == 1 && isIdent(b[0], "quote")
	}
	return false
}

// single reports whether p is one stored value and nothing else.
func (rc *recordCheck) single(p *parse.PipeNode, s scope) bool {
	return len(p.Cmds) == 1 && len(p.Cmds[0].Args) == 1 && rc.direct(p.Cmds[0].Args[0], s)
}

// direct reports whether n is .record.label or .record.fields.NAME (or
// the same under $), noting the field read.
func (rc *recordCheck) direct(n parse.Node, s scope) bool {
	path := recordPath(n, s)
	switch {
	case len(path) == 2 && path[1] == "label":
		return true
	case len(path) == 3 && path[1] == "fields":
		rc.fields[path[2]] = true
		return true
	}
	return false
}

// recordPath is the path n reads from the template data when it starts
// at the record ("record", "fields", "name"), or nil.
func recordPath(n parse.Node, s scope) []string {
	switch n := n.(type) {
	case *parse.FieldNode:
		if s.dot && n.Ident[0] == "record" {
			return n.Ident
		}
	case *parse.VariableNode:
		if s.dollar && n.Ident[0] == "$" && len(n.Ident) > 1 && n.Ident[1] == "record" {
			return n.Ident[1:]
		}
	}
	return nil
}

// isRecord reports whether p is the bare .record: present exactly when
// the call names a record, which the request alone decides.
func isRecord(p *parse.PipeNode, s scope) bool {
	return len(p.Decl) == 0 && len(p.Cmds) == 1 && len(p.Cmds[0].Args) == 1 && len(recordPath(p.Cmds[0].Args[0], s)) == 1
}

// touches reports whether n can read the record: through .record or
// $.record, or through a dot or $ that holds the whole data. Variables a
// template declares cannot, since a declaration that touches is refused.
func touches(n parse.Node, s scope) bool {
	switch n := n.(type) {
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			if touches(c, s) {
				return true
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if touches(a, s) {
				return true
			}
		}
	case *parse.ChainNode:
		return touches(n.Node, s)
	case *parse.DotNode:
		return s.dot
	case *parse.FieldNode, *parse.VariableNode:
		if v, ok := n.(*parse.VariableNode); ok && len(v.Ident) == 1 && v.Ident[0] == "$" {
			return s.dollar
		}
		return recordPath(n, s) != nil
	}
	return false
}

func isIdent(n parse.Node, name string) bool {
	id, ok := n.(*parse.IdentifierNode)
	return ok && id.Ident == name
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
	fields         []string           // the record fields the templates read
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
	var action, row *recordCheck
	if p.Record != nil {
		fields := map[string]bool{}
		action, row = &recordCheck{fields: fields}, &recordCheck{row: true, fields: fields}
		defer func() { d.fields = slices.Sorted(maps.Keys(fields)) }()
	}
	var err error
	if p.Action != "" {
		if d.action, err = compile(tool, "action", p.Action, "show", action); err != nil {
			return nil, err
		}
	}
	for i, r := range p.Rows {
		rt := rowTmpl{key: r.Key, arg: r.Arg, old: r.Old}
		if r.New != "" {
			if rt.new, err = compile(tool, fmt.Sprintf("rows[%d].new", i), r.New, "text", row); err != nil {
				return nil, err
			}
		}
		d.rows = append(d.rows, rt)
	}
	return d, nil
}

// placeholder stands for every stored value in the render that decides
// whether a push can be shown: as long as a cut value can be, and not
// empty, so that every if on a stored value takes its branch.
var placeholder = stored(strings.Repeat("W", maxStored))

// data is what the templates see: the arguments by name and, under
// "record", the named record's label and fields, escaped and cut; with
// placeholders, every one replaced by placeholder. Every field the
// templates read is there, so that which fields a record has decides
// nothing either.
func (d *describer) data(args map[string]any, rec *Record, placeholders bool) map[string]any {
	m := make(map[string]any, len(args)+1)
	maps.Copy(m, args)
	if rec == nil {
		return m
	}
	label := placeholder
	fields := make(map[string]any, len(d.fields))
	for _, k := range d.fields {
		fields[k] = placeholder
		if !placeholders {
			fields[k] = stored(cutStored(rec.Fields[k]))
		}
	}
	if !placeholders {
		label = stored(cutStored(rec.Label))
	}
	m["record"] = map[string]any{"label": label, "fields": fields}
	return m
}

// describe renders the push for a call, or an *unshowable naming what
// cannot be shown. Whether it fails depends on the request alone: it is
// judged from a render with placeholders for the stored values (see the
// top of this file), and rows show no stored value but the old one, which
// stepup cuts.
func (d *describer) describe(args map[string]any, rec *Record) (string, []stepup.Detail, error) {
	action := d.fallback
	if d.action != nil {
		worst, err := execute(d.action, d.data(args, rec, true))
		if err != nil {
			return "", nil, err
		}
		if n := utf8.RuneCountInString(worst); n > stepup.MaxActionChars {
			return "", nil, &unshowable{"action", fmt.Sprintf("The description of this call is too long to show on the phone for approval (%d characters, at most %d fit). Shorten its arguments and call again.", n, stepup.MaxActionChars)}
		}
		if rec != nil {
			// Cannot fail where the placeholder render did not, nor be
			// longer: it prints a subset of the same pipelines.
			if action, err = execute(d.action, d.data(args, rec, false)); err != nil {
				return "", nil, err
			}
		} else {
			action = worst
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
			// A row's template reads no stored value (recordCheck), only
			// whether there is a record.
			if row.New, err = execute(r.new, d.data(args, rec, true)); err != nil {
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
