package units

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
)

// DefaultRegistryPath is where the daemon keeps the boot registry and the generator reads it. It is under /etc,
// not /var/lib, because generators run before local file systems beyond the root are mounted (/var may be a
// separate file system) and may not start other processes, so the registry must sit on the root file system.
const DefaultRegistryPath = "/etc/bitbuilder/boot-registry.json"

// RegistryVersion is the format version WriteRegistry writes. ReadRegistry also accepts version 1 (no machines and
// no limits), which version 2 only extended.
const RegistryVersion = 2

// maxRegistrySize bounds what ReadRegistry reads; 10,000 tenants take about 1.5 MB.
const maxRegistrySize = 64 << 20

// Registry is the boot registry: the tenants the generator brings back at boot. The daemon rewrites it whenever a
// tenant's boot-relevant settings change.
type Registry struct {
	// Version is RegistryVersion.
	Version int `json:"version"`
	// Tenants, one entry per tenant, names and network indexes unique.
	Tenants []RegistryTenant `json:"tenants"`
	// Units is the rendering configuration the daemon used (version 2), so that the generator renders the same
	// units as the daemon that wrote the registry, with its state directory and tool paths. Absent: the defaults.
	Units *Config `json:"units,omitempty"`
}

// RegistryTenant is one tenant in the boot registry.
type RegistryTenant struct {
	Name         string   `json:"name"`
	NetworkIndex int      `json:"networkIndex"`
	Infra        bool     `json:"infra,omitempty"`
	Sysext       []string `json:"sysext,omitempty"`
	Confext      []string `json:"confext,omitempty"`
	// Machines are the tenant's containers and VMs; CPUs and MemoryBytes limit its slice (version 2).
	Machines    []Machine `json:"machines,omitempty"`
	CPUs        float64   `json:"cpus,omitempty"`
	MemoryBytes int64     `json:"memoryBytes,omitempty"`
	// Running says the tenant's desired state is running: the generator starts it at boot
	// (multi-user.target wants tenant@<name>.service). Units of stopped tenants are generated but not started.
	Running bool `json:"running"`
}

// Tenant returns what Render needs of rt.
func (rt RegistryTenant) Tenant() Tenant {
	return Tenant{Name: rt.Name, NetworkIndex: rt.NetworkIndex, Infra: rt.Infra, Sysext: rt.Sysext, Confext: rt.Confext,
		Machines: rt.Machines, CPUs: rt.CPUs, MemoryBytes: rt.MemoryBytes}
}

// Skipped is a registry entry that ReadRegistry left out.
type Skipped struct {
	// Entry is the entry's position in the tenants array, from 0.
	Entry int
	// Name is the entry's name if it had a readable one.
	Name string
	// Reason says why it was left out.
	Reason string
}

func (s Skipped) String() string {
	if s.Name != "" {
		return fmt.Sprintf("entry %d (%q): %s", s.Entry, s.Name, s.Reason)
	}
	return fmt.Sprintf("entry %d: %s", s.Entry, s.Reason)
}

// registryFile is the outer shape of the file; entries are decoded one by one so that one bad entry costs only itself.
type registryFile struct {
	Version *int              `json:"version"`
	Tenants []json.RawMessage `json:"tenants"`
}

// ReadRegistry reads the boot registry at path. A missing, empty, truncated or non-JSON file, or one of another
// version, is an error (ErrRegistryMissing, ErrRegistryEmpty, ErrRegistryTruncated, ErrRegistryMalformed,
// ErrRegistryVersion). Bad entries are not: each is left out and reported in the []Skipped with its reason. An
// entry is bad if it does not decode, fails Tenant.Check, or repeats the name or network index of an entry before it.
func ReadRegistry(path string) (Registry, []Skipped, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Registry{}, nil, fmt.Errorf("%w: %w", ErrRegistryMissing, err)
		}
		return Registry{}, nil, fmt.Errorf("read boot registry: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRegistrySize+1))
	if err != nil {
		return Registry{}, nil, fmt.Errorf("read boot registry %s: %w", path, err)
	}
	if len(data) > maxRegistrySize {
		return Registry{}, nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrRegistryMalformed, path, maxRegistrySize)
	}
	return ParseRegistry(data)
}

