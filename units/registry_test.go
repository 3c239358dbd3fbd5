package units

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRegistryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "boot-registry.json")
	want := testRegistry(t)
	if err := WriteRegistry(p, want); err != nil {
		t.Fatal(err)
	}
	got, skipped, err := ReadRegistry(p)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("ReadRegistry: %v, skipped %v", err, skipped)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %+v, wrote %+v", got, want)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	// Replacing it leaves no temporary files behind.
	want.Tenants = want.Tenants[:1]
	if err := WriteRegistry(p, want); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after two writes, want 1", len(entries))
	}
	if got, _, _ := ReadRegistry(p); len(got.Tenants) != 1 {
		t.Errorf("second write: read %d tenants, want 1", len(got.Tenants))
	}
	// An empty registry is written as an empty list, and read back.
	if err := WriteRegistry(p, Registry{Version: RegistryVersion}); err != nil {
		t.Fatal(err)
	}
	if got, skipped, err := ReadRegistry(p); err != nil || len(got.Tenants) != 0 || len(skipped) != 0 {
		t.Errorf("empty registry: %+v %v %v", got, skipped, err)
	}
}

// TestWriteRegistryRefusesBadInput checks that invalid registries are refused and the file stays as it was.
func TestWriteRegistryRefusesBadInput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "boot-registry.json")
	good := testRegistry(t)
	if err := WriteRegistry(p, good); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	ok := RegistryTenant{Name: "ok", NetworkIndex: 100}
	tests := []struct {
		name string
		reg  Registry
		want error
	}{
		{"version 0", Registry{Tenants: []RegistryTenant{ok}}, ErrRegistryVersion},
		{"version 3", Registry{Version: 3}, ErrRegistryVersion},
		{"bad name", Registry{Version: RegistryVersion, Tenants: []RegistryTenant{ok, {Name: "../x", NetworkIndex: 1}}}, ErrInvalidName},
		{"bad index", Registry{Version: RegistryVersion, Tenants: []RegistryTenant{{Name: "a", NetworkIndex: -1}}}, ErrInvalidIndex},
		{"duplicate name", Registry{Version: RegistryVersion, Tenants: []RegistryTenant{ok, {Name: "ok", NetworkIndex: 2}}}, ErrDuplicateTenant},
		{"duplicate index", Registry{Version: RegistryVersion, Tenants: []RegistryTenant{ok, {Name: "other", NetworkIndex: 100}}}, ErrDuplicateTenant},
		{"bad extension", Registry{Version: RegistryVersion, Tenants: []RegistryTenant{{Name: "a", NetworkIndex: 1, Sysext: []string{"a/b"}}}}, ErrInvalidExtension},
	}
	for _, tt := range tests {
		if err := WriteRegistry(p, tt.reg); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
		after, _ := os.ReadFile(p)
		if string(after) != string(before) {
			t.Errorf("%s: the refused write changed the file", tt.name)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("refused writes left %d entries in the directory, want 1", len(entries))
	}
	if err := WriteRegistry(filepath.Join(t.TempDir(), "missing", "r.json"), good); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("write into a missing directory: %v, want fs.ErrNotExist", err)
	}
}

