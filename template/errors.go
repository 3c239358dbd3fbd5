package template

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error the Registry returns matches (errors.Is) at
// most one of the first group, which map one to one onto the Varlink errors
// of io.bitbuilder.Template:
//
//	ErrNotFound         NoSuchTemplate
//	ErrExists           TemplateExists
//	ErrInvalidName      InvalidName      (*NameError)
//	ErrInvalidField     InvalidField     (*FieldError)
//	ErrFetch            FetchFailed      (*FetchError)
//	ErrNoSuchRef        NoSuchRef        (*RefError)
//	ErrInvalidMetadata  InvalidMetadata  (*MetadataError)
//	ErrValidation       ValidationFailed (*ValidationError)
//	ErrInUse            TemplateInUse    (*InUseError)
//	ErrStorage          StorageFailure
//	ErrUnsafeTree       InvalidField "commit" (*TreeError: the commit cannot be checked out safely)
//	ErrBusy             another operation on the same template is running
var (
	ErrNotFound        = errors.New("no such template")
	ErrExists          = errors.New("template exists")
	ErrInvalidName     = errors.New("invalid template name")
	ErrInvalidField    = errors.New("invalid field")
	ErrFetch           = errors.New("fetch failed")
	ErrNoSuchRef       = errors.New("no such ref")
	ErrInvalidMetadata = errors.New("invalid metadata.json")
	ErrValidation      = errors.New("template does not validate")
	ErrInUse           = errors.New("template in use")
	ErrStorage         = errors.New("template cache storage failure")
	ErrUnsafeTree      = errors.New("tree cannot be checked out safely")
	ErrBusy            = errors.New("template busy")
)

// Kinds of *TreeError, matched with errors.Is in addition to ErrUnsafeTree.
var (
	ErrUnsafeName = errors.New("unsafe file name")             // "..", ".", "/", ".git", empty, invalid UTF-8
	ErrUnsafeMode = errors.New("unsupported file mode")        // setuid/setgid or any mode git does not write
	ErrSubmodule  = errors.New("submodules are not supported") // gitlink entries
	ErrTooLarge   = errors.New("size limit exceeded")          // a file, the total, the entry count or the fetch
	ErrDuplicate  = errors.New("duplicate tree entry")
	ErrLayout     = errors.New("layout directory conflicts with the tree")
)

// NameError is a template name that breaks the naming rule.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("invalid template name %q: %s", e.Name, e.Reason)
}

// Is matches ErrInvalidName.
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

// FieldError is an argument the registry does not accept.
type FieldError struct {
	Field  string // "url", "ref", "commit", "subdir", "target", "dirs[2].path", ...
	Reason string
}

func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

// Is matches ErrInvalidField.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidField }

// FetchError is a failure to talk to the remote or to store what it sent.
type FetchError struct {
	URL string
	Err error
}

func (e *FetchError) Error() string { return fmt.Sprintf("fetch %s: %s", RedactURL(e.URL), e.Reason()) }

// Reason is what went wrong, with what RedactURL removes from URL removed from its text too (go-git and Go's HTTP
// client name the URL in theirs): what callers show instead of Err's own text.
func (e *FetchError) Reason() string { return redactText(fmt.Sprint(e.Err), e.URL) }

// Is matches ErrFetch.
func (e *FetchError) Is(target error) bool { return target == ErrFetch }

// Unwrap returns the cause.
func (e *FetchError) Unwrap() error { return e.Err }

// RefError is a ref or commit that the repository does not have.
type RefError struct {
	URL string
	Ref string
	// Deleted is true when the ref existed at the last fetch and the remote
	// no longer has it (Update of a deleted branch or tag).
	Deleted bool
	// Reason is a short explanation.
	Reason string
}

func (e *RefError) Error() string {
	return fmt.Sprintf("ref %q at %s: %s", e.Ref, RedactURL(e.URL), e.Reason)
}

// Is matches ErrNoSuchRef.
func (e *RefError) Is(target error) bool { return target == ErrNoSuchRef }

// MetadataError is a missing or invalid metadata.json; Err is the
// *metadata.Error when the file exists but does not parse.
type MetadataError struct {
	Commit string
	Path   string // "metadata.json"
	Err    error
}

func (e *MetadataError) Error() string {
	return fmt.Sprintf("commit %s: %s: %v", short(e.Commit), e.Path, e.Err)
}

// Is matches ErrInvalidMetadata.
func (e *MetadataError) Is(target error) bool { return target == ErrInvalidMetadata }

// Unwrap returns the cause.
func (e *MetadataError) Unwrap() error { return e.Err }

// ValidationError is a commit the injected validator found errors in.
type ValidationError struct {
	Name   string
	Commit string
	Errors []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("template %s commit %s does not validate: %s", e.Name, short(e.Commit), strings.Join(e.Errors, "; "))
}

// Is matches ErrValidation.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// InUseError is a Remove refused because tenants use the template.
type InUseError struct {
	Name    string
	Tenants []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("template %s is used by tenants %s", e.Name, strings.Join(e.Tenants, ", "))
}

// Is matches ErrInUse.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// TreeError is an entry of a commit's tree that cannot be checked out
// safely, or a limit it exceeds. Kind is one of ErrUnsafeName,
// ErrUnsafeMode, ErrSubmodule, ErrTooLarge, ErrDuplicate, ErrLayout.
type TreeError struct {
	Commit string
	Path   string // slash-separated, relative to the tree root; may contain invalid UTF-8, quoted by Error
	Kind   error
	Reason string
}

func (e *TreeError) Error() string {
	return fmt.Sprintf("commit %s: %q: %v: %s", short(e.Commit), e.Path, e.Kind, e.Reason)
}

// Is matches ErrUnsafeTree and Kind.
func (e *TreeError) Is(target error) bool { return target == ErrUnsafeTree || target == e.Kind }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
