package govern

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/jsonschema-go/jsonschema"
)

// Decode once. A call's arguments are parsed once, from the bytes the
// client sent, into generic JSON values with numbers as written
// (json.Number): that one value feeds the sensitive-term search, the
// templates, the grant key (its canonical encoding) and the typed handler
// input, which assign builds from it by reflection without parsing JSON
// again. The schema check needs numbers as float64 (jsonschema-go reads a
// json.Number as a string), so it gets a copy with numbers converted; a
// copy, not a parse. Numbers as written keep large integers exact, where
// float64 would silently change an id above 2^53.

// decodes counts JSON parses of call arguments, for the benchmark and the
// tests that hold "decode once".
var decodes atomic.Int64

// decodeArgs parses raw (an object, or empty / null for no arguments).
func decodeArgs(raw json.RawMessage) (map[string]any, error) {
	args := map[string]any{}
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return args, nil
	}
	decodes.Add(1)
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	if err := dec.Decode(&args); err != nil {
		return nil, fmt.Errorf("the arguments are not a JSON object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the arguments hold data after the JSON object")
	}
	if args == nil {
		args = map[string]any{}
	}
	return args, nil
}

// validate checks args against the tool's input schema; the text follows
// go-sdk's, so clients read the same refusal as from a plain tool.
func validate(rs *jsonschema.Resolved, args map[string]any) error {
	if err := rs.Validate(floats(args)); err != nil {
		return fmt.Errorf("validating \"arguments\": %w", err)
	}
	return nil
}

// floats copies v with every json.Number as a float64.
func floats(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := strconv.ParseFloat(string(v), 64)
		return f
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = floats(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = floats(e)
		}
		return out
	}
	return v
}

// deepCopy copies a decoded JSON value, so that a default applied to one
// call cannot be changed through another.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// canonical is the one canonical encoding of decoded arguments: object
// members sorted by key, no insignificant space, no HTML escaping,
// numbers as written. It names the call for grants and shared pushes.
func canonical(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Cannot happen for decoded JSON; a key no call can share.
		return []byte("!" + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	numberType      = reflect.TypeFor[json.Number]()
)

// assignable reports whether assign can build t from decoded JSON without
// encoding/json; otherwise the caller decodes the canonical bytes (and
// says so in the decode count). seen breaks recursive types.
func assignable(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true
	}
	seen[t] = true
	if t == numberType {
		return true
	}
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return false
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	case reflect.Interface:
		return t.NumMethod() == 0
	case reflect.Pointer, reflect.Slice:
		return assignable(t.Elem(), seen)
	case reflect.Map:
		return t.Key().Kind() == reflect.String && assignable(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" || !f.IsExported() && !f.Anonymous {
				continue
			}
			if f.Anonymous || strings.Contains(tag, ",string") || !assignable(f.Type, seen) {
				return false
			}
		}
		return true
	}
	return false
}

// fieldName is the JSON name of a struct field, or "" when skipped.
func fieldName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	if name, _, _ := strings.Cut(tag, ","); name != "" {
		return name
	}
	return f.Name
}

// assign sets dst from a decoded JSON value as encoding/json would decode
// the same text into it: names match exactly, else ignoring case; null
// leaves a value alone and clears a pointer, slice, map or interface;
// numbers must fit their type exactly. path names the argument in errors.
func assign(dst reflect.Value, v any, path string) error {
	if v == nil {
		switch dst.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
			dst.SetZero()
		}
		return nil
	}
	if dst.Type() == numberType {
		n, ok := v.(json.Number)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		dst.SetString(string(n))
		return nil
	}
	switch dst.Kind() {
	case reflect.Pointer:
		if dst.IsNil() {
			dst.Set(reflect.New(dst.Type().Elem()))
		}
		return assign(dst.Elem(), v, path)
	case reflect.Interface:
		dst.Set(reflect.ValueOf(floats(v)))
		return nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		dst.SetBool(b)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		dst.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || dst.OverflowInt(i) {
			return fmt.Errorf("%s: %s does not fit %s", path, n, dst.Type())
		}
		dst.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || dst.OverflowUint(u) {
			return fmt.Errorf("%s: %s does not fit %s", path, n, dst.Type())
		}
		dst.SetUint(u)
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		f, err := strconv.ParseFloat(string(n), dst.Type().Bits())
		if err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("%s: %s does not fit %s", path, n, dst.Type())
		}
		dst.SetFloat(f)
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		s := reflect.MakeSlice(dst.Type(), len(a), len(a))
		for i, e := range a {
			if err := assign(s.Index(i), e, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		dst.Set(s)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		if dst.IsNil() {
			dst.Set(reflect.MakeMapWithSize(dst.Type(), len(m)))
		}
		for k, e := range m {
			ev := reflect.New(dst.Type().Elem()).Elem()
			if err := assign(ev, e, path+"."+k); err != nil {
				return err
			}
			dst.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), ev)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch(path, v, dst.Type())
		}
		t := dst.Type()
		for k, e := range m {
			i := fieldIndex(t, k)
			if i < 0 {
				continue // encoding/json ignores unknown members; the schema judged them
			}
			name := k
			if path != "" {
				name = path + "." + k
			}
			if err := assign(dst.Field(i), e, name); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s: cannot be read into %s", path, dst.Type())
	}
	return nil
}

// fieldIndex finds the field named k, exactly or else ignoring case.
func fieldIndex(t reflect.Type, k string) int {
	fold := -1
	for i := range t.NumField() {
		name := fieldName(t.Field(i))
		if name == k {
			return i
		}
		if fold < 0 && name != "" && strings.EqualFold(name, k) {
			fold = i
		}
	}
	return fold
}

func mismatch(path string, v any, t reflect.Type) error {
	kind := "an object"
	switch v.(type) {
	case string:
		kind = "a string"
	case bool:
		kind = "a boolean"
	case json.Number:
		kind = "a number"
	case []any:
		kind = "an array"
	}
	if path == "" {
		path = "arguments"
	}
	return fmt.Errorf("%s: %s cannot be read as %s", path, kind, t)
}

// inputOf builds a typed input from decoded arguments: by assign when the
// type allows, else (a type with its own UnmarshalJSON, say) by decoding
// the canonical bytes, which counts as a second decode.
func inputOf[In any](args map[string]any, direct bool) (In, error) {
	var in In
	if direct {
		err := assign(reflect.ValueOf(&in).Elem(), args, "")
		return in, err
	}
	decodes.Add(1)
	err := json.Unmarshal(canonical(args), &in)
	return in, err
}
