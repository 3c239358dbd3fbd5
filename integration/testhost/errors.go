package testhost

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Start turns ErrNotRoot and ErrNoRootfs into a skip; New returns them wrapped.
var (
	// ErrNotRoot means the process is not root, so no test host can be booted.
	ErrNotRoot = errors.New("testhost: needs root (CAP_SYS_ADMIN) to boot a systemd test host")
	// ErrNoRootfs means the cached trixie rootfs has not been built on this machine.
	ErrNoRootfs = errors.New("testhost: the cached systemd 257 rootfs is not built: run `bash integration/testhost/prepare.sh` as root")
	// ErrInvalidOptions means an Options field or an argument is unusable; nothing was changed.
	ErrInvalidOptions = errors.New("testhost: invalid options")
	// ErrStopped means the host has been stopped (or its container exited).
	ErrStopped = errors.New("testhost: host is stopped")
	// ErrBoot means the host did not reach `running` or `degraded`; the BootError carries the details.
	ErrBoot = errors.New("testhost: boot failed")
)

// BootError says why a host did not boot, with the tail of its console and journal.
type BootError struct {
	Name    string
	Reason  string
	Console string // tail of systemd-nspawn's output (the container console)
	Journal string // tail of the container's journal, when it could be read
}

func (e *BootError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "testhost: host %s did not boot: %s", e.Name, e.Reason)
	if e.Journal != "" {
		fmt.Fprintf(&b, "\n--- journal tail ---\n%s", e.Journal)
	}
	if e.Console != "" {
		fmt.Fprintf(&b, "\n--- console tail ---\n%s", e.Console)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrBoot) true.
func (e *BootError) Unwrap() error { return ErrBoot }

// NoVariantError means the cached rootfs of a variant other than the default (Options.Variant) has not been built
// on this machine. It matches ErrNoRootfs, so Start skips like it does for the default rootfs.
type NoVariantError struct {
	Variant string // e.g. "vm"
	Script  string // the script that builds it, e.g. "prepare-vm.sh"
}

func (e *NoVariantError) Error() string {
	return fmt.Sprintf("testhost: the cached rootfs of the %q test host variant is not built: run `bash integration/testhost/%s` as root", e.Variant, e.Script)
}

// Is makes errors.Is(err, ErrNoRootfs) true.
func (e *NoVariantError) Is(target error) bool { return target == ErrNoRootfs }

// ExitError is returned by Run when the command ran inside the host and failed.
type ExitError struct {
	Args     []string
	ExitCode int // -1 when killed by a signal or the context
	Stderr   []byte
	Err      error // the underlying *exec.ExitError or context error
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(string(e.Stderr))
	if len(msg) > 2000 {
		msg = "..." + msg[len(msg)-2000:]
	}
	return fmt.Sprintf("testhost: %q exited with code %d: %v: %s", strings.Join(e.Args, " "), e.ExitCode, e.Err, msg)
}

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}
