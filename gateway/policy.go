package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"

	"github.com/crm-mcp/crm-mcp/govern"
)

// Defaults of an upstream's settings the policy file may leave out.
const (
	// DefaultTimeout bounds one forwarded call; a call that needed a push
	// has had its wait already, so this is the upstream's time alone.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxUpstreamCalls bounds the calls in flight to one upstream, so that
	// one slow upstream cannot hold every goroutine and connection.
	DefaultMaxUpstreamCalls = 32
	// maxPolicyBytes bounds the policy file: it is read whole.
	maxPolicyBytes = 1 << 20
)

// Policy is a gateway's policy file, decoded and checked: the upstream
// servers and, for each, the tools it may serve and how each is governed.
// A tool the policy does not name is neither listed nor callable.
type Policy struct {
	Upstreams []*Upstream
}

// Upstream is one MCP server behind the gateway.
type Upstream struct {
	// Name prefixes its tools: "everything" serves everything.echo.
	Name string
	// URL is a Streamable HTTP endpoint (either revision, with or without
	// sessions); Command a stdio server the gateway starts. One of the two.
	URL     string
	Command []string
	// Timeout bounds one forwarded call (DefaultTimeout).
	Timeout time.Duration
	// MaxCalls bounds the calls in flight to it (DefaultMaxUpstreamCalls).
	MaxCalls int
	// Tools are its tools the gateway serves, by the upstream's name.
	Tools map[string]govern.Policy

	// headers are sent on every request to URL, ${VAR} expanded: the
	// gateway's own credential. Never printed, never in an error.
	headers http.Header
	// env is added to a command's environment ("K=V", ${VAR} expanded),
	// its credentials as headers are a URL's. Never printed.
	env []string
	// line is where the upstream is declared, and toolLine each tool,
	// for messages about what the upstream turns out to offer.
	line     int
	toolLine map[string]int
	file     string
}

// ToolNames are the upstream's tools the policy names, sorted.
func (u *Upstream) ToolNames() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for n := range u.Tools {
			if !yield(n) {
				return
			}
		}
	})
}

// HeaderNames are the headers the policy sends to the upstream, without
// their values, for messages.
func (u *Upstream) HeaderNames() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for n := range u.headers {
			if !yield(n) {
				return
			}
		}
	})
}

// Where is "file:line" of the upstream's declaration, or of its tool when
// tool is not "".
func (u *Upstream) Where(tool string) string {
	line := u.line
	if l, ok := u.toolLine[tool]; ok {
		line = l
	}
	return u.file + ":" + strconv.Itoa(line)
}

// FieldError is a policy file problem: where and which field, as
// fs.PathError carries its path, so that callers never parse the text.
type FieldError struct {
	File  string
	Line  int
	Field string // "upstreams[0].tools.get-env.stepup"
	Err   error
}

func (e *FieldError) Error() string {
	where := e.File
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Field == "" {
		return where + ": " + e.Err.Error()
	}
	return where + ": " + e.Field + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Parse reads a policy file's contents. file names it in errors; getenv
// looks up the ${VAR}s of headers and env (and only there: the rest of
// the file is taken as written). Every problem is returned, each a
// *FieldError, joined.
func Parse(file string, data []byte, getenv func(string) (string, bool)) (*Policy, error) {
	if len(data) > maxPolicyBytes {
		return nil, &FieldError{File: file, Err: fmt.Errorf("is larger than %d bytes", maxPolicyBytes)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &FieldError{File: file, Line: yamlLine(err), Err: errors.New(yamlMessage(err))}
	}
	p := &parser{file: file, getenv: getenv}
	pol := p.policy(&doc)
	return pol, errors.Join(p.errs...)
}

// parser walks the YAML nodes, so that every error names a line and a
// field; decoding into a struct would lose both for most mistakes.
type parser struct {
	file   string
	getenv func(string) (string, bool)
	errs   []error
}

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Field: field, Err: fmt.Errorf(format, args...)})
}

