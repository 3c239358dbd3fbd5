package machines

import (
	"errors"
	"fmt"
)

// ErrNoBus means there is no system bus, or no systemd on it.
var ErrNoBus = errors.New("no system bus")

// SettingsError says why a template's nspawn settings file was refused.
type SettingsError struct {
	Path   string
	Reason string
}

func (e *SettingsError) Error() string {
	return fmt.Sprintf("nspawn settings %s: %s", e.Path, e.Reason)
}

// UserError says why a user cannot be provisioned: the file (of the template or the machine's root) or
// the field at fault, and the rule. Nothing of the user was written.
type UserError struct {
	User, Path, Reason string
}

func (e *UserError) Error() string { return fmt.Sprintf("user %s: %s: %s", e.User, e.Path, e.Reason) }
