package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/varlink/go/varlink"

	vn "github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// Exit codes of bbctl. They are documented in the package doc and in `bbctl help`.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitInvalid     = 4
	ExitPermission  = 5
	ExitUnreachable = 6
	ExitConflict    = 7
)

// Sentinel errors, one per exit code above 2; the typed errors below match them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrInvalid     = errors.New("invalid")
	ErrPermission  = errors.New("permission denied")
	ErrUnreachable = errors.New("daemon unreachable")
	ErrConflict    = errors.New("conflict")
)

// UsageError is a mistake in the command line. The daemon was not contacted.
type UsageError struct {
	// Command is the command whose usage was wrong, for example "tenant create".
	Command string
	// Message says what was wrong.
	Message string
}

func (e *UsageError) Error() string { return e.Message }

func usagef(cmd, format string, args ...any) error {
	return &UsageError{Command: cmd, Message: fmt.Sprintf(format, args...)}
}

// RemoteError is an error reply of the daemon (or a failure to talk to it), turned into a
// message for people. Kind says which class of failure it is; Varlink is the Varlink error
// name when the daemon replied with one; Cause is the error of the bindings (for example
// *iobitbuildertenant.NoSuchTenant), reachable with errors.As.
type RemoteError struct {
	Kind    error
	Varlink string
	Message string
	Cause   error
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the binding's error.
func (e *RemoteError) Unwrap() error { return e.Cause }

// Is matches the sentinel of the error's class.
func (e *RemoteError) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// ValidationError says that template validation found errors (exit code 1).
type ValidationError struct {
	Errors int
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("validation found %d %s", e.Errors, plural(e.Errors, "error", "errors"))
}

// WaitError says that a --wait ended without reaching what it waited for: the tenant or a
// machine failed, the tenant went away, or the time ran out (exit code 1).
type WaitError struct {
	// Tenant is the tenant waited for.
	Tenant string
	// Reason says what happened, or what was not reached in time.
	Reason string
}

func (e *WaitError) Error() string { return fmt.Sprintf("tenant %q: %s", e.Tenant, e.Reason) }

// reportedError is the first of several failures of a command that acts on several names
// (tenant stop a b c): each was printed when it happened; the first decides the exit code.
type reportedError struct {
	first error
}

func (e *reportedError) Error() string { return e.first.Error() }
func (e *reportedError) Unwrap() error { return e.first }

// failures collects the errors of a command that acts on several names in turn. With
// several names each is printed as it happens, so that one failure does not hide the
// next; with one name its error is returned as any command's.
type failures struct {
	w       io.Writer
	several bool
	json    bool
	first   error
}

func (f *failures) add(err error) {
	if f.first == nil {
		f.first = err
	}
	if f.several {
		printError(f.w, err, f.json)
	}
}

// err is the command's result.
func (f *failures) err() error {
	if f.first == nil || !f.several {
		return f.first
	}
	return &reportedError{first: f.first}
}

// ExitCode returns the exit code for err.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrInvalid):
		return ExitInvalid
	case errors.Is(err, ErrPermission):
		return ExitPermission
	case errors.Is(err, ErrUnreachable):
		return ExitUnreachable
	case errors.Is(err, ErrConflict):
		return ExitConflict
	default:
		return ExitFailure
	}
}

func remote(kind error, name string, cause error, format string, args ...any) *RemoteError {
	return &RemoteError{Kind: kind, Varlink: name, Cause: cause, Message: fmt.Sprintf(format, args...)}
}

