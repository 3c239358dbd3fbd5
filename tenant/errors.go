package tenant

import (
	"errors"
	"fmt"
)

// Sentinel errors; the typed errors below wrap or match them.
var (
	// ErrNotFound: no tenant of that name.
	ErrNotFound = errors.New("no such tenant")
	// ErrExists: a tenant of that name exists already (possibly still being deleted).
	ErrExists = errors.New("tenant exists")
	// ErrInvalid is matched by *NameError and *FieldError.
	ErrInvalid = errors.New("invalid tenant")
	// ErrIndexInUse is matched by *IndexInUseError.
	ErrIndexInUse = errors.New("network index in use")
	// ErrNoFreeIndex: every network index of the range is taken.
	ErrNoFreeIndex = errors.New("no free network index")
	// ErrRevisionMismatch is matched by *RevisionError.
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrNoSuchTemplate is matched by *TemplateError.
	ErrNoSuchTemplate = errors.New("no such template")
	// ErrTemplateRole is wrapped by a TemplateResolver when a template's type does not
	// match the role a tenant uses it in; Create and Update report it as a FieldError.
	ErrTemplateRole = errors.New("template type does not match its role")
	// ErrMachineNameInUse is matched by *MachineNameInUseError.
	ErrMachineNameInUse = errors.New("machine name in use")
	// ErrNoSuchMachine is matched by *MachineError.
	ErrNoSuchMachine = errors.New("no such machine")
	// ErrNoSuchPeer is matched by *PeerError.
	ErrNoSuchPeer = errors.New("no such peer")
	// ErrNoSuchUser is matched by *UserError (users.go).
	ErrNoSuchUser = errors.New("no such user")
)

// NameError says why a tenant name is refused.
type NameError struct {
	Name, Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("invalid tenant name %q: %s", e.Name, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *NameError) Is(target error) bool { return target == ErrInvalid }

// FieldError says which field of a tenant has an unacceptable value and why.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// IndexInUseError names the tenant that holds a network index.
type IndexInUseError struct {
	Index  int
	Tenant string
}

func (e *IndexInUseError) Error() string {
	return fmt.Sprintf("network index %d is used by tenant %q", e.Index, e.Tenant)
}

// Is makes errors.Is(err, ErrIndexInUse) true.
func (e *IndexInUseError) Is(target error) bool { return target == ErrIndexInUse }

// NoFreeIndexError gives the exhausted range.
type NoFreeIndexError struct {
	Min, Max int
}

func (e *NoFreeIndexError) Error() string {
	return fmt.Sprintf("every network index from %d to %d is in use", e.Min, e.Max)
}

// Is makes errors.Is(err, ErrNoFreeIndex) true.
func (e *NoFreeIndexError) Is(target error) bool { return target == ErrNoFreeIndex }

// RevisionError reports an optimistic-concurrency conflict.
type RevisionError struct {
	Name             string
	Expected, Actual uint64
}

func (e *RevisionError) Error() string {
	return fmt.Sprintf("tenant %q is at revision %d, not %d", e.Name, e.Actual, e.Expected)
}

// Is makes errors.Is(err, ErrRevisionMismatch) true.
func (e *RevisionError) Is(target error) bool { return target == ErrRevisionMismatch }

// TemplateError names a template the registry does not have.
type TemplateError struct {
	Template string
	Err      error
}

func (e *TemplateError) Error() string {
	return fmt.Sprintf("template %q: %v", e.Template, e.Err)
}

// Is makes errors.Is(err, ErrNoSuchTemplate) true.
func (e *TemplateError) Is(target error) bool { return target == ErrNoSuchTemplate }

// PeerError names a WireGuard peer a tenant does not have.
type PeerError struct {
	Tenant, PublicKey string
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("tenant %q has no peer %q", e.Tenant, e.PublicKey)
}

// Is makes errors.Is(err, ErrNoSuchPeer) true.
func (e *PeerError) Is(target error) bool { return target == ErrNoSuchPeer }

// UserError names a user a tenant does not have.
type UserError struct {
	Tenant, User string
}

func (e *UserError) Error() string { return fmt.Sprintf("tenant %q has no user %q", e.Tenant, e.User) }

// Is makes errors.Is(err, ErrNoSuchUser) true.
func (e *UserError) Is(target error) bool { return target == ErrNoSuchUser }
