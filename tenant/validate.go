package tenant

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bitbuilder/bitbuilder/internal/names"
)

// MaxNameLength is the longest tenant name: one DNS label.
const MaxNameLength = names.MaxLabelLength

// reservedNames would collide with names BitBuilder or systemd derive for their own use.
var reservedNames = []string{
	"all", "any", "bitbuilder", "default", "host", "init", "kernel", "localhost",
	"none", "root", "self", "system", "user",
}

// ReservedNames returns the names no tenant may have.
func ReservedNames() []string { return slices.Clone(reservedNames) }

// ValidateName checks that name is a lower-case hostname label (names.CheckLabel: 1 to 63 of a-z, 0-9 and '-',
// starting and ending with a letter or digit) and not reserved.
func ValidateName(name string) error {
	var le *names.LabelError
	if errors.As(names.CheckLabel(name), &le) {
		return &NameError{Name: name, Reason: le.Reason()}
	}
	if slices.Contains(reservedNames, name) {
		return &NameError{Name: name, Reason: "reserved"}
	}
	return nil
}

// Limits of resource values.
const (
	MaxCPUs        = 4096
	MinMemoryBytes = 32 << 20
	MinStorage     = 64 << 20
	maxBytes       = 1 << 60
)

func validateResources(r Resources) error {
	switch {
	case math.IsNaN(r.CPUs) || r.CPUs <= 0 || r.CPUs > MaxCPUs:
		return &FieldError{Field: "resources.cpus", Reason: fmt.Sprintf("%v is not in (0, %d]", r.CPUs, MaxCPUs)}
	case math.Round(r.CPUs*100) != r.CPUs*100:
		return &FieldError{Field: "resources.cpus", Reason: fmt.Sprintf("%v has more than two decimals (the CPU quota is set in percent)", r.CPUs)}
	case r.MemoryBytes < MinMemoryBytes || r.MemoryBytes > maxBytes:
		return &FieldError{Field: "resources.memoryBytes", Reason: fmt.Sprintf("%d is not between %d (32 MiB) and 2^60", r.MemoryBytes, MinMemoryBytes)}
	case r.StorageBytes < MinStorage || r.StorageBytes > maxBytes:
		return &FieldError{Field: "resources.storageBytes", Reason: fmt.Sprintf("%d is not between %d (64 MiB) and 2^60", r.StorageBytes, MinStorage)}
	}
	return nil
}

// Roles a template can have in a tenant.
var roles = []string{"infrastructure", "machine", "container", "homed", "network", "sysext", "confext"}

var commitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

func validateLabel(field, s string) error {
	var le *names.LabelError
	if errors.As(names.CheckLabel(s), &le) {
		return &FieldError{Field: field, Reason: "not a hostname label: " + le.Error()}
	}
	return nil
}

func validateTemplates(ts []TemplateUse) error {
	seen := map[string]bool{}
	count := map[string]int{}
	for i, t := range ts {
		f := fmt.Sprintf("templates[%d]", i)
		if !slices.Contains(roles, t.Role) {
			return &FieldError{Field: f + ".role", Reason: fmt.Sprintf("%q is not one of %s", t.Role, strings.Join(roles, ", "))}
		}
		if err := validateLabel(f+".name", t.Name); err != nil {
			return err
		}
		if err := validateLabel(f+".template", t.Template); err != nil {
			return err
		}
		if t.Commit != "" && !commitRe.MatchString(t.Commit) {
			return &FieldError{Field: f + ".commit", Reason: "must be a full 40-digit lower-case hex commit hash"}
		}
		key := t.Role + "/" + t.Name
		if seen[key] {
			return &FieldError{Field: f + ".name", Reason: fmt.Sprintf("%s %q is listed twice", t.Role, t.Name)}
		}
		seen[key] = true
		count[t.Role]++
		if (t.Role == "infrastructure" || t.Role == "network") && count[t.Role] > 1 {
			return &FieldError{Field: f + ".role", Reason: fmt.Sprintf("a tenant has at most one %s template", t.Role)}
		}
	}
	if len(ts) > 256 {
		return &FieldError{Field: "templates", Reason: "more than 256 templates"}
	}
	return nil
}

var paramKeyRe = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,63}$`)

func validateParameters(p map[string]string) error {
	if len(p) > 128 {
		return &FieldError{Field: "parameters", Reason: "more than 128 parameters"}
	}
	for k, v := range p {
		if !paramKeyRe.MatchString(k) {
			return &FieldError{Field: "parameters." + k, Reason: "names are upper case A-Z, 0-9 and _, not starting with a digit, at most 64 characters"}
		}
		if len(v) > 4096 || !utf8.ValidString(v) {
			return &FieldError{Field: "parameters." + k, Reason: "values are valid UTF-8 of at most 4096 bytes"}
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f {
				return &FieldError{Field: "parameters." + k, Reason: fmt.Sprintf("control character %U is not allowed (it could inject lines into unit or network files)", r)}
			}
		}
	}
	return nil
}

var features = []string{FeatureWireGuard, FeatureVXLAN, FeatureVLAN}

func validateFeatures(fs []string) error {
	for i, f := range fs {
		if !slices.Contains(features, f) {
			return &FieldError{Field: fmt.Sprintf("networkFeatures[%d]", i), Reason: fmt.Sprintf("%q is not one of %s", f, strings.Join(features, ", "))}
		}
	}
	return nil
}

func normalizeFeatures(fs []string) []string {
	out := slices.Clone(fs)
	slices.Sort(out)
	return slices.Compact(out)
}
