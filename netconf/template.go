package netconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bitbuilder/bitbuilder/internal/treefile"
)

// Metadata is what this package reads of a network template's metadata.json (the seed's format, validated in full
// by the template package): its identity and requirements. Other keys are ignored here.
type Metadata struct {
	Template struct {
		Type    string `json:"type"`
		Version string `json:"version"`
		Name    string `json:"name"`
	} `json:"template"`
	Requirements struct {
		SystemdVersion string   `json:"systemd_version"`
		Kernel         string   `json:"kernel,omitempty"`
		Features       []string `json:"features,omitempty"`
	} `json:"requirements"`
}

// Parameter describes one variable of the template, in its parameters.json (an object keyed by variable name).
type Parameter struct {
	// Type is one of the Param* constants; "" means ParamString. It selects the validation of values.
	Type string `json:"type,omitempty"`
	// Default is used when the caller gives no value; nil means the value is required.
	Default     *string `json:"default,omitempty"`
	Description string  `json:"description,omitempty"`
}

// Parameter types.
const (
	ParamString       = "string"              // free text, no brackets (the injection rules apply to all types)
	ParamWireGuardKey = "wireguard-key"       // base64 of 32 bytes
	ParamEndpoint     = "endpoint"            // host:port, [v6]:port
	ParamCIDRList     = "cidr-list"           // comma- or space-separated CIDRs
	ParamKeepalive    = "keepalive"           // seconds, 0..65535 (0 = off)
	ParamPort         = "port"                // 1..65535
	ParamIPv4         = "ipv4"                // an IPv4 address
	ParamInteger      = "integer"             // decimal
	ParamBoolean      = "boolean"             // yes/no, true/false, on/off, 1/0
	builtinParam      = "bitbuilder-built-in" // set by this package
)

// Template is a loaded network template: its metadata, its parameters and its .netdev/.network (and .link) files.
type Template struct {
	Meta   Metadata
	Params map[string]Parameter
	Files  []File // sorted by name
}

// File is one template file.
type File struct {
	Name    string
	Content []byte
}

// Built-in variables, set by the Manager for every render; a template may use them, a caller may not set them.
const (
	VarTenant           = "TENANT"             // the tenant's name
	VarNetworkDir       = "NETWORK_DIR"        // the tenant's network directory (keys)
	VarWireGuardKeyFile = "WIREGUARD_KEY_FILE" // the tenant's WireGuard private key file
	// Addresses of tenant N, from Config.Addresses (10.N.x.y for netns's default base 10.0.0.0/8).
	VarGateway          = "GATEWAY"           // 10.N.0.1
	VarBridgeAddress    = "BRIDGE_ADDRESS"    // 10.N.0.1/24
	VarBridgeNetwork    = "BRIDGE_NETWORK"    // 10.N.0.0/24
	VarWireGuardAddress = "WIREGUARD_ADDRESS" // 10.N.100.1/24
	VarWireGuardNetwork = "WIREGUARD_NETWORK" // 10.N.100.0/24
)

var builtins = []string{VarTenant, VarNetworkDir, VarWireGuardKeyFile,
	VarGateway, VarBridgeAddress, VarBridgeNetwork, VarWireGuardAddress, VarWireGuardNetwork}

// Limits on what Load and LoadDir read of a template (its files are untrusted).
const (
	// MaxFileSize bounds metadata.json, parameters.json and each unit file.
	MaxFileSize = 64 << 10
	// MaxFiles bounds the number of .netdev, .network and .link files.
	MaxFiles = 256
)

// Load reads a network template from fsys: metadata.json, the optional parameters.json, and every *.netdev,
// *.network and *.link file at its top level. It checks the metadata (type "network", a name and version,
// systemd_version), the parameters (names, types, defaults) and the files' syntax. Every file is read with
// treefile.ReadFS: regular files only (a symlink is refused), at most MaxFileSize bytes. For a checkout on disk
// use LoadDir, which also keeps every path inside the directory.
func Load(fsys fs.FS) (*Template, error) {
	return load(func(name string) ([]byte, error) { return treefile.ReadFS(fsys, name, MaxFileSize) },
		func() ([]fs.DirEntry, error) { return fs.ReadDir(fsys, ".") })
}