// ParseRegistry is ReadRegistry on the file's content.
func ParseRegistry(data []byte) (Registry, []Skipped, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Registry{}, nil, ErrRegistryEmpty
	}
	var rf registryFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&rf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Registry{}, nil, fmt.Errorf("%w: the JSON document ends early", ErrRegistryTruncated)
		}
		return Registry{}, nil, fmt.Errorf("%w: %w", ErrRegistryMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Registry{}, nil, fmt.Errorf("%w: data after the JSON document", ErrRegistryMalformed)
	}
	if rf.Version == nil {
		return Registry{}, nil, fmt.Errorf("%w: no \"version\"", ErrRegistryMalformed)
	}
	if *rf.Version != RegistryVersion && *rf.Version != 1 {
		return Registry{}, nil, fmt.Errorf("%w: version %d, this build reads version %d", ErrRegistryVersion, *rf.Version, RegistryVersion)
	}
	reg := Registry{Version: RegistryVersion, Tenants: make([]RegistryTenant, 0, len(rf.Tenants))}
	var skipped []Skipped
	names := make(map[string]int, len(rf.Tenants))
	indexes := make(map[int]string, len(rf.Tenants))
	for i, raw := range rf.Tenants {
		var rt RegistryTenant
		if err := json.Unmarshal(raw, &rt); err != nil {
			skipped = append(skipped, Skipped{Entry: i, Name: looseName(raw), Reason: "does not decode: " + err.Error()})
			continue
		}
		if err := rt.Tenant().Check(); err != nil {
			skipped = append(skipped, Skipped{Entry: i, Name: rt.Name, Reason: err.Error()})
			continue
		}
		if j, dup := names[rt.Name]; dup {
			skipped = append(skipped, Skipped{Entry: i, Name: rt.Name, Reason: fmt.Sprintf("%v: name already used by entry %d", ErrDuplicateTenant, j)})
			continue
		}
		if other, dup := indexes[rt.NetworkIndex]; dup {
			skipped = append(skipped, Skipped{Entry: i, Name: rt.Name, Reason: fmt.Sprintf("%v: network index %d already used by tenant %q", ErrDuplicateTenant, rt.NetworkIndex, other)})
			continue
		}
		names[rt.Name] = i
		indexes[rt.NetworkIndex] = rt.Name
		reg.Tenants = append(reg.Tenants, rt)
	}
	return reg, skipped, nil
}

// looseName digs a printable name out of an entry that does not decode, for the log line.
func looseName(raw json.RawMessage) string {
	var v struct {
		Name any `json:"name"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	if s, ok := v.Name.(string); ok {
		return s
	}
	return ""
}

// CheckRegistry returns an error unless r is a registry ReadRegistry would return in full: the current version,
// every tenant valid, names and network indexes unique.
func CheckRegistry(r Registry) error {
	if r.Version != RegistryVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrRegistryVersion, r.Version, RegistryVersion)
	}
	names := make(map[string]bool, len(r.Tenants))
	indexes := make(map[int]string, len(r.Tenants))
	for _, rt := range r.Tenants {
		if err := rt.Tenant().Check(); err != nil {
			return err
		}
		if names[rt.Name] {
			return fmt.Errorf("%w: name %q", ErrDuplicateTenant, rt.Name)
		}
		if other, dup := indexes[rt.NetworkIndex]; dup {
			return fmt.Errorf("%w: tenants %q and %q share network index %d", ErrDuplicateTenant, other, rt.Name, rt.NetworkIndex)
		}
		names[rt.Name] = true
		indexes[rt.NetworkIndex] = rt.Name
	}
	return nil
}

// WriteRegistry replaces the boot registry at path with r, atomically: it writes a temporary file in the same
// directory, syncs it, renames it over path and syncs the directory, so a reader (or a crash) sees the old file or
// the new one, never a mix. An invalid r (see CheckRegistry) is refused and nothing is written. The directory must
// exist (packaging creates /etc/bitbuilder). The file is mode 0644.
func WriteRegistry(path string, r Registry) error {
	if err := CheckRegistry(r); err != nil {
		return fmt.Errorf("write boot registry: %w", err)
	}
	if r.Tenants == nil {
		r.Tenants = []RegistryTenant{}
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write boot registry: %w", err)
	}
	data = append(data, '\n')

	if err := atomicfile.WriteFile(path, data, atomicfile.Options{Mode: 0o644}); err != nil {
		return fmt.Errorf("write boot registry: %w", err)
	}
	return nil
}
