package validate

import "errors"

// Errors returned by the validator. A compliance problem is never an error: it is a Finding in the Report.
// Errors mean the validation itself could not run (bad arguments, missing tree, cancelled context).
var (
	// ErrUnknownKind is returned for a template kind the validator does not know.
	ErrUnknownKind = errors.New("validate: unknown template kind")
	// ErrUnknownClass is returned for an extension class other than sysext or confext.
	ErrUnknownClass = errors.New("validate: unknown extension class")
	// ErrNotDirectory is returned when the tree to validate is not a directory.
	ErrNotDirectory = errors.New("validate: not a directory")

	// errTooManyHops is returned by the in-root resolver when a path needs more than maxHops symlinks.
	errTooManyHops = errors.New("too many levels of symbolic links")
	// errNotRegular is returned when a file that must be read is not a regular file.
	errNotRegular = errors.New("not a regular file")
	// errTooLarge is returned when a file that must be read is larger than the read limit.
	errTooLarge = errors.New("file larger than the read limit")
)

// ErrInvalidArtifacts is returned by ReadArtifacts for a malformed artifacts.json.
var ErrInvalidArtifacts = errors.New("validate: invalid artifacts.json")

// ErrArtifactMissing is returned by Artifact.Source when the host has none of the artifact's sources.
var ErrArtifactMissing = errors.New("validate: artifact not found on this host")