// mapping calls fn for each key of a mapping node, refusing keys not in
// known: a misspelt "stepup" must not silently govern nothing.
func (p *parser) mapping(n *yaml.Node, field string, known []string, fn func(key string, k, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		p.fail(n, field, "must be a mapping")
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := join(field, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			p.fail(k, field, "keys must be plain names")
		case seen[k.Value]:
			p.fail(k, name, "is given twice")
		case known != nil && !slices.Contains(known, k.Value):
			p.fail(k, name, "unknown field; the fields here are %s", strings.Join(known, ", "))
		default:
			seen[k.Value] = true
			fn(k.Value, k, v)
		}
	}
	return true
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (p *parser) policy(doc *yaml.Node) *Policy {
	pol := &Policy{}
	if len(doc.Content) == 0 {
		p.fail(doc, "upstreams", "the file is empty: it must list the upstreams")
		return pol
	}
	root := doc.Content[0]
	var ups *yaml.Node
	p.mapping(root, "", []string{"upstreams"}, func(_ string, _, v *yaml.Node) { ups = v })
	if ups == nil {
		if root.Kind == yaml.MappingNode {
			p.fail(root, "upstreams", "is missing: list at least one upstream")
		}
		return pol
	}
	if ups.Kind != yaml.SequenceNode || len(ups.Content) == 0 {
		p.fail(ups, "upstreams", "must list at least one upstream")
		return pol
	}
	names := map[string]bool{}
	for i, n := range ups.Content {
		u := p.upstream(n, fmt.Sprintf("upstreams[%d]", i))
		if u == nil {
			continue
		}
		if names[u.Name] {
			p.fail(n, fmt.Sprintf("upstreams[%d].name", i), "%q is used twice: tool names would be ambiguous", u.Name)
		}
		names[u.Name] = true
		pol.Upstreams = append(pol.Upstreams, u)
	}
	return pol
}

// upstreamName keeps "upstream.tool" unambiguous and within MCP's tool
// name characters.
var upstreamName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// toolName is MCP's tool name rule (server/tools, "Tool Names"), which
// the served name upstream.tool must keep.
var toolName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

const maxToolName = 128

var upstreamFields = []string{"name", "url", "headers", "command", "env", "timeout", "max_calls", "tools"}

func (p *parser) upstream(n *yaml.Node, field string) *Upstream {
	u := &Upstream{line: n.Line, file: p.file, Timeout: DefaultTimeout, MaxCalls: DefaultMaxUpstreamCalls, Tools: map[string]govern.Policy{}, toolLine: map[string]int{}}
	var headers, env, tools *yaml.Node
	var hasName bool
	ok := p.mapping(n, field, upstreamFields, func(key string, k, v *yaml.Node) {
		f := field + "." + key
		if key != "headers" && key != "env" {
			p.literal(v, f, map[*yaml.Node]bool{})
		}
		switch key {
		case "name":
			hasName = true
			u.Name = p.scalar(v, f)
			if u.Name != "" && !upstreamName.MatchString(u.Name) {
				p.fail(v, f, "%q: use letters, digits, - and _ only (no dots: tools are named upstream.tool)", truncate(u.Name))
			}
		case "url":
			u.URL = p.scalar(v, f)
			if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				p.fail(v, f, "must be an http:// or https:// URL of a Streamable HTTP MCP endpoint")
			} else if pu.User != nil {
				p.fail(v, f, "must not hold credentials: put them in headers, from the environment")
			}
		case "headers":
			headers = v
		case "env":
			env = v
		case "command":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				p.fail(v, f, "must list the program and its arguments, such as [npx, -y, some-server]")
				return
			}
			for i, a := range v.Content {
				u.Command = append(u.Command, p.scalar(a, fmt.Sprintf("%s[%d]", f, i)))
			}
		case "timeout":
			d, err := time.ParseDuration(p.scalar(v, f))
			if err != nil || d <= 0 || d > time.Hour {
				p.fail(v, f, "must be a duration between 0 and 1h, such as 30s")
			}
			u.Timeout = d
		case "max_calls":
			m, err := strconv.Atoi(p.scalar(v, f))
			if err != nil || m < 1 || m > 10000 {
				p.fail(v, f, "must be a whole number between 1 and 10000")
			}
			u.MaxCalls = m
		case "tools":
			tools = v
		}
	})
	if !ok {
		return nil
	}
	if !hasName {
		p.fail(n, field+".name", "is missing")
	}
	switch {
	case u.URL == "" && len(u.Command) == 0:
		p.fail(n, field, "needs url (Streamable HTTP) or command (stdio)")
	case u.URL != "" && len(u.Command) > 0:
		p.fail(n, field, "has both url and command: give one")
	}
	if headers != nil {
		if len(u.Command) > 0 {
			p.fail(headers, field+".headers", "apply to url only: a stdio command takes its credentials from its environment")
		}
		u.headers = http.Header{}
		p.mapping(headers, field+".headers", nil, func(key string, k, v *yaml.Node) {
			f := field + ".headers." + key
			if !validHeaderName(key) {
				p.fail(k, f, "is not a header name")
				return
			}
			val, err := expand(p.scalar(v, f), p.getenv)
			if err != nil {
				p.fail(v, f, "%v", err)
				return
			}
			if !validFieldValue(val) {
				// Checked here, not by the transport at the first call, so
				// that a bad credential stops the start; never quoted.
				p.fail(v, f, "is not a header value once expanded: RFC 9110 allows visible characters, and spaces or tabs between them")
				return
			}
			u.headers.Set(key, val)
		})
	}
	if env != nil {
		if u.URL != "" {
			p.fail(env, field+".env", "applies to command only: a url takes its credentials in headers")
		}
		p.mapping(env, field+".env", nil, func(key string, k, v *yaml.Node) {
			f := field + ".env." + key
			if !varName.MatchString(key) {
				p.fail(k, f, "is not a variable name")
				return
			}
			val, err := expand(p.scalar(v, f), p.getenv)
			if err != nil {
				p.fail(v, f, "%v", err)
				return
			}
			u.env = append(u.env, key+"="+val)
		})
	}
	if tools == nil || tools.Kind == yaml.MappingNode && len(tools.Content) == 0 {
		p.fail(n, field+".tools", "names no tool: the gateway serves only the tools its policy names")
		return u
	}
	p.mapping(tools, field+".tools", nil, func(name string, k, v *yaml.Node) {
		u.toolLine[name] = k.Line
		if !toolName.MatchString(name) || len(u.Name)+1+len(name) > maxToolName {
			p.fail(k, field+".tools", "%q: use letters, digits, _, - and . only, at most %d characters with the upstream's name and its dot (MCP tool names)", truncate(name), maxToolName)
			return
		}
		if pol, ok := p.tool(u.Name, name, k, v, field+".tools."+name); ok {
			u.Tools[name] = pol
		}
	})
	return u
}

