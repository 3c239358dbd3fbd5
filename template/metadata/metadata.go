// Package metadata reads a template's metadata.json and checks the
// template's requirements against a host.
//
// metadata.json is described by a JSON Schema shipped in this package
// (schema.json, embedded). Parse enforces that schema with a small checker
// that implements exactly the keywords the schema uses, so the schema file is
// the real description of the format: unknown fields, wrong types, missing
// required fields and values outside the allowed sets are rejected, each with
// the JSON path of the offending value. After the schema check the document
// is decoded into Metadata, and the constraint and size strings are parsed.
package metadata

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// SchemaJSON is the JSON Schema of metadata.json.
//
//go:embed schema.json
var SchemaJSON []byte

// Type is a template type.
type Type string

// The template types.
const (
	TypeInfrastructure Type = "infrastructure"
	TypeMachine        Type = "machine"
	TypeContainer      Type = "container"
	TypeHomed          Type = "homed"
	TypeNetwork        Type = "network"
	TypeSysext         Type = "sysext"
	TypeConfext        Type = "confext"
)

// Types lists every template type, in the schema's order.
func Types() []Type {
	return []Type{TypeInfrastructure, TypeMachine, TypeContainer, TypeHomed, TypeNetwork, TypeSysext, TypeConfext}
}

// Feature is a host feature a template can require.
type Feature string

// The known features.
const (
	FeatureVmspawn   Feature = "vmspawn"   // systemd-vmspawn is installed
	FeatureNspawn    Feature = "nspawn"    // systemd-nspawn is installed
	FeatureVarlink   Feature = "varlink"   // varlinkctl (systemd >= 255) is installed
	FeatureNetworkd  Feature = "networkd"  // systemd-networkd is installed
	FeatureResolved  Feature = "resolved"  // systemd-resolved is installed
	FeatureMachined  Feature = "machined"  // systemd-machined is installed
	FeatureHomed     Feature = "homed"     // systemd-homed is installed
	FeatureSysext    Feature = "sysext"    // systemd-sysext is installed
	FeatureConfext   Feature = "confext"   // systemd-confext is installed
	FeatureBridge    Feature = "bridge"    // the kernel has bridge
	FeatureVeth      Feature = "veth"      // the kernel has veth
	FeatureWireguard Feature = "wireguard" // the kernel has wireguard
	FeatureVxlan     Feature = "vxlan"     // the kernel has vxlan
	FeatureVlan      Feature = "vlan"      // the kernel has 8021q
	FeatureKVM       Feature = "kvm"       // /dev/kvm exists
	FeatureVirtiofs  Feature = "virtiofs"  // virtiofsd is installed
	FeatureTPM       Feature = "tpm"       // swtpm is installed
)

// Features lists every known feature, in the schema's order.
func Features() []Feature {
	return []Feature{FeatureVmspawn, FeatureNspawn, FeatureVarlink, FeatureNetworkd, FeatureResolved,
		FeatureMachined, FeatureHomed, FeatureSysext, FeatureConfext, FeatureBridge, FeatureVeth,
		FeatureWireguard, FeatureVxlan, FeatureVlan, FeatureKVM, FeatureVirtiofs, FeatureTPM}
}

// NetworkModes lists the values of defaults.network.mode, in the schema's order.
func NetworkModes() []string { return []string{"private", "isolated", "bridged", "none"} }

// Metadata is a parsed metadata.json.
type Metadata struct {
	Template     Info         `json:"template"`
	Requirements Requirements `json:"requirements"`
	Defaults     Defaults     `json:"defaults"`
}

// Info says what the template is.
type Info struct {
	Type        Type   `json:"type"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
}

// Requirements says what the host must provide. Empty fields require nothing.
type Requirements struct {
	// SystemdVersion is a constraint such as ">=257" or ">=257, <260".
	SystemdVersion string `json:"systemd_version,omitempty"`
	// Kernel is a constraint such as ">=6.0".
	Kernel   string    `json:"kernel,omitempty"`
	Features []Feature `json:"features,omitempty"`
}

// Defaults are defaults for tenants that use the template.
type Defaults struct {
	Resources Resources      `json:"resources"`
	Network   NetworkDefault `json:"network"`
}

// Resources are resource limits; zero values mean "not set".
type Resources struct {
	CPU float64 `json:"cpu,omitempty"`
	// Memory and Storage are sizes such as "2G" (see ParseSize).
	Memory  string `json:"memory,omitempty"`
	Storage string `json:"storage,omitempty"`
}

// NetworkDefault are network defaults; zero values mean "not set".
type NetworkDefault struct {
	Mode                string `json:"mode,omitempty"`
	ManagementInterface *bool  `json:"management_interface,omitempty"`
}

// MemoryBytes returns Resources.Memory in bytes, 0 when unset.
func (r Resources) MemoryBytes() int64 { n, _ := ParseSize(r.Memory); return n }

// StorageBytes returns Resources.Storage in bytes, 0 when unset.
func (r Resources) StorageBytes() int64 { n, _ := ParseSize(r.Storage); return n }

// Parse parses and checks a metadata.json document. Errors are *Error and
// match ErrInvalid; each names the JSON path, the rule and what was expected.
func Parse(data []byte) (*Metadata, error) {
	s, err := compiledSchema()
	if err != nil {
		return nil, err
	}
	if errs := s.Check(data); len(errs) > 0 {
		return nil, &Error{Fields: errs}
	}
	var m Metadata
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		// The schema and the Go types disagree: a bug, caught by the tests.
		return nil, &Error{Fields: []FieldError{{Path: "$", Rule: "decode", Message: err.Error()}}}
	}
	var errs []FieldError
	if c := m.Requirements.SystemdVersion; c != "" {
		if _, err := ParseConstraint(c); err != nil {
			errs = append(errs, FieldError{Path: "$.requirements.systemd_version", Rule: "constraint", Message: err.Error()})
		}
	}
	if c := m.Requirements.Kernel; c != "" {
		if _, err := ParseConstraint(c); err != nil {
			errs = append(errs, FieldError{Path: "$.requirements.kernel", Rule: "constraint", Message: err.Error()})
		}
	}
	for _, f := range []struct{ path, v string }{
		{"$.defaults.resources.memory", m.Defaults.Resources.Memory},
		{"$.defaults.resources.storage", m.Defaults.Resources.Storage},
	} {
		if f.v == "" {
			continue
		}
		if _, err := ParseSize(f.v); err != nil {
			errs = append(errs, FieldError{Path: f.path, Rule: "size", Message: err.Error()})
		}
	}
	if len(errs) > 0 {
		return nil, &Error{Fields: errs}
	}
	return &m, nil
}

// compiledSchema compiles the embedded schema. It is cheap (a few dozen
// keywords) and done per call so the package holds no state.
func compiledSchema() (*Schema, error) {
	return CompileSchema(SchemaJSON)
}

// ParseSize parses a size such as "512M", "2G" or "1.5T" (suffixes K, M, G,
// T are powers of 1024; no suffix is bytes).
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	num := s
	switch s[len(s)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult != 1 {
		num = s[:len(s)-1]
	}
	if num == "" || strings.ContainsAny(num, "eE+-") {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	v := f * float64(mult)
	if v >= 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if v == 0 {
		return 0, fmt.Errorf("size %q must be greater than zero", s)
	}
	return int64(v), nil
}
