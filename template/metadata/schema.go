package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Schema is a compiled JSON Schema of the subset this package implements:
// type, properties, required, additionalProperties (false only), enum,
// pattern, minLength, maxLength, minimum, maximum, exclusiveMinimum, items,
// uniqueItems, and the annotations $schema, $id, title and description.
// Loading a schema that uses any other keyword fails, so what the schema file
// says is exactly what is enforced.
type Schema struct {
	Types            []string // "object", "array", "string", "number", "integer", "boolean", "null"
	Properties       map[string]*Schema
	Required         []string
	ClosedObject     bool // additionalProperties: false
	Enum             []any
	Pattern          *regexp.Regexp
	MinLength        *int
	MaxLength        *int
	Minimum          *big.Float
	Maximum          *big.Float
	ExclusiveMinimum *big.Float
	Items            *Schema
	UniqueItems      bool
	Description      string
}

// CompileSchema compiles a JSON Schema document of the supported subset.
func CompileSchema(data []byte) (*Schema, error) {
	v, err := decodeStrict(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	return compile(v, "#")
}

func compile(v any, at string) (*Schema, error) {
	obj, ok := v.(*object)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a schema must be an object", ErrSchema, at)
	}
	s := &Schema{}
	for _, k := range obj.keys {
		val := obj.vals[k]
		where := at + "/" + k
		bad := func(want string) error {
			return fmt.Errorf("%w: %s: must be %s", ErrSchema, where, want)
		}
		switch k {
		case "$schema", "$id", "title":
		case "description":
			d, ok := val.(string)
			if !ok {
				return nil, bad("a string")
			}
			s.Description = d
		case "type":
			switch t := val.(type) {
			case string:
				s.Types = []string{t}
			case []any:
				for _, e := range t {
					es, ok := e.(string)
					if !ok {
						return nil, bad("a string or a list of strings")
					}
					s.Types = append(s.Types, es)
				}
			default:
				return nil, bad("a string or a list of strings")
			}
			for _, t := range s.Types {
				if !slices.Contains([]string{"object", "array", "string", "number", "integer", "boolean", "null"}, t) {
					return nil, fmt.Errorf("%w: %s: unknown type %q", ErrSchema, where, t)
				}
			}
		case "properties":
			props, ok := val.(*object)
			if !ok {
				return nil, bad("an object")
			}
			s.Properties = map[string]*Schema{}
			for _, pk := range props.keys {
				ps, err := compile(props.vals[pk], where+"/"+pk)
				if err != nil {
					return nil, err
				}
				s.Properties[pk] = ps
			}
		case "required":
			list, ok := val.([]any)
			if !ok {
				return nil, bad("a list of strings")
			}
			for _, e := range list {
				es, ok := e.(string)
				if !ok {
					return nil, bad("a list of strings")
				}
				s.Required = append(s.Required, es)
			}
		case "additionalProperties":
			b, ok := val.(bool)
			if !ok || b {
				return nil, bad("false (schemas for additional properties are not supported)")
			}
			s.ClosedObject = true
		case "enum":
			list, ok := val.([]any)
			if !ok || len(list) == 0 {
				return nil, bad("a non-empty list")
			}
			s.Enum = list
		case "pattern":
			p, ok := val.(string)
			if !ok {
				return nil, bad("a string")
			}
			re, err := regexp.Compile(p)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrSchema, where, err)
			}
			s.Pattern = re
		case "minLength", "maxLength":
			n, ok := val.(json.Number)
			i, err := strconv.Atoi(string(n))
			if !ok || err != nil || i < 0 {
				return nil, bad("a non-negative integer")
			}
			if k == "minLength" {
				s.MinLength = &i
			} else {
				s.MaxLength = &i
			}
		case "minimum", "maximum", "exclusiveMinimum":
			n, ok := val.(json.Number)
			f, _, err := big.ParseFloat(string(n), 10, 128, big.ToNearestEven)
			if !ok || err != nil {
				return nil, bad("a number")
			}
			switch k {
			case "minimum":
				s.Minimum = f
			case "maximum":
				s.Maximum = f
			default:
				s.ExclusiveMinimum = f
			}
		case "items":
			is, err := compile(val, where)
			if err != nil {
				return nil, err
			}
			s.Items = is
		case "uniqueItems":
			b, ok := val.(bool)
			if !ok {
				return nil, bad("a boolean")
			}
			s.UniqueItems = b
		default:
			return nil, fmt.Errorf("%w: %s: keyword %q is not supported by this checker", ErrSchema, at, k)
		}
	}
	for _, r := range s.Required {
		if _, ok := s.Properties[r]; !ok && s.ClosedObject {
			return nil, fmt.Errorf("%w: %s: required property %q is not among the properties", ErrSchema, at, r)
		}
	}
	return s, nil
}