// tool decodes one tool's policy and checks it as govern will when the
// tool is added, so that a bad template stops the start with its line.
func (p *parser) tool(upstream, name string, key, n *yaml.Node, field string) (govern.Policy, bool) {
	var pol govern.Policy
	before := len(p.errs)
	p.strict(n, reflect.TypeFor[govern.Policy](), field)
	if len(p.errs) > before {
		return pol, false
	}
	if err := n.Decode(&pol); err != nil {
		at := &yaml.Node{Line: cmp.Or(yamlLine(err), key.Line)}
		p.fail(at, field, "%s", yamlMessage(err))
		return pol, false
	}
	if pol.Record != nil {
		p.fail(keyNode(n, "record", key), field+".record", "the gateway reads no records: an upstream's data is its own")
		return pol, false
	}
	pol.Upstream = upstream
	if err := checkPolicy(upstream+"."+name, pol); err != nil {
		// govern names the field ("policy action: ..."): point at its line.
		at := key
		if f, ok := strings.CutPrefix(err.Error(), "policy "); ok {
			f, _, _ = strings.Cut(f, ":")
			f, _, _ = strings.Cut(f, "[")
			f, _, _ = strings.Cut(f, ".")
			at = keyNode(n, f, key)
		}
		p.fail(at, field, "%v", err)
		return pol, false
	}
	return pol, true
}