// fromCall turns an error of a call of method (for example "io.bitbuilder.Tenant.Get") into a
// typed error with a clear message. This is the one table from Varlink errors to bbctl's
// errors and exit codes.
func fromCall(err error, method, address string) error {
	if err == nil {
		return nil
	}
	const (
		tn = "io.bitbuilder.Tenant."
		tm = "io.bitbuilder.Template."
		nw = "io.bitbuilder.Network."
	)
	switch e := err.(type) {
	// io.bitbuilder.Tenant
	case *vt.NoSuchTenant:
		return remote(ErrNotFound, tn+"NoSuchTenant", e, "tenant %q not found", e.Name)
	case *vt.NoSuchMachine:
		return remote(ErrNotFound, tn+"NoSuchMachine", e, "tenant %q has no machine %q", e.Name, e.Machine)
	case *vt.NoSuchUser:
		return remote(ErrNotFound, tn+"NoSuchUser", e, "tenant %q has no user %q", e.Name, e.User)
	case *vt.MachineNameInUse:
		return remote(ErrConflict, tn+"MachineNameInUse", e, "invalid %s: the machine name %q is used by tenant %q", flagForField(e.Field), e.MachineName, e.Tenant)
	case *vt.TenantExists:
		return remote(ErrConflict, tn+"TenantExists", e, "tenant %q exists already", e.Name)
	case *vt.InvalidName:
		return remote(ErrInvalid, tn+"InvalidName", e, "invalid name %q: %s", e.Name, e.Reason)
	case *vt.InvalidField:
		return remote(ErrInvalid, tn+"InvalidField", e, "invalid %s: %s", flagForField(e.Field), e.Reason)
	case *vt.NetworkIndexInUse:
		return remote(ErrConflict, tn+"NetworkIndexInUse", e, "network index %d is used by tenant %q", e.NetworkIndex, e.Tenant)
	case *vt.NoFreeNetworkIndex:
		return remote(nil, tn+"NoFreeNetworkIndex", e, "every network index from %d to %d is in use", e.Minimum, e.Maximum)
	case *vt.RevisionMismatch:
		return remote(ErrConflict, tn+"RevisionMismatch", e, "tenant %q changed: it is at revision %d, not %d", e.Name, e.Actual, e.Expected)
	case *vt.RevisionCompacted:
		return remote(nil, tn+"RevisionCompacted", e, "revision %d is older than the oldest retained change (%d): list again and watch from there", e.Revision, e.OldestRevision)
	case *vt.WatchOverflow:
		return remote(nil, tn+"WatchOverflow", e, "the watch fell behind after revision %d", e.Revision)
	case *vt.NoSuchTemplate:
		return remote(ErrNotFound, tn+"NoSuchTemplate", e, "template %q not found", e.Template)
	case *vt.StorageFailure:
		return remote(nil, tn+"StorageFailure", e, "the daemon could not read or write its state: %s", e.Message)

	// io.bitbuilder.Template
	case *vm.NoSuchTemplate:
		return remote(ErrNotFound, tm+"NoSuchTemplate", e, "template %q not found", e.Name)
	case *vm.NoSuchRule:
		return remote(ErrNotFound, tm+"NoSuchRule", e, "the validator has no rule %q (bbctl template rules lists them)", e.Rule)
	case *vm.TemplateExists:
		return remote(ErrConflict, tm+"TemplateExists", e, "template %q exists already", e.Name)
	case *vm.InvalidName:
		return remote(ErrInvalid, tm+"InvalidName", e, "invalid name %q: %s", e.Name, e.Reason)
	case *vm.InvalidField:
		return remote(ErrInvalid, tm+"InvalidField", e, "invalid %s: %s", flagForField(e.Field), e.Reason)
	case *vm.FetchFailed:
		return remote(nil, tm+"FetchFailed", e, "could not fetch %s: %s", e.Url, e.Message)
	case *vm.NoSuchRef:
		return remote(ErrNotFound, tm+"NoSuchRef", e, "%s has no ref or commit %q", e.Url, e.Ref)
	case *vm.InvalidMetadata:
		return remote(ErrInvalid, tm+"InvalidMetadata", e, "invalid metadata in %s: %s", e.Path, e.Message)
	case *vm.ValidationFailed:
		return remote(ErrInvalid, tm+"ValidationFailed", e, "template %q at commit %s does not validate:\n%s", e.Name, shortCommit(e.Commit), findingLines(e.Findings))
	case *vm.TemplateInUse:
		return remote(ErrConflict, tm+"TemplateInUse", e, "template %q is used by %s", e.Name, quoteList(e.Tenants))
	case *vm.StorageFailure:
		return remote(nil, tm+"StorageFailure", e, "the daemon could not read or write its state: %s", e.Message)

	// io.bitbuilder.Network
	case *vn.NoSuchTenant:
		return remote(ErrNotFound, nw+"NoSuchTenant", e, "tenant %q not found", e.Name)
	case *vn.InvalidField:
		return remote(ErrInvalid, nw+"InvalidField", e, "invalid %s: %s", flagForField(e.Field), e.Reason)
	case *vn.NoSuchPeer:
		return remote(ErrNotFound, nw+"NoSuchPeer", e, "peer %q not found", e.PublicKey)
	case *vn.NetworkConflict:
		return remote(ErrConflict, nw+"NetworkConflict", e, "subnet %s conflicts with %s", e.Subnet, e.Conflict)
	case *vn.RenderFailed:
		return remote(nil, nw+"RenderFailed", e, "could not render %s: %s", e.File, e.Message)
	case *vn.NetworkdUnavailable:
		return remote(nil, nw+"NetworkdUnavailable", e, "systemd-networkd is unavailable: %s", e.Message)
	case *vn.StorageFailure:
		return remote(nil, nw+"StorageFailure", e, "the daemon could not read or write its state: %s", e.Message)

	// org.varlink.service
	case *varlink.InvalidParameter:
		if f := flagForField(e.Parameter); f != e.Parameter {
			return remote(ErrInvalid, "org.varlink.service.InvalidParameter", e, "invalid %s: the daemon refused the value", f)
		}
		return remote(ErrInvalid, "org.varlink.service.InvalidParameter", e, "invalid parameter %q in the call of %s", e.Parameter, method)
	case *varlink.MethodNotImplemented:
		return remote(nil, "org.varlink.service.MethodNotImplemented", e, "the daemon does not implement %s yet", method)
	case *varlink.MethodNotFound:
		return remote(nil, "org.varlink.service.MethodNotFound", e, "the daemon has no method %s (is it older than bbctl?)", method)
	case *varlink.InterfaceNotFound:
		return remote(nil, "org.varlink.service.InterfaceNotFound", e, "the daemon does not serve %s (is it older than bbctl?)", e.Interface)
	case *varlink.Error:
		switch e.Name {
		case "org.varlink.service.PermissionDenied":
			return remote(ErrPermission, e.Name, e, "permission denied: %s needs root or the daemon's admin group", method)
		case "org.varlink.service.ExpectedMore":
			return remote(nil, e.Name, e, "the daemon expects the more flag for %s", method)
		}
		return remote(nil, e.Name, e, "%s failed: %s", method, e.Name)
	}
	return transportError(err, address)
}

