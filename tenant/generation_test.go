package tenant

import (
	"encoding/json"
	"testing"
	"time"
)

// generationOracle is what encoding/json makes of value's generation.
func generationOracle(value []byte) (int64, bool) {
	var v struct {
		Generation int64 `json:"generation"`
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, false
	}
	return v.Generation, true
}

func TestGeneration(t *testing.T) {
	now := time.Date(2026, 12, 8, 1, 2, 3, 4, time.UTC)
	rec := &Tenant{
		Name: "t", NetworkIndex: 3, Templates: []TemplateUse{{Name: "generation"}},
		Parameters: map[string]string{"generation": "99", `"generation":`: `{"generation":7}`},
		Machines:   []Machine{{Name: "m"}}, Phase: PhaseReady, Conditions: []Condition{{Type: "generation", Message: `\"}]`}},
		Generation: 42, ObservedGeneration: 41, CreatedAt: now, UpdatedAt: now,
	}
	zero := *rec
	zero.Generation = 0 // omitted
	cases := map[string]struct {
		value string
		gen   int64
		ok    bool
	}{
		"record":                 {string(encode(rec)), 42, true},
		"record without":         {string(encode(&zero)), 0, true},
		"empty object":           {`{}`, 0, true},
		"nested only":            {`{"p":{"generation":5},"a":["generation",{"generation":6}]}`, 0, true},
		"escaped key":            {`{"gener\u0061tion":5}`, 5, true},
		"other case":             {`{"Generation":5}`, 5, true},
		"repeated":               {`{"generation":5,"generation":6}`, 6, true},
		"white space":            {`{ "generation" : 5 }`, 5, true},
		"negative":               {`{"generation":-3}`, -3, true},
		"string escapes":         {`{"a":"\\\"","generation":8}`, 8, true},
		"fraction":               {`{"generation":1.5}`, 0, false},
		"string value":           {`{"generation":"1"}`, 0, false},
		"leading zero":           {`{"generation":01}`, 0, false},
		"too large":              {`{"generation":9223372036854775808}`, 0, false},
		"array":                  {`[1]`, 0, false},
		"truncated":              {`{"generation":5`, 0, false},
		"trailing data":          {`{"generation":5}x`, 0, false},
		"null generation":        {`{"generation":null}`, 0, true},
		"unterminated string":    {`{"a":"b`, 0, false},
		"unbalanced nested":      {`{"a":{"b":[1}`, 0, false},
		"key without colon":      {`{"a"}`, 0, false},
		"not json":               {`nope`, 0, false},
		"empty":                  {``, 0, false},
		"generation after array": {`{"a":[{"b":"]"}],"generation":9}`, 9, true},
	}
	for name, c := range cases {
		gen, ok := Generation([]byte(c.value))
		if gen != c.gen || ok != c.ok {
			t.Errorf("%s: Generation(%s) = %d, %v; want %d, %v", name, c.value, gen, ok, c.gen, c.ok)
		}
		if og, ook := generationOracle([]byte(c.value)); og != c.gen || ook != c.ok {
			t.Errorf("%s: the case disagrees with encoding/json (%d, %v)", name, og, ook)
		}
	}
	// The record's fast path is taken: no fallback to encoding/json for what encode writes.
	if _, _, sure := scanGeneration(encode(rec)); !sure {
		t.Error("a record as encode writes it is not read by the fast path")
	}
}

// FuzzGeneration checks Generation against encoding/json on every valid JSON input.
func FuzzGeneration(f *testing.F) {
	f.Add([]byte(`{"name":"a","parameters":{"generation":"1"},"generation":3}`))
	f.Add([]byte(`{"generation":-0}`))
	f.Add([]byte(`{"a":[{},[]],"generation":12,"b":"\u0022"}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		if !json.Valid(value) {
			return
		}
		gen, ok := Generation(value)
		og, ook := generationOracle(value)
		if gen != og || ok != ook {
			t.Fatalf("Generation(%q) = %d, %v; encoding/json says %d, %v", value, gen, ok, og, ook)
		}
	})
}
