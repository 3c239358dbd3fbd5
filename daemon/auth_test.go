package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// The helper process is this test binary re-executed under another uid; it makes one call
// and prints the reply as JSON.
func init() {
	sock, call := os.Getenv("BB_AUTH_SOCKET"), os.Getenv("BB_AUTH_CALL")
	if sock == "" {
		return
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println(`{"error":"dial: ` + strings.ReplaceAll(err.Error(), `"`, `'`) + `"}`)
		os.Exit(0)
	}
	conn.Write(append([]byte(call), 0))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := bufio.NewReader(conn).ReadBytes(0)
	if err != nil {
		fmt.Println(`{"error":"read failed"}`)
		os.Exit(0)
	}
	os.Stdout.Write(b[:len(b)-1])
	os.Exit(0)
}

func requireRoot(t *testing.T) {
	t.Helper()
	testpolicy.RequireRoot(t, "to run a client as another uid")
}

// TestAuthorizationByRealPeerCredentials runs clients as a real unprivileged uid, with and
// without the admin group, against a socket anyone can connect to: the daemon's own check
// (SO_PEERCRED, SO_PEERGROUPS) is what decides.
func TestAuthorizationByRealPeerCredentials(t *testing.T) {
	requireRoot(t)
	const adminGID = 47111
	dir, err := os.MkdirTemp("", "bbauth")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	copyFile(t, self, bin)

	d := startDaemonIn(t, dir, filepath.Join(t.TempDir(), "state"), func(c *Config) { c.AdminGroup = fmt.Sprint(adminGID) })
	if err := os.Chmod(d.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	tenantOf(t, dial(t, d.socket).call("io.bitbuilder.Tenant.Create", `{"name":"existing"}`))

	as := func(groups []uint32, call string) reply {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = []string{"BB_AUTH_SOCKET=" + d.socket, "BB_AUTH_CALL=" + call}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as uid 65534: %v", err)
		}
		var r reply
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("client output %q: %v", out, err)
		}
		return r
	}

	// A plain user may read ...
	if r := as(nil, `{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"existing"}}`); r.Error != "" {
		t.Errorf("unprivileged Get: %v", r)
	}
	if r := as(nil, `{"method":"org.varlink.service.GetInfo"}`); r.Error != "" {
		t.Errorf("unprivileged GetInfo: %v", r)
	}
	// ... but not change anything.
	for _, call := range []string{
		`{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"intruder"}}`,
		`{"method":"io.bitbuilder.Tenant.Delete","parameters":{"name":"existing"}}`,
		`{"method":"io.bitbuilder.Tenant.Stop","parameters":{"name":"existing"}}`,
		`{"method":"io.bitbuilder.Tenant.Update","parameters":{"name":"existing"}}`,
	} {
		if r := as(nil, call); r.Error != "org.varlink.service.PermissionDenied" {
			t.Errorf("unprivileged %s: %v, want PermissionDenied", call, r)
		}
	}
	c := dial(t, d.socket)
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"intruder"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)
	if tn := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"existing"}`)); tn["phase"] == "deleting" || tn["desiredState"] != "running" {
		t.Errorf("refused calls changed the tenant: %v", tn)
	}

	// A member of the admin group (supplementary) may.
	if r := as([]uint32{adminGID}, `{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"member"}}`); r.Error != "" {
		t.Errorf("admin group member Create: %v", r)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
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
