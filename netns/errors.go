package netns

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors. Every error returned by this package wraps one of them, so a caller can test the class with
// errors.Is and read the details with errors.As on the typed errors below.
var (
	// ErrInvalidConfig: a Config field breaks a rule (see ConfigError).
	ErrInvalidConfig = errors.New("invalid netns config")
	// ErrInvalidSpec: a Spec field breaks a rule (see SpecError); nothing was changed.
	ErrInvalidSpec = errors.New("invalid tenant network spec")
	// ErrIndexOutOfRange: Spec.Index is outside Config.MinIndex..Config.MaxIndex; nothing was changed.
	ErrIndexOutOfRange = errors.New("tenant network index out of range")
	// ErrForeignLink: a link with one of the tenant's deterministic names exists but BitBuilder did not create it for
	// this tenant (its alias is not "bitbuilder:<tenant>"). Ensure refuses the whole tenant and changes nothing.
	ErrForeignLink = errors.New("link not owned by this tenant")
	// ErrConflict: a host route or address that is not on one of the tenant's own links overlaps the tenant's
	// prefixes; nothing was changed.
	ErrConflict = errors.New("tenant network conflicts with the host")
	// ErrLinkUnsupported: the kernel cannot create a link kind the Spec asks for (wireguard, vlan on this kernel).
	// The rest of the tenant's network is still brought up.
	ErrLinkUnsupported = errors.New("link kind not supported by this kernel")
	// ErrNoUplink: VXLAN or VLAN was asked for but no uplink (underlay) device is configured or found.
	ErrNoUplink = errors.New("no uplink device")
	// ErrHost: a netlink, namespace or sysctl operation failed (see OpError).
	ErrHost = errors.New("host network operation failed")
)

// ConfigError names the Config field and the rule it breaks.
type ConfigError struct {
	Field string
	Rule  string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("netns config: %s: %s", e.Field, e.Rule) }

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// SpecError names the Spec field and the rule it breaks.
type SpecError struct {
	Field string
	Value string
	Rule  string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("tenant network spec: %s %q: %s", e.Field, e.Value, e.Rule)
}

// Unwrap returns ErrInvalidSpec.
func (e *SpecError) Unwrap() error { return ErrInvalidSpec }

// IndexError reports an index outside the configured range.
type IndexError struct {
	Index, Min, Max int
}

func (e *IndexError) Error() string {
	return fmt.Sprintf("tenant network index %d: outside the allowed range %d..%d", e.Index, e.Min, e.Max)
}

// Unwrap returns ErrIndexOutOfRange.
func (e *IndexError) Unwrap() error { return ErrIndexOutOfRange }

// ForeignLinkError names a link that has a tenant's name but is not marked as that tenant's.
type ForeignLinkError struct {
	Tenant    string
	Link      string
	Namespace string // "" for the host namespace
	Alias     string // the alias found on the link ("" when none)
}

func (e *ForeignLinkError) Error() string {
	where := "host namespace"
	if e.Namespace != "" {
		where = "namespace " + e.Namespace
	}
	alias := "no alias"
	if e.Alias != "" {
		alias = fmt.Sprintf("alias %q", e.Alias)
	}
	return fmt.Sprintf("link %s in the %s already exists with %s, not %q: refusing to take it over for tenant %s",
		e.Link, where, alias, Mark(e.Tenant), e.Tenant)
}

// Unwrap returns ErrForeignLink.
func (e *ForeignLinkError) Unwrap() error { return ErrForeignLink }

// ConflictError names the tenant prefix and the host route or address that overlaps it.
type ConflictError struct {
	Tenant string
	Prefix netip.Prefix // the tenant's prefix
	What   string       // "route" or "address"
	Other  netip.Prefix // the conflicting route destination or address
	Link   string       // the link the route or address is on ("" for none)
}

func (e *ConflictError) Error() string {
	on := ""
	if e.Link != "" {
		on = " on link " + e.Link
	}
	return fmt.Sprintf("tenant %s network %s overlaps host %s %s%s, which is not the tenant's",
		e.Tenant, e.Prefix, e.What, e.Other, on)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// UnsupportedLinkError reports a link kind the kernel cannot create. Err is the kernel's error (an errno such as
// EOPNOTSUPP), so errors.Is(err, syscall.EOPNOTSUPP) works too.
type UnsupportedLinkError struct {
	Kind string
	Link string
	Err  error
}

func (e *UnsupportedLinkError) Error() string {
	return fmt.Sprintf("%s link %s: not supported by this kernel (%s)", e.Kind, e.Link, errnoName(e.Err))
}

// Unwrap returns ErrLinkUnsupported and the kernel's error.
func (e *UnsupportedLinkError) Unwrap() []error { return []error{ErrLinkUnsupported, e.Err} }

// OpError is a failed host operation: what was done to which object, and the underlying error.
type OpError struct {
	Op        string // e.g. "create bridge", "add address 10.3.0.1/24"
	Link      string // "" when the operation is not about a link
	Namespace string // "" for the host namespace
	Err       error
}

func (e *OpError) Error() string {
	s := e.Op
	if e.Link != "" {
		s += " " + e.Link
	}
	if e.Namespace != "" {
		s += " in namespace " + e.Namespace
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns ErrHost and the underlying error.
func (e *OpError) Unwrap() []error { return []error{ErrHost, e.Err} }