// LoadDir is Load of the template checked out in dir, each file read with treefile.ReadRoot below dir (no
// symlink followed, regular files only, at most MaxFileSize bytes), so a template cannot make the reader block
// on a device or read a host file.
func LoadDir(dir string) (*Template, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, &TemplateError{File: ".", Msg: err.Error()}
	}
	defer root.Close()
	return load(func(name string) ([]byte, error) { return treefile.ReadRoot(root, name, MaxFileSize) },
		func() ([]fs.DirEntry, error) {
			f, err := root.Open(".")
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return f.ReadDir(-1)
		})
}

func load(read func(name string) ([]byte, error), list func() ([]fs.DirEntry, error)) (*Template, error) {
	raw, err := read("metadata.json")
	if err != nil {
		return nil, &TemplateError{File: "metadata.json", Msg: err.Error()}
	}
	t := &Template{Params: map[string]Parameter{}}
	if err := json.Unmarshal(raw, &t.Meta); err != nil {
		return nil, &TemplateError{File: "metadata.json", Msg: err.Error()}
	}
	if err := t.Meta.check(); err != nil {
		return nil, err
	}
	raw, err = read("parameters.json")
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, &TemplateError{File: "parameters.json", Msg: err.Error()}
	default:
		if t.Params, err = ParseParameters(raw); err != nil {
			return nil, err
		}
	}
	entries, err := list()
	if err != nil {
		return nil, &TemplateError{File: ".", Msg: err.Error()}
	}
	for _, e := range entries {
		name := e.Name()
		switch path.Ext(name) {
		case ".netdev", ".network", ".link":
		default:
			continue
		}
		if !e.Type().IsRegular() {
			return nil, &TemplateError{File: name, Msg: "not a regular file"}
		}
		if len(t.Files) >= MaxFiles {
			return nil, &TemplateError{File: name, Msg: fmt.Sprintf("more than %d .netdev, .network and .link files", MaxFiles)}
		}
		content, err := read(name)
		if err != nil {
			return nil, &TemplateError{File: name, Msg: err.Error()}
		}
		f := File{Name: name, Content: content}
		if err := f.check(); err != nil {
			return nil, err
		}
		t.Files = append(t.Files, f)
	}
	if len(t.Files) == 0 {
		return nil, &TemplateError{File: ".", Msg: "no .netdev or .network files"}
	}
	slices.SortFunc(t.Files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return t, nil
}

func (m *Metadata) check() error {
	bad := func(msg string, args ...any) error {
		return &TemplateError{File: "metadata.json", Msg: fmt.Sprintf(msg, args...)}
	}
	if m.Template.Type != "network" {
		return bad("template.type is %q, want \"network\"", m.Template.Type)
	}
	if m.Template.Name == "" || m.Template.Version == "" {
		return bad("template.name and template.version are required")
	}
	// Both go into the header comment of every rendered file.
	for _, f := range [][2]string{{"template.name", m.Template.Name}, {"template.version", m.Template.Version}} {
		if err := checkInjection(f[0], f[1], false); err != nil {
			return bad("%v", err)
		}
	}
	if !strings.HasPrefix(m.Requirements.SystemdVersion, ">=") {
		return bad("requirements.systemd_version %q must be of the form \">=N\"", m.Requirements.SystemdVersion)
	}
	return nil
}

// ParseParameters reads a template's parameters.json as Load does: an object keyed by variable name, no unknown
// fields, known types, defaults of their type. Errors are *TemplateError naming parameters.json.
func ParseParameters(raw []byte) (map[string]Parameter, error) {
	t := &Template{Params: map[string]Parameter{}}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t.Params); err != nil {
		return nil, &TemplateError{File: "parameters.json", Msg: err.Error()}
	}
	if t.Params == nil {
		t.Params = map[string]Parameter{}
	}
	if err := t.checkParams(); err != nil {
		return nil, err
	}
	return t.Params, nil
}