// Check validates a document against the schema and returns every violation
// in document order. The document is parsed strictly: duplicate keys,
// invalid UTF-8 and trailing data are violations too.
func (s *Schema) Check(data []byte) []FieldError {
	v, err := decodeStrict(data)
	if err != nil {
		return []FieldError{{Path: "$", Rule: "syntax", Message: err.Error()}}
	}
	var errs []FieldError
	s.check(v, "$", &errs)
	return errs
}

func (s *Schema) check(v any, path string, errs *[]FieldError) {
	add := func(rule, format string, args ...any) {
		*errs = append(*errs, FieldError{Path: path, Rule: rule, Message: fmt.Sprintf(format, args...)})
	}
	if len(s.Types) > 0 && !slices.ContainsFunc(s.Types, func(t string) bool { return hasType(v, t) }) {
		want := s.Types[0]
		for _, t := range s.Types[1:] {
			want += " or " + t
		}
		add("type", "expected %s, got %s", article(want), describe(v))
		return
	}
	if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return equal(e, v) }) {
		add("enum", "%s is not one of %s", describe(v), listEnum(s.Enum))
	}
	switch x := v.(type) {
	case *object:
		for _, r := range s.Required {
			if _, ok := x.vals[r]; !ok {
				*errs = append(*errs, FieldError{Path: path + "." + r, Rule: "required", Message: "required field is missing"})
			}
		}
		for _, k := range x.keys {
			ps, ok := s.Properties[k]
			kp := path + "." + k
			if !ok {
				if s.ClosedObject {
					*errs = append(*errs, FieldError{Path: kp, Rule: "additionalProperties",
						Message: fmt.Sprintf("unknown field (allowed here: %s)", listKeys(s.Properties))})
				}
				continue
			}
			ps.check(x.vals[k], kp, errs)
		}
	case []any:
		for i, e := range x {
			ep := fmt.Sprintf("%s[%d]", path, i)
			if s.UniqueItems {
				for j := range i {
					if equal(x[j], e) {
						*errs = append(*errs, FieldError{Path: ep, Rule: "uniqueItems",
							Message: fmt.Sprintf("duplicate of %s[%d]", path, j)})
						break
					}
				}
			}
			if s.Items != nil {
				s.Items.check(e, ep, errs)
			}
		}
	case string:
		n := utf8.RuneCountInString(x)
		if s.MinLength != nil && n < *s.MinLength {
			add("minLength", "must be at least %d characters, has %d", *s.MinLength, n)
		}
		if s.MaxLength != nil && n > *s.MaxLength {
			add("maxLength", "must be at most %d characters, has %d", *s.MaxLength, n)
		}
		if s.Pattern != nil && !s.Pattern.MatchString(x) {
			add("pattern", "%q does not match %s", x, s.Pattern)
		}
	case json.Number:
		f, _, err := big.ParseFloat(string(x), 10, 128, big.ToNearestEven)
		if err != nil {
			add("type", "number %s out of range", x)
			return
		}
		if s.Minimum != nil && f.Cmp(s.Minimum) < 0 {
			add("minimum", "%s is less than the minimum %s", x, s.Minimum.Text('g', -1))
		}
		if s.ExclusiveMinimum != nil && f.Cmp(s.ExclusiveMinimum) <= 0 {
			add("exclusiveMinimum", "%s must be greater than %s", x, s.ExclusiveMinimum.Text('g', -1))
		}
		if s.Maximum != nil && f.Cmp(s.Maximum) > 0 {
			add("maximum", "%s is greater than the maximum %s", x, s.Maximum.Text('g', -1))
		}
	}
}