func TestReadRegistryBadFiles(t *testing.T) {
	dir := t.TempDir()
	valid := `{"version":1,"tenants":[{"name":"a","networkIndex":1,"running":true}]}`
	tests := []struct {
		name    string
		content *string
		want    error
	}{
		{"missing", nil, ErrRegistryMissing},
		{"empty", ptr(""), ErrRegistryEmpty},
		{"white space", ptr(" \n\t"), ErrRegistryEmpty},
		{"truncated", ptr(valid[:len(valid)/2]), ErrRegistryTruncated},
		{"truncated after brace", ptr("{"), ErrRegistryTruncated},
		{"not JSON", ptr("tenants: [a, b]\n"), ErrRegistryMalformed},
		{"binary", ptr("\x00\x01\x02"), ErrRegistryMalformed},
		{"JSON array", ptr(`[{"name":"a"}]`), ErrRegistryMalformed},
		{"tenants not a list", ptr(`{"version":1,"tenants":{"a":1}}`), ErrRegistryMalformed},
		{"no version", ptr(`{"tenants":[]}`), ErrRegistryMalformed},
		{"null", ptr(`null`), ErrRegistryMalformed},
		{"two documents", ptr(valid + valid), ErrRegistryMalformed},
		{"seed format", ptr(`{"tenants":[{"id":"t1"}]}`), ErrRegistryMalformed},
		{"future version", ptr(`{"version":3,"tenants":[]}`), ErrRegistryVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".json")
			if tt.content != nil {
				if err := os.WriteFile(p, []byte(*tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			reg, skipped, err := ReadRegistry(p)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if len(reg.Tenants) != 0 || len(skipped) != 0 {
				t.Errorf("returned %d tenants and %d skipped with its error", len(reg.Tenants), len(skipped))
			}
		})
	}
	if _, _, err := ReadRegistry(filepath.Join(dir, "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file error %v does not match fs.ErrNotExist", err)
	}
}

// TestReadRegistryEveryPrefix cuts a written registry at every byte: a file cut short by a crash mid-write (which
// WriteRegistry's rename prevents, but a copy or a disk error may not) must never read as a smaller registry.
func TestReadRegistryEveryPrefix(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.json")
	if err := WriteRegistry(p, testRegistry(t)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	end := len(strings.TrimRight(string(data), "\n"))
	for n := 0; n < end; n++ {
		_, _, err := ParseRegistry(data[:n])
		if !errors.Is(err, ErrRegistryTruncated) && !errors.Is(err, ErrRegistryEmpty) {
			t.Fatalf("cut at %d of %d: error %v, want ErrRegistryTruncated or ErrRegistryEmpty", n, len(data), err)
		}
	}
}

func TestReadRegistrySkipsBadEntries(t *testing.T) {
	content := `{"version": 1, "future": "ignored", "tenants": [
	  {"name": "good-one", "networkIndex": 1, "running": true},
	  {"name": "../../etc/evil", "networkIndex": 2},
	  {"name": "a/b", "networkIndex": 3},
	  {"name": "UPPER", "networkIndex": 4},
	  {"name": "good-one", "networkIndex": 5},
	  {"name": "same-index", "networkIndex": 1},
	  {"name": "no-index"},
	  {"name": "bad-type", "networkIndex": "six"},
	  {"name": 42, "networkIndex": 7},
	  "not an object",
	  {"name": "bad-ext", "networkIndex": 8, "sysext": ["../x"]},
	  {"name": "two", "networkIndex": 9, "infra": true, "unknownField": [1,2]}
	]}`
	reg, skipped, err := ParseRegistry([]byte(content))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rt := range reg.Tenants {
		names = append(names, rt.Name)
	}
	if got := strings.Join(names, ","); got != "good-one,two" {
		t.Errorf("kept %q, want good-one,two", got)
	}
	wantSkipped := []struct {
		entry  int
		name   string
		reason string
	}{
		{1, "../../etc/evil", "invalid tenant name"},
		{2, "a/b", "invalid tenant name"},
		{3, "UPPER", "invalid tenant name"},
		{4, "good-one", "name already used by entry 0"},
		{5, "same-index", "network index 1 already used by tenant \"good-one\""},
		{6, "no-index", "invalid network index"},
		{7, "bad-type", "does not decode"},
		{8, "", "does not decode"},
		{9, "", "does not decode"},
		{10, "bad-ext", "invalid extension"},
	}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped %d entries, want %d: %v", len(skipped), len(wantSkipped), skipped)
	}
	for i, w := range wantSkipped {
		s := skipped[i]
		if s.Entry != w.entry || s.Name != w.name || !strings.Contains(s.Reason, w.reason) {
			t.Errorf("skipped[%d] = %v, want entry %d %q with a reason containing %q", i, s, w.entry, w.name, w.reason)
		}
	}
}

func ptr(s string) *string { return &s }

// FuzzParseRegistry checks that any input either fails with one of the file errors or yields a registry that
// WriteRegistry would accept (so the generator only ever renders checked tenants), and never panics.
func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(`{"version":1,"tenants":[{"name":"a","networkIndex":1,"running":true},{"name":"a","networkIndex":2}]}`))
	f.Add([]byte(`{"version":1,"tenants":[{"name":"../x","networkIndex":1,"sysext":["a","a"]},"x",null,7]}`))
	f.Add([]byte(`{"version":1`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		reg, skipped, err := ParseRegistry(data)
		if err != nil {
			for _, want := range []error{ErrRegistryEmpty, ErrRegistryTruncated, ErrRegistryMalformed, ErrRegistryVersion} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("unexpected error kind: %v", err)
		}
		if err := CheckRegistry(reg); err != nil {
			t.Fatalf("ParseRegistry kept an invalid registry: %v (skipped %v)", err, skipped)
		}
		for _, rt := range reg.Tenants {
			// Unit name lengths depend on Config.StateDir, so only Render can check them.
			if _, err := Render(rt.Tenant(), Config{}); err != nil && !errors.Is(err, ErrNameTooLong) {
				t.Fatalf("kept tenant %q does not render: %v", rt.Name, err)
			}
		}
	})
}