// LoadParameters reads the parameters.json of the template checked out in dir as LoadDir does (treefile.ReadRoot:
// no symlink followed, a regular file of at most MaxFileSize bytes) and parses it with ParseParameters. A template
// without one declares none (nil, nil). Any template type may declare parameters this way.
func LoadParameters(dir string) (map[string]Parameter, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, &TemplateError{File: ".", Msg: err.Error()}
	}
	defer root.Close()
	raw, err := treefile.ReadRoot(root, "parameters.json", MaxFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, &TemplateError{File: "parameters.json", Msg: err.Error()}
	}
	return ParseParameters(raw)
}

// TypeName is the parameter's type, ParamString when parameters.json gives none.
func (p Parameter) TypeName() string { return p.typ() }

// Check checks a value of the parameter called name as rendering does: the injection rules every value obeys and
// the parameter's type. The error is a *ValueError.
func (p Parameter) Check(name, value string) error {
	return (&Template{Params: map[string]Parameter{name: p}}).validate(name, value)
}

func (t *Template) checkParams() error {
	bad := func(msg string, args ...any) error {
		return &TemplateError{File: "parameters.json", Msg: fmt.Sprintf(msg, args...)}
	}
	for _, name := range slices.Sorted(maps.Keys(t.Params)) {
		p := t.Params[name]
		if !isVarName(name) {
			return bad("%q is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", name)
		}
		if slices.Contains(builtins, name) {
			return bad("%s is built in", name)
		}
		if validators[p.typ()] == nil {
			return bad("%s: type %q is not one of string, wireguard-key, endpoint, cidr-list, keepalive, port, ipv4, integer, boolean", name, p.Type)
		}
		if p.Default != nil {
			if err := t.validate(name, *p.Default); err != nil {
				return bad("%s: default: %v", name, err)
			}
		}
	}
	return nil
}

func (p Parameter) typ() string {
	if p.Type == "" {
		return ParamString
	}
	return p.Type
}

// validate checks a value of variable name against the injection rules and its declared type.
func (t *Template) validate(name, value string) error {
	typ := t.Params[name].typ()
	if err := checkInjection(name, value, typ == ParamEndpoint); err != nil {
		return err
	}
	return validators[typ](name, value)
}

// check verifies a template file's name and syntax: UTF-8, sections and Key=Value lines, no CR.
func (f File) check() error {
	if strings.ContainsAny(f.Name, "/\\") || strings.HasPrefix(f.Name, ".") {
		return &TemplateError{File: f.Name, Msg: "bad file name"}
	}
	if !utf8.Valid(f.Content) {
		return &TemplateError{File: f.Name, Msg: "not valid UTF-8"}
	}
	_, err := parseUnit(f.Name, string(f.Content))
	return err
}

// entry is one meaningful line of a unit file: a section header or a key.
type entry struct {
	line    int
	section string
	key     string // "" for a section header
	value   string
}

// parseUnit reads the structure of a systemd unit-style file.
func parseUnit(name, s string) ([]entry, error) {
	var out []entry
	section := ""
	for i, line := range strings.Split(s, "\n") {
		n := i + 1
		if strings.ContainsRune(line, '\r') {
			return nil, &TemplateError{File: name, Line: n, Msg: "carriage return"}
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#' || t[0] == ';':
			continue
		case strings.HasSuffix(t, "\\"):
			return nil, &TemplateError{File: name, Line: n, Msg: "line continuations are not allowed"}
		case t[0] == '[':
			if !strings.HasSuffix(t, "]") || len(t) < 3 {
				return nil, &TemplateError{File: name, Line: n, Msg: fmt.Sprintf("bad section header %q", t)}
			}
			section = t[1 : len(t)-1]
			out = append(out, entry{line: n, section: section})
		default:
			k, v, ok := strings.Cut(t, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, &TemplateError{File: name, Line: n, Msg: fmt.Sprintf("%q is not Key=Value", t)}
			}
			if section == "" {
				return nil, &TemplateError{File: name, Line: n, Msg: "assignment outside a section"}
			}
			out = append(out, entry{line: n, section: section, key: strings.TrimSpace(k), value: strings.TrimSpace(v)})
		}
	}
	return out, nil
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