func hasType(v any, t string) bool {
	switch x := v.(type) {
	case *object:
		return t == "object"
	case []any:
		return t == "array"
	case string:
		return t == "string"
	case bool:
		return t == "boolean"
	case nil:
		return t == "null"
	case json.Number:
		if t == "number" {
			return true
		}
		if t == "integer" {
			f, _, err := big.ParseFloat(string(x), 10, 128, big.ToNearestEven)
			return err == nil && f.IsInt()
		}
	}
	return false
}

func describe(v any) string {
	switch x := v.(type) {
	case *object:
		return "an object"
	case []any:
		return "an array"
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %t", x)
	case nil:
		return "null"
	case json.Number:
		return "the number " + string(x)
	}
	return fmt.Sprintf("%T", v)
}

func article(t string) string {
	switch t[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + t
	}
	return "a " + t
}

func listEnum(enum []any) string {
	var b bytes.Buffer
	for i, e := range enum {
		if i > 0 {
			b.WriteString(", ")
		}
		j, _ := json.Marshal(e)
		b.Write(j)
	}
	return b.String()
}

func listKeys(m map[string]*Schema) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return "none"
	}
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
	}
	return b.String()
}

func equal(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		fx, _, e1 := big.ParseFloat(string(x), 10, 128, big.ToNearestEven)
		fy, _, e2 := big.ParseFloat(string(y), 10, 128, big.ToNearestEven)
		return e1 == nil && e2 == nil && fx.Cmp(fy) == 0
	case *object:
		y, ok := b.(*object)
		if !ok || len(x.keys) != len(y.keys) {
			return false
		}
		for k, v := range x.vals {
			if w, ok := y.vals[k]; !ok || !equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, equal)
	default:
		return a == b
	}
}

// object is a decoded JSON object that remembers its key order.
type object struct {
	keys []string
	vals map[string]any
}

// decodeStrict decodes one JSON value, refusing invalid UTF-8, duplicate
// keys and trailing data. Numbers stay json.Number.
func decodeStrict(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, nil, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("not valid JSON: data after the top-level value at offset %d", dec.InputOffset())
	}
	return v, nil
}

// MaxDepth is the deepest nesting of objects and arrays a document may have. metadata.json needs 4 levels; the
// limit keeps what decoding a hostile document costs in proportion to its size.
const MaxDepth = 32

// docPath is the path of a value being decoded, built as a string only for an error.
type docPath struct {
	parent *docPath
	key    string
	index  int // an array element's index; -1 for an object member
}

func (p *docPath) String() string {
	if p == nil {
		return "$"
	}
	if p.index < 0 {
		return p.parent.String() + "." + p.key
	}
	return fmt.Sprintf("%s[%d]", p.parent.String(), p.index)
}

func decodeValue(dec *json.Decoder, path *docPath, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("not valid JSON: unexpected end of input")
		}
		return nil, fmt.Errorf("not valid JSON: %w (near offset %d)", err, dec.InputOffset())
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= MaxDepth && (t == '{' || t == '[') {
			return nil, fmt.Errorf("%s: nested deeper than %d levels", path, MaxDepth)
		}
		switch t {
		case '{':
			obj := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("not valid JSON: %w (near offset %d)", err, dec.InputOffset())
				}
				k := kt.(string)
				if _, dup := obj.vals[k]; dup {
					return nil, fmt.Errorf("%s.%s: duplicate key", path, k)
				}
				v, err := decodeValue(dec, &docPath{parent: path, key: k, index: -1}, depth+1)
				if err != nil {
					return nil, err
				}
				obj.keys = append(obj.keys, k)
				obj.vals[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("not valid JSON: %w", err)
			}
			return obj, nil
		case '[':
			list := []any{}
			for i := 0; dec.More(); i++ {
				v, err := decodeValue(dec, &docPath{parent: path, index: i}, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("not valid JSON: %w", err)
			}
			return list, nil
		}
		return nil, fmt.Errorf("not valid JSON: unexpected %v", t)
	default:
		return t, nil
	}
}
