// Package cli implements bbctl, the command-line client of bitbuilderd. It is a thin layer
// over the io.bitbuilder.Tenant, io.bitbuilder.Template and io.bitbuilder.Network Varlink
// interfaces: every command is one call (or one streamed call) through the generated bindings
// in api/, printed as a table or a key: value block for people, or as JSON with --json.
//
// # Machine output
//
// With --json a command prints the records themselves: the tenant, template or network as the
// daemon sent it (not wrapped in its reply parameter), an array of them for list commands and
// for a get of several names, nothing for a deletion (tenant delete, template remove), and one
// event per line (JSON lines) for tenant watch. machine list prints the machine records, each
// with its tenant's name added as "tenant". Progress of template add and update always goes to
// standard error. With --json an error is one JSON object on standard error (errorJSON in
// conventions.go): {"error": the Varlink error name, or bbctl.UsageError,
// bbctl.DaemonUnreachable, bbctl.TenantRunning, ...; "parameters": the error's parameters;
// "message": what bbctl prints without --json}; the exit code is the same.
//
// # Conventions
//
// --help (-h) and --version work on every command and group and exit 0. A mistyped command
// word or flag gets a "did you mean" (conventions.go); flags are spelled --name in errors;
// list has the alias ls, delete and remove have rm. An error the daemon reports for an API
// field names the flag that set it (--memory, not resources.memoryBytes; fieldFlags). tenant
// delete refuses a tenant whose desired state is running without --force, and deletes at the
// revision it checked. The man pages (bbctl.1, bitbuilderd.8) and completion scripts in
// packaging/ are generated from the help text by go generate ./cmd/bbctl (man.go).
//
// # Several names and --wait
//
// tenant start, stop and delete act on each name in turn (machine start, stop and restart on
// each machine), print each failure as it happens and exit with the first failure's code.
// With --wait they then follow each tenant with Tenant.Watch, from the revision of the call's
// reply, until a goal over the tenant's snapshots is met (wait.go): its phase and its machines'
// states. Each change is printed to standard error (not with --json); a failed phase or
// machine ends the wait with exit code 1, as does --timeout (default 5m with --wait); with
// --json the tenant as the wait left it is printed instead of the reply.
//
// # Exit codes
//
//	0  success
//	1  generic failure (also: template validate found errors, a --wait failed or timed out)
//	2  usage error: bad flags or arguments; the daemon was not contacted
//	3  not found: NoSuchTenant, NoSuchMachine, NoSuchTemplate, NoSuchPeer, NoSuchRef
//	4  invalid: InvalidName, InvalidField, InvalidParameter, InvalidMetadata, ValidationFailed
//	5  permission denied: org.varlink.service.PermissionDenied, or EACCES connecting to the socket
//	6  daemon unreachable: socket missing, connection refused, connection lost
//	7  conflict: TenantExists, NetworkIndexInUse, MachineNameInUse, RevisionMismatch, TemplateExists,
//	   TemplateInUse, NetworkConflict; a running tenant deleted without --force
//
// The mapping from Varlink errors to these codes and to typed Go errors lives in errors.go.
package cli
