// Package cli implements bbctl, the command-line client of bitbuilderd. It is a thin layer
// over the io.bitbuilder.Tenant, io.bitbuilder.Template and io.bitbuilder.Network Varlink
// interfaces: every command is one call (or one streamed call) through the generated bindings
// in api/, printed as a table or a key: value block for people, or as JSON with --json.
//
// # Machine output
//
// With --json a command prints the reply parameters exactly as the daemon sent them, as
// `varlinkctl call` would; commands over list methods print a JSON array of the replies, as
// `varlinkctl call --more --collect` does; tenant watch prints one reply per line (JSON lines).
// Progress of template add and update always goes to standard error. machine list prints an
// array of {"tenant", "machine"} objects, the machine as the daemon sent it. tenant start,
// stop and delete given several names print an array of the replies that succeeded.
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
//	   TemplateInUse, NetworkConflict
//
// The mapping from Varlink errors to these codes and to typed Go errors lives in errors.go.
package cli
