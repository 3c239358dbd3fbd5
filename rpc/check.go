package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/varlink/go/varlink/idl"
)

// check decodes params strictly against t, the input type of a method. It returns the
// dotted path of the first offending field: unknown fields, wrong JSON types, non-integers
// for int, values outside an enum, and missing non-nullable fields are all refused.
func (si *servedInterface) check(t *idl.Type, params []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "parameters", err
	}
	return si.checkValue(t, v, "", 0)
}

const maxDepth = 64

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func (si *servedInterface) checkValue(t *idl.Type, v any, path string, depth int) (string, error) {
	if depth > maxDepth {
		return path, errors.New("nested too deeply")
	}
	name := path
	if name == "" {
		name = "parameters"
	}
	switch t.Kind {
	case idl.TypeMaybe:
		if v == nil {
			return "", nil
		}
		return si.checkValue(t.ElementType, v, path, depth+1)
	case idl.TypeAlias:
		at := si.aliases[t.Alias]
		if at == nil {
			return name, fmt.Errorf("unknown type %s", t.Alias)
		}
		return si.checkValue(at, v, path, depth+1)
	}
	if v == nil {
		return name, errors.New("null where a value is required")
	}
	switch t.Kind {
	case idl.TypeBool:
		if _, ok := v.(bool); !ok {
			return name, errors.New("expected a boolean")
		}
	case idl.TypeInt:
		n, ok := v.(json.Number)
		if !ok {
			return name, errors.New("expected an integer")
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			return name, errors.New("expected a 64-bit integer")
		}
	case idl.TypeFloat:
		n, ok := v.(json.Number)
		if !ok {
			return name, errors.New("expected a number")
		}
		f, err := n.Float64()
		if err != nil || math.IsInf(f, 0) {
			return name, errors.New("expected a finite number")
		}
	case idl.TypeString:
		if _, ok := v.(string); !ok {
			return name, errors.New("expected a string")
		}
	case idl.TypeEnum:
		s, ok := v.(string)
		if !ok {
			return name, errors.New("expected a string")
		}
		for _, f := range t.Fields {
			if f.Name == s {
				return "", nil
			}
		}
		return name, fmt.Errorf("%q is not one of the allowed values", s)
	case idl.TypeObject:
		if _, ok := v.(map[string]any); !ok {
			return name, errors.New("expected an object")
		}
	case idl.TypeArray:
		a, ok := v.([]any)
		if !ok {
			return name, errors.New("expected an array")
		}
		for i, e := range a {
			if p, err := si.checkValue(t.ElementType, e, fmt.Sprintf("%s[%d]", name, i), depth+1); err != nil {
				return p, err
			}
		}
	case idl.TypeMap:
		m, ok := v.(map[string]any)
		if !ok {
			return name, errors.New("expected an object")
		}
		for k, e := range m {
			if p, err := si.checkValue(t.ElementType, e, join(path, k), depth+1); err != nil {
				return p, err
			}
		}
	case idl.TypeStruct:
		m, ok := v.(map[string]any)
		if !ok {
			return name, errors.New("expected an object")
		}
		known := make(map[string]bool, len(t.Fields))
		for _, f := range t.Fields {
			known[f.Name] = true
			fv, present := m[f.Name]
			if !present {
				if f.Type.Kind == idl.TypeMaybe {
					continue
				}
				return join(path, f.Name), errors.New("missing")
			}
			if p, err := si.checkValue(f.Type, fv, join(path, f.Name), depth+1); err != nil {
				return p, err
			}
		}
		// Report unknown fields in a stable order.
		var unknown string
		found := false
		for k := range m {
			if !known[k] && (!found || k < unknown) {
				unknown, found = k, true
			}
		}
		if found {
			if unknown == "" {
				return join(path, `""`), errors.New("unknown field with an empty name")
			}
			return join(path, unknown), errors.New("unknown field")
		}
	default:
		return name, fmt.Errorf("unsupported type kind %d", t.Kind)
	}
	return "", nil
}
