package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/varlink/go/varlink/idl"

	"github.com/bitbuilder/bitbuilder/api"
)

// The replies that varlinkctl prints are checked against the IDL of api/: every field the IDL
// declares non-nullable is there with its type, enums hold one of their values, and no field
// is there that the IDL does not declare. daemon.call does this for every call of the tests,
// so the tests themselves can decode replies leniently, as Varlink clients should.

var (
	schemaOnce sync.Once
	schema     map[string]*idl.IDL
	schemaErr  error
)

// interfaceIDL returns the parsed IDL of a served interface, or nil for one not in api/.
func interfaceIDL(t testing.TB, name string) *idl.IDL {
	t.Helper()
	schemaOnce.Do(func() {
		schema = map[string]*idl.IDL{}
		for _, n := range api.Names() {
			desc, err := api.Description(n)
			if err == nil {
				schema[n], err = idl.New(desc)
			}
			if err != nil {
				schemaErr = fmt.Errorf("IDL of %s: %w", n, err)
				return
			}
		}
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schema[name]
}

// checkReply checks what a successful `varlinkctl call` printed against the method's output
// type, and what a failed one printed against its error's type. Calls whose output is not the
// reply (-q, --graceful) and methods outside api/ are not checked.
func checkReply(t testing.TB, method string, flags []string, r result) {
	t.Helper()
	dot := strings.LastIndexByte(method, '.')
	if dot < 0 {
		return
	}
	iface := interfaceIDL(t, method[:dot])
	if iface == nil || slices.ContainsFunc(flags, func(f string) bool {
		return f == "-q" || f == "--quiet" || f == "--oneway" || strings.HasPrefix(f, "--graceful")
	}) {
		return
	}
	var typ *idl.Type
	what := method
	if r.exit == 0 {
		i := slices.IndexFunc(iface.Methods, func(m *idl.Method) bool { return m.Name == method[dot+1:] })
		if i < 0 {
			return // not a declared method: MethodNotFound is checked by the tests
		}
		typ = iface.Methods[i].Out
	} else {
		name := errorName(r.stderr)
		edot := strings.LastIndexByte(name, '.')
		if edot < 0 || name[:edot] != iface.Name {
			return // org.varlink.service or local errors
		}
		i := slices.IndexFunc(iface.Errors, func(e *idl.Error) bool { return e.Name == name[edot+1:] })
		if i < 0 {
			t.Errorf("%s answered error %s, which %s does not declare", method, name, iface.Name)
			return
		}
		typ, what = iface.Errors[i].Type, name
	}

	var records []json.RawMessage
	switch {
	case r.stdout == "":
		// varlinkctl prints nothing for empty parameters.
		records = append(records, json.RawMessage("{}"))
	case strings.HasPrefix(r.stdout, "\x1e"):
		var err error
		if records, err = parseSeq(r.stdout); err != nil {
			t.Errorf("%s: %v", method, err)
			return
		}
	case slices.Contains(flags, "--collect") && r.exit == 0:
		if err := json.Unmarshal([]byte(r.stdout), &records); err != nil {
			t.Errorf("%s --collect: %v", method, err)
			return
		}
	default:
		records = append(records, json.RawMessage(r.stdout))
	}
	for i, rec := range records {
		var v any
		if err := json.Unmarshal(rec, &v); err != nil {
			t.Errorf("%s: record %d is not JSON: %v", what, i, err)
			continue
		}
		if err := checkValue(iface, typ, v, ""); err != nil {
			t.Errorf("%s: record %d does not match the IDL: %v\n%s", what, i, err, rec)
		}
	}
}

// checkValue checks a decoded JSON value against an IDL type.
func checkValue(iface *idl.IDL, typ *idl.Type, v any, path string) error {
	if typ.Kind == idl.TypeMaybe {
		if v == nil {
			return nil
		}
		return checkValue(iface, typ.ElementType, v, path)
	}
	if v == nil {
		return fmt.Errorf("%s: null, but the IDL does not declare it nullable", pathName(path))
	}
	mismatch := func() error { return fmt.Errorf("%s: %T does not match the IDL", pathName(path), v) }
	switch typ.Kind {
	case idl.TypeBool:
		if _, ok := v.(bool); !ok {
			return mismatch()
		}
	case idl.TypeInt:
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			return mismatch()
		}
	case idl.TypeFloat:
		if _, ok := v.(float64); !ok {
			return mismatch()
		}
	case idl.TypeString:
		if _, ok := v.(string); !ok {
			return mismatch()
		}
	case idl.TypeObject:
		if _, ok := v.(map[string]any); !ok {
			return mismatch()
		}
	case idl.TypeEnum:
		s, ok := v.(string)
		if !ok || !slices.ContainsFunc(typ.Fields, func(f idl.TypeField) bool { return f.Name == s }) {
			return fmt.Errorf("%s: %v is not a value of the enum", pathName(path), v)
		}
	case idl.TypeArray:
		a, ok := v.([]any)
		if !ok {
			return mismatch()
		}
		for i, e := range a {
			if err := checkValue(iface, typ.ElementType, e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case idl.TypeMap:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch()
		}
		for k, e := range m {
			if err := checkValue(iface, typ.ElementType, e, fmt.Sprintf("%s[%q]", path, k)); err != nil {
				return err
			}
		}
	case idl.TypeStruct:
		m, ok := v.(map[string]any)
		if !ok {
			return mismatch()
		}
		for _, f := range typ.Fields {
			e, present := m[f.Name]
			if !present && f.Type.Kind != idl.TypeMaybe {
				return fmt.Errorf("%s: field %q missing", pathName(path), f.Name)
			}
			if err := checkValue(iface, f.Type, e, path+"."+f.Name); err != nil {
				return err
			}
		}
		for k := range m {
			if !slices.ContainsFunc(typ.Fields, func(f idl.TypeField) bool { return f.Name == k }) {
				return fmt.Errorf("%s: field %q is not in the IDL", pathName(path), k)
			}
		}
	case idl.TypeAlias:
		i := slices.IndexFunc(iface.Aliases, func(a *idl.Alias) bool { return a.Name == typ.Alias })
		if i < 0 {
			return fmt.Errorf("%s: type %s is not defined", pathName(path), typ.Alias)
		}
		return checkValue(iface, iface.Aliases[i].Type, v, path)
	default:
		return fmt.Errorf("%s: unknown IDL type kind %d", pathName(path), typ.Kind)
	}
	return nil
}

func pathName(path string) string {
	if path == "" {
		return "parameters"
	}
	return strings.TrimPrefix(path, ".")
}

// TestCheckValue makes sure the IDL check can fail, on a hand-made interface.
func TestCheckValue(t *testing.T) {
	iface, err := idl.New(`interface io.example.T
type E (a, b)
type S (n: int, s: ?string, e: E, l: []float, m: [string]bool)
method M() -> (x: S)
`)
	if err != nil {
		t.Fatal(err)
	}
	out := iface.Methods[0].Out
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"x":{"n":1,"e":"a","l":[1.5],"m":{"k":true}}}`, true},
		{`{"x":{"n":1,"s":null,"e":"b","l":[],"m":{}}}`, true},
		{`{"x":{"n":1.5,"e":"a","l":[],"m":{}}}`, false},
		{`{"x":{"e":"a","l":[],"m":{}}}`, false},
		{`{"x":{"n":1,"e":"c","l":[],"m":{}}}`, false},
		{`{"x":{"n":1,"e":"a","l":null,"m":{}}}`, false},
		{`{"x":{"n":1,"e":"a","l":["1"],"m":{}}}`, false},
		{`{"x":{"n":1,"e":"a","l":[],"m":{"k":1}}}`, false},
		{`{"x":{"n":1,"e":"a","l":[],"m":{},"extra":1}}`, false},
		{`{}`, false},
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.json), &v); err != nil {
			t.Fatal(err)
		}
		if err := checkValue(iface, out, v, ""); (err == nil) != tc.ok {
			t.Errorf("%s: error %v, want ok=%v", tc.json, err, tc.ok)
		}
	}
}
