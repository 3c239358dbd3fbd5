package units

import "errors"

// Errors of package units. Functions wrap them with %w and a message that names the offending value, so callers
// test with errors.Is and show the message as it is.
var (
	// ErrInvalidName: a tenant name is not a hostname label (lower-case a-z, 0-9 and "-", 1 to 63 characters,
	// neither starting nor ending with "-").
	ErrInvalidName = errors.New("invalid tenant name")
	// ErrInvalidIndex: a network index is outside 1..MaxNetworkIndex.
	ErrInvalidIndex = errors.New("invalid network index")
	// ErrInvalidExtension: an extension name is not a plain file name of [A-Za-z0-9_.-] not starting with ".",
	// or is listed twice.
	ErrInvalidExtension = errors.New("invalid extension")
	// ErrInvalidConfig: a Config field is not an absolute, clean path of plain characters.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrInvalidPath: a path cannot be turned into a unit name (it has a ".." component, is empty or too long).
	ErrInvalidPath = errors.New("invalid path")
	// ErrNameTooLong: a unit or machine name derived from a tenant would exceed what systemd accepts.
	ErrNameTooLong = errors.New("name too long")
	// ErrInvalidUnit: a Unit's name is not a plain file name, so it cannot be written into a unit directory.
	ErrInvalidUnit = errors.New("invalid unit")
	// ErrDuplicateTenant: two tenants have the same name or network index, or their units would collide.
	ErrDuplicateTenant = errors.New("duplicate tenant")

	// ErrRegistryMissing: the boot registry file does not exist (it also matches fs.ErrNotExist).
	ErrRegistryMissing = errors.New("boot registry missing")
	// ErrRegistryEmpty: the boot registry file is empty.
	ErrRegistryEmpty = errors.New("boot registry empty")
	// ErrRegistryTruncated: the boot registry file ends in the middle of its JSON document.
	ErrRegistryTruncated = errors.New("boot registry truncated")
	// ErrRegistryMalformed: the boot registry file is not the JSON document this package writes.
	ErrRegistryMalformed = errors.New("boot registry malformed")
	// ErrRegistryVersion: the boot registry has a format version this package does not know.
	ErrRegistryVersion = errors.New("boot registry version unsupported")
)
