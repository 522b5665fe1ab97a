package tools

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/google/jsonschema-go/jsonschema"
)

// Tools are registered with go-sdk's low-level Server.AddTool rather than
// its generic mcp.AddTool, which on every call decodes the arguments into
// a map, validates them, encodes the map and decodes it again into In; and
// encodes Out, decodes it into a map, validates it against the output
// schema and encodes it once more. Validating what a client sends is the
// front line and stays, against the same schema go-sdk would infer. Our
// own typed results need no check against a schema inferred from their
// own type, so Out is handed to go-sdk as it is and encoded once, on the
// wire. The schemas are those mcp.AddTool advertises, so tools/list does
// not change.

// schemaFor infers the JSON Schema of T as mcp.AddTool does
// (jsonschema.For with default options) and resolves it for validation.
// A schema that cannot be inferred is a programming error: it panics at
// start, as mcp.AddTool does.
func schemaFor[T any]() (*jsonschema.Schema, *jsonschema.Resolved) {
	s, err := jsonschema.For[T](&jsonschema.ForOptions{})
	if err != nil {
		panic(fmt.Sprintf("tools: schema of %v: %v", reflect.TypeFor[T](), err))
	}
	r, err := s.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		panic(fmt.Sprintf("tools: schema of %v: %v", reflect.TypeFor[T](), err))
	}
	// go-sdk applies schema defaults to the arguments before decoding
	// them; decodeArgs decodes the client's bytes as they are, which is
	// the same only while no property has a default.
	for name, p := range s.Properties {
		if p.Default != nil {
			panic(fmt.Sprintf("tools: schema of %v: property %q has a default, which decodeArgs does not apply", reflect.TypeFor[T](), name))
		}
	}
	return s, r
}

// decodeArgs validates a call's arguments against the tool's input schema
// and decodes them into In. It also returns them as generic JSON values
// (the map validated), for the sensitive-term search, so that nothing
// decodes them again. Both come from the same decoder on the same bytes,
// so the policy and the tool see the same values. An error is what the
// client must fix; its text follows go-sdk's.
func decodeArgs[In any](raw json.RawMessage, schema *jsonschema.Resolved) (In, map[string]any, error) {
	var in In
	args := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &args); err != nil {
			return in, nil, fmt.Errorf("validating \"arguments\": unmarshaling arguments: %w", err)
		}
	}
	if err := schema.Validate(args); err != nil {
		return in, nil, fmt.Errorf("validating \"arguments\": %w", err)
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &in); err != nil {
			return in, nil, err
		}
	}
	return in, args, nil
}
