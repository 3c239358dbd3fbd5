package metadata

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const seedExample = `{
"template": {
"type": "infrastructure",
"version": "1.0.0",
"name": "tenant-infra-template"
},
"requirements": {
"systemd_version": ">=258",
"kernel": ">=6.0",
"features": ["vmspawn", "varlink", "networkd"]
},
"defaults": {
"resources": {
"cpu": 2,
"memory": "2G",
"storage": "10G"
},
"network": {
"mode": "private",
"management_interface": true
}
}
}`

func TestParseValid(t *testing.T) {
	m, err := Parse([]byte(seedExample))
	if err != nil {
		t.Fatalf("Parse(seed example): %v", err)
	}
	if m.Template.Type != TypeInfrastructure || m.Template.Name != "tenant-infra-template" || m.Template.Version != "1.0.0" {
		t.Errorf("template = %+v", m.Template)
	}
	if !slices.Equal(m.Requirements.Features, []Feature{FeatureVmspawn, FeatureVarlink, FeatureNetworkd}) {
		t.Errorf("features = %v", m.Requirements.Features)
	}
	if m.Defaults.Resources.CPU != 2 || m.Defaults.Resources.MemoryBytes() != 2<<30 || m.Defaults.Resources.StorageBytes() != 10<<30 {
		t.Errorf("resources = %+v", m.Defaults.Resources)
	}
	if m.Defaults.Network.ManagementInterface == nil || !*m.Defaults.Network.ManagementInterface || m.Defaults.Network.Mode != "private" {
		t.Errorf("network = %+v", m.Defaults.Network)
	}

	for _, typ := range Types() {
		doc := `{"template":{"type":"` + string(typ) + `","name":"x","version":"1"}}`
		m, err := Parse([]byte(doc))
		if err != nil {
			t.Errorf("Parse(minimal %s): %v", typ, err)
			continue
		}
		if m.Template.Type != typ {
			t.Errorf("type = %q, want %q", m.Template.Type, typ)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tmpl := func(extra string) string {
		return `{"template":{"type":"container","name":"c","version":"1.0"}` + extra + `}`
	}
	tests := []struct {
		name     string
		doc      string
		path     string // JSON path named by the first error
		rule     string
		contains string // in the error message
	}{
		{"not json", `this is not json`, "$", "syntax", "not valid JSON"},
		{"empty", ``, "$", "syntax", "unexpected end"},
		{"truncated", `{"template":{"type":"container"`, "$", "syntax", "not valid JSON"},
		{"trailing data", tmpl("") + `{}`, "$", "syntax", "after the top-level value"},
		{"invalid utf8", "{\"template\":{\"type\":\"container\",\"name\":\"\xff\",\"version\":\"1\"}}", "$", "syntax", "UTF-8"},
		{"duplicate key", `{"template":{"type":"container","type":"machine","name":"c","version":"1"}}`, "$", "syntax", "$.template.type: duplicate key"},
		{"top is array", `[]`, "$", "type", "expected an object, got an array"},
		{"unknown top field", tmpl(`,"extra":1`), "$.extra", "additionalProperties", "unknown field"},
		{"unknown nested field", tmpl(`,"defaults":{"resources":{"cpus":2}}`), "$.defaults.resources.cpus", "additionalProperties", "allowed here: cpu, memory, storage"},
		{"missing template", `{}`, "$.template", "required", "required field is missing"},
		{"missing type", `{"template":{"name":"c","version":"1"}}`, "$.template.type", "required", "missing"},
		{"missing version", `{"template":{"type":"machine","name":"c"}}`, "$.template.version", "required", "missing"},
		{"type not string", `{"template":{"type":3,"name":"c","version":"1"}}`, "$.template.type", "type", "expected a string, got the number 3"},
		{"unknown type", `{"template":{"type":"vm","name":"c","version":"1"}}`, "$.template.type", "enum", `"vm" is not one of "infrastructure"`},
		{"empty name", `{"template":{"type":"machine","name":"","version":"1"}}`, "$.template.name", "minLength", "at least 1"},
		{"version is number", `{"template":{"type":"machine","name":"c","version":1.0}}`, "$.template.version", "type", "expected a string, got the number 1.0"},
		{"cpu is string", tmpl(`,"defaults":{"resources":{"cpu":"2"}}`), "$.defaults.resources.cpu", "type", `expected a number, got the string "2"`},
		{"cpu zero", tmpl(`,"defaults":{"resources":{"cpu":0}}`), "$.defaults.resources.cpu", "exclusiveMinimum", "greater than 0"},
		{"memory is number", tmpl(`,"defaults":{"resources":{"memory":2048}}`), "$.defaults.resources.memory", "type", "expected a string"},
		{"memory bad unit", tmpl(`,"defaults":{"resources":{"memory":"2GB"}}`), "$.defaults.resources.memory", "pattern", `"2GB" does not match`},
		{"storage zero", tmpl(`,"defaults":{"resources":{"storage":"0G"}}`), "$.defaults.resources.storage", "size", "greater than zero"},
		{"mgmt not bool", tmpl(`,"defaults":{"network":{"management_interface":"yes"}}`), "$.defaults.network.management_interface", "type", "expected a boolean"},
		{"bad mode", tmpl(`,"defaults":{"network":{"mode":"public"}}`), "$.defaults.network.mode", "enum", "not one of"},
		{"features not list", tmpl(`,"requirements":{"features":"vmspawn"}`), "$.requirements.features", "type", "expected an array"},
		{"unknown feature", tmpl(`,"requirements":{"features":["nspawn","teleport"]}`), "$.requirements.features[1]", "enum", `"teleport" is not one of`},
		{"duplicate feature", tmpl(`,"requirements":{"features":["nspawn","nspawn"]}`), "$.requirements.features[1]", "uniqueItems", "duplicate of $.requirements.features[0]"},
		{"systemd no operator", tmpl(`,"requirements":{"systemd_version":"257"}`), "$.requirements.systemd_version", "pattern", "does not match"},
		{"systemd dotted", tmpl(`,"requirements":{"systemd_version":">=257.1"}`), "$.requirements.systemd_version", "pattern", "does not match"},
		{"kernel junk", tmpl(`,"requirements":{"kernel":">=six"}`), "$.requirements.kernel", "pattern", "does not match"},
		{"requirements null", tmpl(`,"requirements":null`), "$.requirements", "type", "expected an object, got null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", m)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Fields) == 0 {
				t.Fatalf("error %T %v is not a *Error with fields", err, err)
			}
			f := perr.Fields[0]
			if f.Path != tt.path || f.Rule != tt.rule {
				t.Errorf("first field error at %s (rule %s), want %s (rule %s): %v", f.Path, f.Rule, tt.path, tt.rule, err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
		})
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	doc := `{"template":{"type":"vm","name":"c"},"bogus":true,"defaults":{"resources":{"cpu":"x"}}}`
	_, err := Parse([]byte(doc))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v", err)
	}
	var paths []string
	for _, f := range perr.Fields {
		paths = append(paths, f.Path)
	}
	want := []string{"$.template.version", "$.template.type", "$.bogus", "$.defaults.resources.cpu"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths = %v, want %v", paths, want)
	}
}

// TestSchemaMatchesGoTypes keeps schema.json and the Go types in agreement:
// every schema property is a JSON field of the matching Go type and vice
// versa, and the enums equal the Go constant lists.
func TestSchemaMatchesGoTypes(t *testing.T) {
	s, err := CompileSchema(SchemaJSON)
	if err != nil {
		t.Fatalf("CompileSchema(schema.json): %v", err)
	}
	compareSchema(t, "$", s, reflect.TypeOf(Metadata{}))

	enumOf := func(s *Schema) []string {
		var out []string
		for _, e := range s.Enum {
			out = append(out, e.(string))
		}
		return out
	}
	var types, feats []string
	for _, ty := range Types() {
		types = append(types, string(ty))
	}
	for _, f := range Features() {
		feats = append(feats, string(f))
	}
	if got := enumOf(s.Properties["template"].Properties["type"]); !slices.Equal(got, types) {
		t.Errorf("schema types %v, Go Types() %v", got, types)
	}
	if got := enumOf(s.Properties["requirements"].Properties["features"].Items); !slices.Equal(got, feats) {
		t.Errorf("schema features %v, Go Features() %v", got, feats)
	}
	if got := enumOf(s.Properties["defaults"].Properties["network"].Properties["mode"]); !slices.Equal(got, NetworkModes()) {
		t.Errorf("schema network modes %v, Go NetworkModes() %v", got, NetworkModes())
	}
}

func compareSchema(t *testing.T, path string, s *Schema, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := map[reflect.Kind]string{reflect.Struct: "object", reflect.Slice: "array", reflect.String: "string",
		reflect.Float64: "number", reflect.Bool: "boolean", reflect.Int: "integer"}[typ.Kind()]
	if !slices.Equal(s.Types, []string{want}) {
		t.Errorf("%s: schema type %v, Go type %s (%s)", path, s.Types, typ, want)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		compareSchema(t, path+"[]", s.Items, typ.Elem())
	case reflect.Struct:
		if !s.ClosedObject {
			t.Errorf("%s: schema object allows additional properties", path)
		}
		seen := map[string]bool{}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			seen[name] = true
			ps, ok := s.Properties[name]
			if !ok {
				t.Errorf("%s.%s: Go field %s is not in the schema", path, name, f.Name)
				continue
			}
			compareSchema(t, path+"."+name, ps, f.Type)
		}
		for name := range s.Properties {
			if !seen[name] {
				t.Errorf("%s.%s: schema property has no Go field", path, name)
			}
		}
	}
}

