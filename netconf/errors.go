package netconf

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error of this package wraps one of them.
var (
	// ErrInvalidTemplate: the template itself is broken (metadata, file names, syntax, an unknown % sequence).
	ErrInvalidTemplate = errors.New("invalid network template")
	// ErrUnknownVariable: a file uses ${VAR} and no value or default is given for it.
	ErrUnknownVariable = errors.New("unknown template variable")
	// ErrUnusedVariable: a value is given for a variable no file uses (most likely a typo).
	ErrUnusedVariable = errors.New("unused template variable")
	// ErrInvalidValue: a value breaks a rule (injection, or a WireGuard parameter that does not parse).
	ErrInvalidValue = errors.New("invalid template value")
	// ErrIndexOutOfRange: the tenant's network index is outside the configured range.
	ErrIndexOutOfRange = errors.New("network index out of range")
	// ErrNoSystemBus: there is no system D-Bus to ask systemd-networkd to reload.
	ErrNoSystemBus = errors.New("no system bus")
	// ErrReload: systemd-networkd's Reload failed.
	ErrReload = errors.New("systemd-networkd reload failed")
	// ErrWrite: writing, removing or reading a file failed.
	ErrWrite = errors.New("network file I/O failed")
)

// TemplateError names the template file (and line, when known) and what is wrong.
type TemplateError struct {
	File string // file in the template ("metadata.json", "10-bridge.netdev")
	Line int    // 1-based; 0 when not about a line
	Msg  string
}

func (e *TemplateError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("network template %s line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("network template %s: %s", e.File, e.Msg)
}

// Unwrap returns ErrInvalidTemplate.
func (e *TemplateError) Unwrap() error { return ErrInvalidTemplate }

// VariableError names a variable that has no value (ErrUnknownVariable) or is not used (ErrUnusedVariable).
type VariableError struct {
	Name string
	File string // where it is used; "" for an unused variable
	Line int
	Err  error // ErrUnknownVariable or ErrUnusedVariable
}

func (e *VariableError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("variable ${%s}: given a value but used by no file of the template", e.Name)
	}
	return fmt.Sprintf("variable ${%s} in %s line %d: no value given and no default", e.Name, e.File, e.Line)
}

// Unwrap returns the sentinel.
func (e *VariableError) Unwrap() error { return e.Err }

// ValueError names a variable (or peer field) whose value breaks a rule.
type ValueError struct {
	Name  string // variable name, or "peer[N].Field"
	Value string
	Rule  string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("value %q for %s: %s", e.Value, e.Name, e.Rule)
}

// Unwrap returns ErrInvalidValue.
func (e *ValueError) Unwrap() error { return ErrInvalidValue }

// IndexError reports an index outside the configured range.
type IndexError struct{ Index, Min, Max int }

func (e *IndexError) Error() string {
	return fmt.Sprintf("network index %d: outside the allowed range %d..%d", e.Index, e.Min, e.Max)
}

// Unwrap returns ErrIndexOutOfRange.
func (e *IndexError) Unwrap() error { return ErrIndexOutOfRange }