// keyNode is the key node named name in mapping n, or def.
func keyNode(n *yaml.Node, name string, def *yaml.Node) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i]
		}
	}
	return def
}

// strict refuses keys the policy type does not have, at their line,
// recursing into the struct fields that are mappings.
func (p *parser) strict(n *yaml.Node, t reflect.Type, field string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && t == reflect.TypeFor[govern.StepUp]() {
				return // "always"
			}
			p.fail(n, field, "must be a mapping")
			return
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		p.mapping(n, field, names, func(key string, _, v *yaml.Node) {
			p.strict(v, fields[key], field+"."+key)
		})
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				p.strict(c, t.Elem(), fmt.Sprintf("%s[%d]", field, i))
			}
		}
	}
}

// checkPolicy adds the tool to a throwaway Governor, which compiles its
// templates and validates its fields, so that the file's problems surface
// at load, not when the upstream first answers.
func checkPolicy(name string, pol govern.Policy) (err error) {
	g, err := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "check"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	err = govern.AddRawTool(g, s, &mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object"}}, pol, nil)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), fmt.Sprintf("govern: tool %q: ", name)))
	}
	return nil
}

func (p *parser) scalar(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, field, "must be a single value")
		return ""
	}
	return n.Value
}

var varRef = regexp.MustCompile(`\$\{([^}]*)\}`)
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces each ${VAR} with the variable's value. A variable that
// is not set is an error naming it, never a silent empty credential; the
// error never holds a value.
func expand(s string, getenv func(string) (string, bool)) (string, error) {
	var errs []error
	out := varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := ref[2 : len(ref)-1]
		if !varName.MatchString(name) {
			errs = append(errs, fmt.Errorf("${%s} is not a variable name", truncate(name)))
			return ""
		}
		v, ok := "", false
		if getenv != nil {
			v, ok = getenv(name)
		}
		if !ok {
			errs = append(errs, fmt.Errorf("${%s} is not set in the environment", name))
		}
		return v
	})
	if rest := varRef.ReplaceAllString(s, ""); strings.Contains(rest, "${") {
		errs = append(errs, errors.New("holds an unclosed ${"))
	}
	if strings.ContainsAny(out, "\r\n\x00") {
		errs = append(errs, errors.New("holds a line break or NUL once expanded"))
	}
	return out, errors.Join(errs...)
}

// literal refuses a ${VAR} in n, a field taken as written: only headers
// and env are expanded, and an operator who wrote one elsewhere (a URL, a
// command's argument, an action) expects a value that would never be
// there. Aliases are followed once each, so a YAML alias bomb costs what
// its nodes do.
func (p *parser) literal(n *yaml.Node, field string, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	switch n.Kind {
	case yaml.ScalarNode:
		if m := varUse.FindString(n.Value); m != "" {
			p.fail(n, field, "%s is expanded only in headers and env; here it would be taken as written", m)
		}
	case yaml.AliasNode:
		p.literal(n.Alias, field, seen)
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.literal(c, fmt.Sprintf("%s[%d]", field, i), seen)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p.literal(k, field, seen)
			p.literal(n.Content[i+1], join(field, k.Value), seen)
		}
	}
}

// varUse is a ${VAR} as headers and env write one; a template's "${{.amount}}" is not.
var varUse = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}`)

// validFieldValue: an RFC 9110 §5.5 field-value, as the bytes of
// field-vchar (VCHAR, obs-text) with SP and HTAB only between them.
func validFieldValue(s string) bool {
	if s != strings.Trim(s, " \t") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && c != '\t' && (c < 0x21 || c == 0x7f) {
			return false
		}
	}
	return true
}

// validHeaderName: an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlMessage is a YAML error without its "yaml: line N:" prefix, which
// the FieldError says already.
func yamlMessage(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:\n  ")
	if m := regexp.MustCompile(`^line \d+: `).FindString(s); m != "" {
		s = s[len(m):]
	}
	return s
}

// yamlLine is the line a YAML syntax error names, or 0.
func yamlLine(err error) int {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// readAll reads at most maxPolicyBytes+1 bytes of r.
func readAll(r io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, maxPolicyBytes+1))
}