func TestCompileSchemaRejectsUnsupportedKeywords(t *testing.T) {
	for _, doc := range []string{
		`{"type":"object","oneOf":[]}`,
		`{"type":"object","additionalProperties":{"type":"string"}}`,
		`{"type":"strang"}`,
		`{"pattern":"("}`,
		`{"type":"object","additionalProperties":false,"required":["a"],"properties":{}}`,
	} {
		if _, err := CompileSchema([]byte(doc)); !errors.Is(err, ErrSchema) {
			t.Errorf("CompileSchema(%s) = %v, want ErrSchema", doc, err)
		}
	}
}

func TestSchemaIsValidJSONWithDescriptions(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(SchemaJSON, &v); err != nil {
		t.Fatal(err)
	}
	s, err := CompileSchema(SchemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(string, *Schema)
	walk = func(p string, s *Schema) {
		for k, ps := range s.Properties {
			if ps.Description == "" {
				t.Errorf("%s.%s has no description", p, k)
			}
			walk(p+"."+k, ps)
		}
	}
	walk("$", s)
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"2G", 2 << 30, false}, {"512M", 512 << 20, false}, {"1.5T", 3 << 39, false}, {"100", 100, false},
		{"4K", 4096, false}, {"", 0, true}, {"G", 0, true}, {"-1G", 0, true}, {"1e3", 0, true}, {"0", 0, true},
		{"99999999999T", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, err=%t", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// FuzzParse checks that Parse never panics, that every error names a JSON
// path, and that whatever it accepts survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(seedExample))
	f.Add([]byte(`{"template":{"type":"sysext","name":"x","version":"1"}}`))
	f.Add([]byte(`{"template":{"type":"sysext","name":"x","version":"1"},"requirements":{"kernel":">=6.1, <7"}}`))
	f.Add([]byte(`{"template":{"type":"x"},"a":[1,{"b":null}]}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Fields) == 0 {
				t.Fatalf("error %v is not a *Error with fields", err)
			}
			for _, fe := range perr.Fields {
				if !strings.HasPrefix(fe.Path, "$") || fe.Rule == "" || fe.Message == "" {
					t.Fatalf("field error %+v lacks path, rule or message", fe)
				}
			}
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed %+v to %+v", m, m2)
		}
	})
}
