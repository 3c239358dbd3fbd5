package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/varlink/go/varlink/idl"

	"github.com/bitbuilder/bitbuilder/api"
	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

func tenantInterface(t testing.TB) *servedInterface {
	t.Helper()
	desc, err := api.Description(api.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := idl.New(desc)
	if err != nil {
		t.Fatal(err)
	}
	si := &servedInterface{idl: parsed, aliases: map[string]*idl.Type{}, methods: map[string]*idl.Method{}}
	for _, a := range parsed.Aliases {
		si.aliases[a.Name] = a.Type
	}
	for _, m := range parsed.Methods {
		si.methods[m.Name] = m
	}
	return si
}

func TestCheckNamesTheField(t *testing.T) {
	si := tenantInterface(t)
	create := si.methods["Create"].In
	for _, tc := range []struct {
		params, field string
	}{
		{`{"name":"a"}`, ""},
		{`{"name":"a","networkIndex":null,"resources":null}`, ""},
		{`{}`, "name"},
		{`{"name":null}`, "name"},
		{`{"name":"a","x":1}`, "x"},
		{`{"name":"a","networkIndex":"1"}`, "networkIndex"},
		{`{"name":"a","networkIndex":1e3}`, "networkIndex"},
		{`{"name":"a","networkIndex":99999999999999999999}`, "networkIndex"},
		{`{"name":"a","resources":{"cpus":1,"memoryBytes":1}}`, "resources.storageBytes"},
		{`{"name":"a","resources":{"cpus":true,"memoryBytes":1,"storageBytes":1}}`, "resources.cpus"},
		{`{"name":"a","templates":[{"role":"a","name":"b","template":"c","commit":5}]}`, "templates[0].commit"},
		{`{"name":"a","templates":{}}`, "templates"},
		{`{"name":"a","parameters":{"K":1}}`, "parameters.K"},
		{`{"name":"a","networkFeatures":[null]}`, "networkFeatures[0]"},
		{`{"name":"a","desiredState":"on"}`, "desiredState"},
		{`[]`, "parameters"},
		{`{"name":"a"} {"name":"b"}`, ""}, // the envelope decoder refuses trailing data before this
	} {
		field, err := si.check(create, []byte(tc.params))
		if tc.field == "" {
			if err != nil {
				t.Errorf("check(%s) = %s: %v, want ok", tc.params, field, err)
			}
			continue
		}
		if err == nil || field != tc.field {
			t.Errorf("check(%s) = %q (%v), want the field %q", tc.params, field, err, tc.field)
		}
	}
}

// FuzzCheckCreate: whatever the strict check accepts decodes into the generated Go type
// without error, even with unknown fields disallowed: the check is at least as strict as
// the types the handlers see.
func FuzzCheckCreate(f *testing.F) {
	for _, s := range []string{
		`{"name":"a"}`,
		`{"name":"a","networkIndex":3,"resources":{"cpus":0.5,"memoryBytes":1,"storageBytes":2}}`,
		`{"name":"a","templates":[{"role":"sysext","name":"x","template":"y","commit":null}],"parameters":{"A":"b"}}`,
		`{"name":"a","networkFeatures":["wireguard"],"desiredState":"stopped"}`,
		`{"name":1}`, `{}`, `null`, `{"name":"a","x":{}}`,
	} {
		f.Add([]byte(s))
	}
	si := tenantInterface(f)
	create := si.methods["Create"].In
	f.Fuzz(func(t *testing.T, params []byte) {
		if _, err := si.check(create, params); err != nil {
			return
		}
		var in struct {
			Name            string             `json:"name"`
			NetworkIndex    *int64             `json:"networkIndex,omitempty"`
			Resources       *vt.Resources      `json:"resources,omitempty"`
			Templates       *[]vt.TemplateUse  `json:"templates,omitempty"`
			Parameters      *map[string]string `json:"parameters,omitempty"`
			NetworkFeatures *[]string          `json:"networkFeatures,omitempty"`
			DesiredState    *vt.DesiredState   `json:"desiredState,omitempty"`
		}
		dec := json.NewDecoder(bytes.NewReader(params))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("check accepted %q, but it does not decode: %v", params, err)
		}
	})
}

func TestReadMessageLimits(t *testing.T) {
	for _, tc := range []struct {
		in      string
		limit   int
		want    string
		wantErr bool
	}{
		{"abc\x00", 10, "abc", false},
		{"\x00", 10, "", false},
		{"abcdef\x00", 5, "", true},
		{"abc", 10, "", true}, // EOF inside a message
	} {
		got, err := readMessage(bufioReader(tc.in), tc.limit)
		if (err != nil) != tc.wantErr || (err == nil && string(got) != tc.want) {
			t.Errorf("readMessage(%q, %d) = %q, %v", tc.in, tc.limit, got, err)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16) }
