package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
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

func TestFramerLimits(t *testing.T) {
	for _, tc := range []struct {
		in      []string // the reads, in order
		limit   int
		want    []string
		wantErr error
	}{
		{[]string{"abc\x00"}, 10, []string{"abc"}, nil},
		{[]string{"\x00"}, 10, []string{""}, nil},
		{[]string{"a\x00bc\x00d", "e\x00"}, 10, []string{"a", "bc", "de"}, nil},
		{[]string{"ab", "c", "de\x00"}, 5, []string{"abcde"}, nil},
		{[]string{"abcdef\x00"}, 5, nil, errTooLarge},
		{[]string{"abc", "def"}, 5, nil, errTooLarge},
	} {
		var charged, budget int
		f := framer{limit: tc.limit, charge: func(n int) bool { charged += n; budget += n; return true }}
		var got []string
		var err error
		for _, in := range tc.in {
			if err = f.feed([]byte(in), func(msg []byte, c int) {
				got = append(got, string(msg))
				if c < len(msg) {
					t.Errorf("message %q charged %d bytes", msg, c)
				}
				budget -= c
			}); err != nil {
				break
			}
		}
		if !errors.Is(err, tc.wantErr) || (err == nil && strings.Join(got, "|") != strings.Join(tc.want, "|")) {
			t.Errorf("feed(%q, %d) = %q, %v; want %q, %v", tc.in, tc.limit, got, err, tc.want, tc.wantErr)
		}
		if err == nil && budget != cap(f.partial) {
			t.Errorf("feed(%q): %d bytes charged and not handed on, the partial buffer holds %d", tc.in, budget, cap(f.partial))
		}
	}
	// A charge refused is an error, and nothing is copied.
	f := framer{limit: 1 << 20, charge: func(n int) bool { return n <= 10 }}
	if err := f.feed(bytes.Repeat([]byte("x"), 100), func([]byte, int) {}); !errors.Is(err, errOverBudget) || f.partial != nil {
		t.Errorf("over budget: %v, partial %d bytes", err, len(f.partial))
	}
}

// TestCheckHoldsNothing: checking valid parameters allocates nothing, whatever their size;
// an unknown field of 8 MiB costs no more. Parameters are checked before authorization, so
// any local user could otherwise make the daemon hold many times what it sends.
func TestCheckHoldsNothing(t *testing.T) {
	si := tenantInterface(t)
	create := si.methods["Create"].In
	valid := []byte(`{"name":"a","resources":{"cpus":1.5,"memoryBytes":1,"storageBytes":2},"networkFeatures":[` +
		strings.Repeat(`"wireguard",`, 1<<16) + `"vlan"],"parameters":{"K":"v","L":"w"},"desiredState":"running"}`)
	if n := testing.AllocsPerRun(5, func() {
		if field, err := si.check(create, valid); err != nil {
			t.Fatalf("%s: %v", field, err)
		}
	}); n != 0 {
		t.Errorf("checking %d bytes of valid parameters: %v allocations, want none", len(valid), n)
	}
	unknown := []byte(`{"name":"a","x":[` + strings.Repeat("1,", 4<<20) + `1]}`)
	if n := testing.AllocsPerRun(2, func() {
		if field, _ := si.check(create, unknown); field != "x" {
			t.Fatalf("8 MiB unknown field: %q", field)
		}
	}); n > 10 {
		t.Errorf("refusing 8 MiB of an unknown field: %v allocations", n)
	}
}
