// Package testpolicy is the one rule for tests that need something the machine may not have: root, the systemd
// test host, a tool, a kernel feature. Such a test calls Require (or RequireRoot, RequireTool) instead of
// skipping on its own: without the prerequisite the test is skipped with the reason, and when CI requires
// everything (BITBUILDER_TESTHOST_REQUIRE=1, set by .ci/run) it fails instead, so a machine that lost a
// prerequisite cannot turn a regression into a pass.
//
// -short is a mode, not a missing prerequisite: Short skips a slow test under -short whatever the environment
// requires.
//
// The package is a leaf (the standard library only), so every package's tests may import it.
package testpolicy

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// EnvRequire names the variable that, set to 1, makes a missing prerequisite a failure instead of a skip.
const EnvRequire = "BITBUILDER_TESTHOST_REQUIRE"

// Required reports whether the environment requires every prerequisite (BITBUILDER_TESTHOST_REQUIRE=1).
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Require runs the rest of t only when ok: otherwise it skips t saying reason, or fails t when Required.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatalf("%s (and %s=1 requires it)", reason, EnvRequire)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", reason, EnvRequire)
}

// Requiref is Require with a formatted reason.
func Requiref(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		Require(t, false, fmt.Sprintf(format, args...))
	}
}

// RequireNoError is Require(t, err == nil, what: err).
func RequireNoError(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		Require(t, false, fmt.Sprintf("%s: %v", what, err))
	}
}

// RequireRoot requires the effective uid 0; why says what the test needs root for.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root: "+why)
}

// RequireTool requires name in PATH and returns its path.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" is not installed (scripts/install-test-deps.sh installs the test tools)")
	return p
}

// Short skips t under -short, whatever the environment requires: slow tests are a mode, not a prerequisite.
func Short(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why + ": skipped with -short")
	}
}
