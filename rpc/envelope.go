package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"unicode/utf8"
	"unsafe"

	"github.com/varlink/go/varlink"
)

// callHead is a call's envelope: its method and flags, and its parameters as the slice of
// the message that holds their value (nil when the call has none).
type callHead struct {
	Method                string
	More, Oneway, Upgrade bool
	Params                []byte
}

// errNotObject is a message that is JSON but not an object (nor null).
var errNotObject = errors.New("a call must be a JSON object")

// envelopeKey is a key of the envelope that parseCall reads.
type envelopeKey int

const (
	keyOther envelopeKey = iota
	keyMethod
	keyParameters
	keyMore
	keyOneway
	keyUpgrade
)

var envelopeKeys = [...]struct {
	name []byte
	key  envelopeKey
}{
	{[]byte("method"), keyMethod},
	{[]byte("parameters"), keyParameters},
	{[]byte("more"), keyMore},
	{[]byte("oneway"), keyOneway},
	{[]byte("upgrade"), keyUpgrade},
}

// keyOf matches an object key to the envelope's fields as encoding/json matches keys to a
// struct's fields: exactly or else ignoring case (Unicode simple folding), after decoding
// escapes. Only a key with escapes costs an allocation.
func keyOf(raw []byte, escaped bool) envelopeKey {
	if escaped {
		raw = []byte(text(raw, true))
	}
	for _, k := range envelopeKeys {
		if bytes.Equal(raw, k.name) {
			return k.key
		}
	}
	for _, k := range envelopeKeys {
		if bytes.EqualFold(raw, k.name) {
			return k.key
		}
	}
	return keyOther
}

// stringValue decodes a JSON string's raw contents as encoding/json does (escapes decoded,
// invalid UTF-8 replaced); plain ASCII or valid UTF-8 without escapes costs one copy.
func stringValue(raw []byte, escaped bool) string {
	if !escaped && utf8.Valid(raw) {
		return string(raw)
	}
	var s string
	json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s)
	return s
}

// parseCall reads a call's envelope in one pass over data. Its verdicts are those of
// json.Unmarshal into a struct of the envelope's fields: the whole message must be valid
// JSON (one value, white space around it, nesting as deep as encoding/json allows); keys
// match ignoring case and the last of repeated keys wins; null leaves a field as it was; a
// value of the wrong type for method, more, oneway or upgrade, or a message that is not an
// object (null aside, which is an empty call), is an error. Unknown keys are skipped. The
// parameters' value may be of any type; the caller checks it. A method written as a key of
// names (without escapes) is that key's value, so a served method's name costs nothing.
func parseCall(data []byte, names map[string]string) (callHead, error) {
	var h callHead
	w := walker{b: data}
	switch w.next() {
	case '{':
	case 'n':
		if err := w.literal("null"); err != nil {
			return h, err
		}
		return h, w.end()
	default:
		if err := w.skip(); err != nil {
			return h, err
		}
		if err := w.end(); err != nil {
			return h, err
		}
		return h, errNotObject
	}
	w.i++
	w.depth = 1
	var typeErr error
	if w.next() == '}' {
		w.i++
		return h, w.end()
	}
	for {
		raw, escaped, err := w.key()
		if err != nil {
			return h, err
		}
		key := keyOf(raw, escaped)
		c := w.next()
		switch {
		case key == keyOther:
			err = w.skip()
		case key == keyParameters:
			start := w.i
			err = w.skip()
			h.Params = data[start:w.i]
		case c == 'n':
			err = w.literal("null") // leaves the field as it was
		case key == keyMethod && c == '"':
			var s []byte
			if s, escaped, err = w.str(); err == nil {
				if name, ok := names[string(s)]; ok && !escaped {
					h.Method = name
				} else {
					h.Method = stringValue(s, escaped)
				}
			}
		case key != keyMethod && (c == 't' || c == 'f'):
			v := c == 't'
			if v {
				err = w.literal("true")
			} else {
				err = w.literal("false")
			}
			switch key {
			case keyMore:
				h.More = v
			case keyOneway:
				h.Oneway = v
			case keyUpgrade:
				h.Upgrade = v
			}
		default:
			if typeErr == nil {
				typeErr = fmt.Errorf("%s has the wrong type", envelopeKeys[key-keyMethod].name)
			}
			err = w.skip()
		}
		if err != nil {
			return h, err
		}
		switch w.next() {
		case ',':
			w.i++
		case '}':
			w.i++
			if err := w.end(); err != nil {
				return h, err
			}
			return h, typeErr
		default:
			return h, errSyntax
		}
	}
}

// end checks that only white space follows the value.
func (w *walker) end() error {
	w.next()
	if w.i != len(w.b) {
		return errSyntax
	}
	return nil
}

// dispatcher is a served interface's generated dispatch.
type dispatcher interface {
	VarlinkDispatch(ctx context.Context, c varlink.Call, methodname string) error
}

// serviceCall is the library's decoded call, the struct varlink.Call.In points to. Its
// type is unexported, its fields are not: the server makes its own of the same layout
// (checked against the library's by checkServiceCall in New), so that a checked call goes
// to the interface's generated dispatch without the library decoding the message again.
type serviceCall struct {
	Method     string
	Parameters *json.RawMessage
	More       bool
	Oneway     bool
	Upgrade    bool
}

// checkServiceCall checks that varlink.Call.In points to a struct of serviceCall's layout:
// the same fields, of the same types, at the same offsets.
func checkServiceCall() error {
	f, ok := reflect.TypeFor[varlink.Call]().FieldByName("In")
	if !ok || f.Type.Kind() != reflect.Pointer {
		return errors.New("rpc: varlink.Call has no In field of pointer type")
	}
	lib, own := f.Type.Elem(), reflect.TypeFor[serviceCall]()
	if lib.Kind() != reflect.Struct || lib.NumField() != own.NumField() || lib.Size() != own.Size() || lib.Align() != own.Align() {
		return fmt.Errorf("rpc: varlink.Call.In is a %s, not of serviceCall's layout", lib)
	}
	for i := range own.NumField() {
		l, o := lib.Field(i), own.Field(i)
		if l.Name != o.Name || l.Type != o.Type || l.Offset != o.Offset {
			return fmt.Errorf("rpc: varlink.Call.In's field %d is %s %s at %d, not %s %s at %d", i, l.Name, l.Type, l.Offset, o.Name, o.Type, o.Offset)
		}
	}
	return nil
}

// libraryCall returns the varlink.Call the library would make of a message data whose
// envelope is h and whose parameters are params (normalized: a JSON object), its replies
// written to w. It costs one allocation.
func libraryCall(w varlink.ReadWriterContext, data []byte, h *callHead, params []byte) varlink.Call {
	m := &struct {
		in      serviceCall
		params  json.RawMessage
		request []byte
	}{params: params, request: data}
	m.in = serviceCall{Method: h.Method, Parameters: &m.params, More: h.More, Oneway: h.Oneway, Upgrade: h.Upgrade}
	c := varlink.Call{Conn: w, Request: &m.request}
	// The types are the same but for their names (checkServiceCall).
	*(*unsafe.Pointer)(unsafe.Pointer(&c.In)) = unsafe.Pointer(&m.in)
	return c
}