// transportError classifies errors that are not Varlink error replies: failures to connect,
// lost connections, timeouts.
func transportError(err error, address string) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return remote(nil, "", fmt.Errorf("%w: %w", errTimeout, err), "timed out waiting for the daemon at %s", address)
	case errors.Is(err, context.Canceled):
		return remote(nil, "", err, "interrupted")
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return remote(ErrPermission, "", err, "permission denied connecting to %s", address)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return remote(ErrUnreachable, "", err, "cannot reach the daemon: %s does not exist (is bitbuilderd running?)", address)
	case errors.Is(err, syscall.ECONNREFUSED):
		return remote(ErrUnreachable, "", err, "cannot reach the daemon: connection to %s refused (is bitbuilderd running?)", address)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return remote(ErrUnreachable, "", err, "lost the connection to the daemon at %s", address)
	}
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return remote(ErrUnreachable, "", err, "cannot reach the daemon at %s: %v", address, ne.Err)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return remote(ErrUnreachable, "", err, "cannot reach the daemon at %s: %v", address, pe.Err)
	}
	return remote(nil, "", err, "talking to the daemon at %s: %v", address, err)
}

// isEmptyList reports whether err is the "no items" answer of a list method: NoSuchTenant or
// NoSuchTemplate with an empty name, as systemd's enumerations do.
func isEmptyList(err error) bool {
	var (
		t1 *vt.NoSuchTenant
		t2 *vm.NoSuchTemplate
		t3 *vn.NoSuchTenant
	)
	switch {
	case errors.As(err, &t1):
		return t1.Name == ""
	case errors.As(err, &t2):
		return t2.Name == ""
	case errors.As(err, &t3):
		return t3.Name == ""
	}
	return false
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 0 {
		return "tenants"
	}
	return strings.Join(q, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
