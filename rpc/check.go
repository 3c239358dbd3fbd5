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
//
// It scans the bytes in place and allocates nothing while the parameters are right: a
// call's parameters are checked before the caller is authorized, so any local user can send
// 8 MiB of them. Decoding them into Go values first held about 20 times the message size
// (an array of small numbers); walking them as encoding/json tokens held nothing but left
// about 16 times the size as garbage and took a core for a second per message.
func (si *servedInterface) check(t *idl.Type, params []byte) (string, error) {
	w := walker{si: si, b: params}
	fe, err := semantic(w.value(t, 0))
	switch {
	case err != nil:
		return "parameters", err
	case fe != nil:
		return fe.path(), fe.err
	}
	// Data after the value is not looked at: the envelope's decoder has refused it.
	return "", nil
}

const maxDepth = 64

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// errSyntax is malformed JSON, reported as the parameters as a whole.
var errSyntax = errors.New("malformed JSON")

// errTooDeep is JSON nested deeper than encoding/json accepts (and so the envelope).
var errTooDeep = errors.New("JSON nested too deeply")

// maxNesting is encoding/json's limit of nested arrays and objects.
const maxNesting = 10000

// fieldError is a value that does not fit its type. Its path is collected while the walk
// returns from the offending value, so a walk that finds nothing builds no path.
type fieldError struct {
	segs []segment // innermost first
	err  error
	raw  bool // the path as it is, even empty (nesting too deep), not "parameters"
}

type segment struct {
	key   string
	index int // for an array element, with key ""
	elem  bool
}

func (e *fieldError) Error() string { return e.path() + ": " + e.err.Error() }

func (e *fieldError) in(s segment) *fieldError {
	e.segs = append(e.segs, s)
	return e
}

// path names the value as the dotted path clients see: resources.cpus, templates[0].commit,
// parameters (the whole).
func (e *fieldError) path() string {
	p := ""
	for i := len(e.segs) - 1; i >= 0; i-- {
		s := e.segs[i]
		if s.elem {
			if p == "" {
				p = "parameters"
			}
			p += "[" + strconv.Itoa(s.index) + "]"
		} else {
			p = join(p, s.key)
		}
	}
	if p == "" && !e.raw {
		p = "parameters"
	}
	return p
}

func mismatch(format string, args ...any) *fieldError {
	return &fieldError{err: fmt.Errorf(format, args...)}
}

// walker checks JSON in b from position i against IDL types.
type walker struct {
	si *servedInterface
	b  []byte
	i  int
	// depth is how many arrays and objects enclose the values skip consumes (1 inside a
	// call's envelope), counted against maxNesting as encoding/json counts them.
	depth int
}

// next skips white space and returns the next byte, or 0 at the end.
func (w *walker) next() byte {
	for w.i < len(w.b) {
		switch c := w.b[w.i]; c {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return c
		}
	}
	return 0
}

func (w *walker) literal(lit string) error {
	if len(w.b)-w.i < len(lit) || string(w.b[w.i:w.i+len(lit)]) != lit {
		return errSyntax
	}
	w.i += len(lit)
	return nil
}

// str consumes a string at '"' and returns its raw contents and whether they hold escapes.
func (w *walker) str() ([]byte, bool, error) {
	start := w.i + 1
	escaped := false
	for j := start; j < len(w.b); j++ {
		switch c := w.b[j]; {
		case c == '"':
			w.i = j + 1
			return w.b[start:j], escaped, nil
		case c == '\\':
			escaped = true
			j++
			if j >= len(w.b) {
				return nil, false, errSyntax
			}
			switch w.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(w.b) {
					return nil, false, errSyntax
				}
				for _, h := range w.b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return nil, false, errSyntax
					}
				}
				j += 4
			default:
				return nil, false, errSyntax
			}
		case c < 0x20:
			return nil, false, errSyntax
		}
	}
	return nil, false, errSyntax
}

// text returns a string's value; only one with escapes costs an allocation.
func text(raw []byte, escaped bool) string {
	if !escaped {
		return string(raw)
	}
	var s string
	json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s)
	return s
}

// key consumes an object key and its colon.
func (w *walker) key() ([]byte, bool, error) {
	if w.next() != '"' {
		return nil, false, errSyntax
	}
	raw, escaped, err := w.str()
	if err != nil {
		return nil, false, err
	}
	if w.next() != ':' {
		return nil, false, errSyntax
	}
	w.i++
	return raw, escaped, nil
}

func digit(c byte) bool { return '0' <= c && c <= '9' }

