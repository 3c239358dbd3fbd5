package cli

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// nobody is the unprivileged user the permission tests run bbctl as.
const nobody = 65534

// TestPermissions runs this test binary, acting as bbctl, as an unprivileged user against a
// real daemon: reads succeed, writes are refused with PermissionDenied (exit 5), and a socket
// the user may not connect to gives EACCES (exit 5).
func TestPermissions(t *testing.T) {
	testpolicy.RequireRoot(t, "to run bbctl as another user")
	d := startDaemon(t)
	mustRun(t, d.addr, "tenant", "create", "shared")

	// The unprivileged user needs to reach the socket and run a copy of this binary: open up
	// the test's own directories below the temporary directory, never that directory itself.
	tmp := filepath.Clean(os.TempDir())
	if fi, err := os.Stat(tmp); err != nil || fi.Mode().Perm()&0o001 == 0 {
		testpolicy.Requiref(t, false, "%s is not searchable by other users", tmp)
	}
	for dir := filepath.Clean(d.dir); strings.HasPrefix(dir, tmp+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(d.dir, "bbctl")
	copyExecutable(t, bin)

	run := func(t *testing.T, args ...string) result {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Env = []string{execEnv + "=1", "BITBUILDER_ADDRESS=" + d.addr}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return result{out.String(), errb.String(), 0}
		case errors.As(err, &ee):
			return result{out.String(), errb.String(), ee.ExitCode()}
		}
		testpolicy.Requiref(t, false, "cannot run bbctl as uid %d: %v", nobody, err)
		return result{}
	}

	if err := os.Chmod(d.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"read is allowed", []string{"tenant", "get", "shared"}, 0, "Name:           shared"},
		{"list is allowed", []string{"tenant", "list"}, 0, "shared"},
		{"create is denied", []string{"tenant", "create", "mine"}, ExitPermission, "bbctl: permission denied: io.bitbuilder.Tenant.Create needs root"},
		{"stop is denied", []string{"tenant", "stop", "shared"}, ExitPermission, "permission denied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, c.args...)
			if r.code != c.code || !strings.Contains(r.stdout+r.stderr, c.output) {
				t.Errorf("bbctl %q as uid %d: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, nobody, r.code, r.stdout, r.stderr, c.code, c.output)
			}
		})
	}
	if got := getTenant(t, d.addr, "shared"); got.DesiredState != "running" {
		t.Errorf("a denied stop changed the tenant: %s", got.DesiredState)
	}

	t.Run("socket not connectable", func(t *testing.T) {
		if err := os.Chmod(d.socket, 0o600); err != nil {
			t.Fatal(err)
		}
		r := run(t, "tenant", "list")
		if r.code != ExitPermission || !strings.Contains(r.stderr, "permission denied connecting to") {
			t.Errorf("exit %d, stderr %q; want exit 5 and EACCES", r.code, r.stderr)
		}
	})
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
