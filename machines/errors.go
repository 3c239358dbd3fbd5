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