// number consumes a number and returns it.
func (w *walker) number() ([]byte, error) {
	b, j := w.b, w.i
	digits := func() bool {
		k := j
		for j < len(b) && digit(b[j]) {
			j++
		}
		return j > k
	}
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case !digits():
		return nil, errSyntax
	}
	if j < len(b) && b[j] == '.' {
		j++
		if !digits() {
			return nil, errSyntax
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if !digits() {
			return nil, errSyntax
		}
	}
	num := b[w.i:j]
	w.i = j
	return num, nil
}

// isInt64 reports whether a JSON number is an integer that fits int64.
func isInt64(num []byte) bool {
	limit := "9223372036854775807"
	if num[0] == '-' {
		num, limit = num[1:], "9223372036854775808"
	}
	for _, c := range num {
		if !digit(c) {
			return false
		}
	}
	return len(num) < len(limit) || len(num) == len(limit) && string(num) <= limit
}

// skip consumes one value of any type and nesting depth, checking its syntax. It keeps one
// byte per open container, never a frame: a message of nested brackets costs no stack.
func (w *walker) skip() error {
	var open []byte
	for {
		// A value.
		switch c := w.next(); {
		case c == '{':
			w.i++
			// encoding/json counts every container, an empty one too.
			if w.depth+len(open)+1 > maxNesting {
				return errTooDeep
			}
			if w.next() == '}' {
				w.i++
				break
			}
			open = append(open, '{')
			if _, _, err := w.key(); err != nil {
				return err
			}
			continue
		case c == '[':
			w.i++
			if w.depth+len(open)+1 > maxNesting {
				return errTooDeep
			}
			if w.next() == ']' {
				w.i++
				break
			}
			open = append(open, '[')
			continue
		case c == '"':
			if _, _, err := w.str(); err != nil {
				return err
			}
		case c == 't':
			if err := w.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := w.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := w.literal("null"); err != nil {
				return err
			}
		case c == '-' || digit(c):
			if _, err := w.number(); err != nil {
				return err
			}
		default:
			return errSyntax
		}
		// After a value: close what ends here, then go on after a comma.
		for {
			if len(open) == 0 {
				return nil
			}
			top := open[len(open)-1]
			c := w.next()
			if c == ',' {
				w.i++
				if top == '{' {
					if _, _, err := w.key(); err != nil {
						return err
					}
				}
				break
			}
			if top == '{' && c == '}' || top == '[' && c == ']' {
				w.i++
				open = open[:len(open)-1]
				continue
			}
			return errSyntax
		}
	}
}

// fail consumes the value the walker is at and reports err for it.
func (w *walker) fail(err *fieldError) error {
	if serr := w.skip(); serr != nil {
		return serr
	}
	return err
}

// value checks the value at the walker against t and consumes it, also when it does not fit
// (a struct goes on to find an earlier field's error). A syntax error ends the walk.
func (w *walker) value(t *idl.Type, depth int) error {
	if depth > maxDepth {
		return w.fail(&fieldError{err: errors.New("nested too deeply"), raw: true})
	}
	switch t.Kind {
	case idl.TypeMaybe:
		if w.next() == 'n' {
			return w.literal("null")
		}
		return w.value(t.ElementType, depth+1)
	case idl.TypeAlias:
		at := w.si.aliases[t.Alias]
		if at == nil {
			return w.fail(mismatch("unknown type %s", t.Alias))
		}
		return w.value(at, depth+1)
	}
	c := w.next()
	if c == 'n' {
		if err := w.literal("null"); err != nil {
			return err
		}
		return mismatch("null where a value is required")
	}
	switch t.Kind {
	case idl.TypeBool:
		switch c {
		case 't':
			return w.literal("true")
		case 'f':
			return w.literal("false")
		}
		return w.fail(mismatch("expected a boolean"))
	case idl.TypeInt:
		if c != '-' && !digit(c) {
			return w.fail(mismatch("expected an integer"))
		}
		num, err := w.number()
		if err != nil {
			return err
		}
		if !isInt64(num) {
			return mismatch("expected a 64-bit integer")
		}
	case idl.TypeFloat:
		if c != '-' && !digit(c) {
			return w.fail(mismatch("expected a number"))
		}
		num, err := w.number()
		if err != nil {
			return err
		}
		if f, err := strconv.ParseFloat(string(num), 64); err != nil || math.IsInf(f, 0) {
			return mismatch("expected a finite number")
		}
	case idl.TypeString:
		if c != '"' {
			return w.fail(mismatch("expected a string"))
		}
		_, _, err := w.str()
		return err
	case idl.TypeEnum:
		if c != '"' {
			return w.fail(mismatch("expected a string"))
		}
		raw, escaped, err := w.str()
		if err != nil {
			return err
		}
		for _, f := range t.Fields {
			if !escaped && string(raw) == f.Name || escaped && text(raw, true) == f.Name {
				return nil
			}
		}
		return mismatch("%q is not one of the allowed values", text(raw, escaped))
	case idl.TypeObject:
		if c != '{' {
			return w.fail(mismatch("expected an object"))
		}
		return w.skip()
	case idl.TypeArray:
		if c != '[' {
			return w.fail(mismatch("expected an array"))
		}
		return w.array(t, depth)
	case idl.TypeMap:
		if c != '{' {
			return w.fail(mismatch("expected an object"))
		}
		return w.mapping(t, depth)
	case idl.TypeStruct:
		if c != '{' {
			return w.fail(mismatch("expected an object"))
		}
		return w.structure(t, depth)
	default:
		return w.fail(mismatch("unsupported type kind %d", t.Kind))
	}
	return nil
}

