package govern

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/crm-mcp/crm-mcp/stepup"
)

// A raw tool's schema is another server's, and the push must show every
// argument that server will receive, with the value it will use. So a raw
// tool refuses, before anything is decided:
//
//   - a schema with a default the Governor cannot apply (nestedDefault):
//     only top-level properties' defaults are applied (governed.defaults),
//     and one the upstream applies inside an object, through $defs or in
//     one branch of anyOf would run unseen;
//   - an argument its schema's properties do not declare (undeclared),
//     unless the schema explicitly takes other properties
//     (additionalProperties true or a schema) and the policy shows every
//     argument as its own row. Most schemas say nothing of other
//     properties, which JSON Schema then allows, but the servers behind
//     them (TypeScript SDK, zod) drop what they do not declare: shown, such
//     an argument would tell the approver of something that will not
//     happen, and a policy's rows and action name declared arguments only,
//     so where the upstream does use it, it would run unseen.

// nestedDefault is where in s a default sits other than on a top-level
// property ("properties.opts.properties.force", "$defs.x"), or "".
func nestedDefault(s *jsonschema.Schema) string {
	if s.Default != nil {
		return "the schema itself"
	}
	for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
		if p := s.Properties[name]; p != nil {
			if at := anyDefault(p, "properties."+name, false); at != "" {
				return at
			}
		}
	}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Name == "Properties" {
			continue
		}
		if at := childDefault(v.Field(i), jsonName(f)); at != "" {
			return at
		}
	}
	return ""
}

// anyDefault is where under s (at path) a default sits, s's own counted
// when self.
func anyDefault(s *jsonschema.Schema, path string, self bool) string {
	if self && s.Default != nil {
		return path
	}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		if at := childDefault(v.Field(i), path+"."+jsonName(v.Type().Field(i))); at != "" {
			return at
		}
	}
	return ""
}

// childDefault looks into a field of a Schema that holds schemas.
func childDefault(f reflect.Value, path string) string {
	switch c := f.Interface().(type) {
	case *jsonschema.Schema:
		if c != nil {
			return anyDefault(c, path, true)
		}
	case []*jsonschema.Schema:
		for i, e := range c {
			if e != nil {
				if at := anyDefault(e, fmt.Sprintf("%s[%d]", path, i), true); at != "" {
					return at
				}
			}
		}
	case map[string]*jsonschema.Schema:
		for _, k := range slices.Sorted(maps.Keys(c)) {
			if e := c[k]; e != nil {
				if at := anyDefault(e, path+"."+k, true); at != "" {
					return at
				}
			}
		}
	}
	return ""
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" || name == "-" {
		// Items and the like, which the schema encodes itself.
		return strings.ToLower(f.Name[:1]) + f.Name[1:]
	}
	return name
}

// takesOthers reports whether s says it takes properties it does not
// declare: additionalProperties true or a schema, not false.
func takesOthers(s *jsonschema.Schema) bool {
	a := s.AdditionalProperties
	return a != nil && !(a.Not != nil && reflect.ValueOf(*a.Not).IsZero())
}

// argName is what an undeclared argument's name may be when it is shown
// as a row: the client chose it, so it is held to MCP's name characters,
// which cannot look like another row's name in another script, lay out
// the screen or hide anything.
var argName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// undeclared refuses an argument of a raw tool its schema does not
// declare, or, where the tool takes others and shows each as a row, one
// whose name cannot be shown as a row.
func (gt *governed) undeclared(args map[string]any) error {
	for _, k := range slices.Sorted(maps.Keys(args)) {
		if _, ok := gt.declared[k]; ok {
			continue
		}
		name := stepup.Quote(cutName(k))
		if !gt.others {
			return &ToolError{fmt.Sprintf("%s does not take the argument %s (its input schema does not declare it), so it cannot be shown for approval; call again without it", gt.name, name)}
		}
		if !argName.MatchString(k) || slices.Contains(stepup.Reserved, stepup.RowName(k)) {
			return &ToolError{fmt.Sprintf("The argument name %s cannot be shown on the phone as a row of its own: use letters, digits, _, - and . only, at most 64, and not action, reason, client or server", name)}
		}
	}
	return nil
}