// semantic separates a value's mismatch, after which the walk goes on, from a syntax error.
func semantic(err error) (*fieldError, error) {
	if fe, ok := err.(*fieldError); ok {
		return fe, nil
	}
	return nil, err
}

// array checks the elements at '['; the first bad one is reported.
func (w *walker) array(t *idl.Type, depth int) error {
	w.i++
	if w.next() == ']' {
		w.i++
		return nil
	}
	var bad *fieldError
	for i := 0; ; i++ {
		var err error
		if bad != nil {
			err = w.skip()
		} else if fe, serr := semantic(w.value(t.ElementType, depth+1)); serr != nil {
			err = serr
		} else if fe != nil {
			bad = fe.in(segment{index: i, elem: true})
		}
		if err != nil {
			return err
		}
		switch w.next() {
		case ',':
			w.i++
		case ']':
			w.i++
			if bad != nil {
				return bad
			}
			return nil
		default:
			return errSyntax
		}
	}
}

// mapping checks the values at '{'; the first bad one is reported.
func (w *walker) mapping(t *idl.Type, depth int) error {
	w.i++
	if w.next() == '}' {
		w.i++
		return nil
	}
	var bad *fieldError
	for {
		raw, escaped, err := w.key()
		if err != nil {
			return err
		}
		if bad != nil {
			err = w.skip()
		} else if fe, serr := semantic(w.value(t.ElementType, depth+1)); serr != nil {
			err = serr
		} else if fe != nil {
			bad = fe.in(segment{key: text(raw, escaped)})
		}
		if err != nil {
			return err
		}
		switch w.next() {
		case ',':
			w.i++
		case '}':
			w.i++
			if bad != nil {
				return bad
			}
			return nil
		default:
			return errSyntax
		}
	}
}

// structure checks the fields at '{'. Errors are reported in the order of the IDL's fields
// (a bad value or a missing field), then the unknown field that sorts first, whatever the
// order in the message.
func (w *walker) structure(t *idl.Type, depth int) error {
	type state struct {
		present bool
		bad     *fieldError
	}
	var buf [16]state
	var fields []state
	if len(t.Fields) <= len(buf) {
		fields = buf[:len(t.Fields)]
	} else {
		fields = make([]state, len(t.Fields))
	}
	firstBad := len(t.Fields)
	var unknown []byte
	foundUnknown := false

	w.i++
	if w.next() == '}' {
		w.i++
	} else {
		for {
			raw, escaped, err := w.key()
			if err != nil {
				return err
			}
			if escaped {
				raw = []byte(text(raw, true))
			}
			i := 0
			for i < len(t.Fields) && string(raw) != t.Fields[i].Name {
				i++
			}
			switch {
			case i == len(t.Fields):
				if !foundUnknown || bytes.Compare(raw, unknown) < 0 {
					unknown, foundUnknown = raw, true
				}
				err = w.skip()
			case i > firstBad:
				fields[i].present = true
				err = w.skip()
			default:
				fields[i].present = true
				var fe *fieldError
				if fe, err = semantic(w.value(t.Fields[i].Type, depth+1)); fe != nil && fields[i].bad == nil {
					fields[i].bad, firstBad = fe.in(segment{key: t.Fields[i].Name}), i
				}
			}
			if err != nil {
				return err
			}
			c := w.next()
			w.i++
			if c == '}' {
				break
			}
			if c != ',' {
				return errSyntax
			}
		}
	}
	for i, f := range t.Fields {
		switch {
		case fields[i].bad != nil:
			return fields[i].bad
		case !fields[i].present && f.Type.Kind != idl.TypeMaybe:
			return &fieldError{segs: []segment{{key: f.Name}}, err: errors.New("missing")}
		}
	}
	if foundUnknown {
		if len(unknown) == 0 {
			return &fieldError{segs: []segment{{key: `""`}}, err: errors.New("unknown field with an empty name")}
		}
		return &fieldError{segs: []segment{{key: string(unknown)}}, err: errors.New("unknown field")}
	}
	return nil
}
