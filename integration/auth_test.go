package integration

import (
	"strings"
	"testing"
)

// TestAuthorization checks who may do what, with real unprivileged users of the test host: the
// socket is root:bitbuilder 0660, so a plain user cannot even connect; on a socket opened to
// everyone (as a test-only change) a plain user may read but not change, and members of the
// bitbuilder group, primary or supplementary, may change.
func TestAuthorization(t *testing.T) {
	d := startDaemon(t, "auth")
	if got := strings.TrimSpace(mustRun(t, d.h, "stat", "-c", "%a %U %G", d.socket)); got != "660 root "+adminGroup {
		t.Errorf("socket mode and owner %q, want 660 root %s", got, adminGroup)
	}
	d.create(t, `{"name":"shared"}`)

	// The file system keeps a plain user out.
	r := d.call(t, asNobody, tenantIface+"Get", `{"name":"shared"}`)
	if r.exit != 1 || !strings.Contains(r.stderr, "Permission denied") || r.stdout != "" {
		t.Errorf("plain user on the 0660 socket: %v", r)
	}

	// Members of the group may change things through the 0660 socket.
	for _, c := range []struct {
		name string
		who  caller
	}{{"supplementary group", asAdmin}, {"primary group", asAdminPrimary}} {
		t.Run(c.name, func(t *testing.T) {
			name := "by-" + strings.ReplaceAll(c.name, " ", "-")
			if tn := d.tenantCall(t, c.who, "Create", `{"name":"`+name+`"}`); tn.Name != name {
				t.Errorf("Create: %+v", tn)
			}
			if tn := d.tenantCall(t, c.who, "Stop", `{"name":"`+name+`"}`); tn.DesiredState != "stopped" {
				t.Errorf("Stop: %+v", tn)
			}
			if tn := d.tenantCall(t, c.who, "Get", `{"name":"`+name+`"}`); tn.DesiredState != "stopped" {
				t.Errorf("Get: %+v", tn)
			}
			if r := d.call(t, c.who, tenantIface+"Delete", `{"name":"`+name+`"}`); r.exit != 0 {
				t.Errorf("Delete: %v", r)
			}
		})
	}

	// Open the socket to everyone: now the daemon's own check decides.
	mustRun(t, d.h, "chmod", "0666", d.socket)
	if tn := d.tenantCall(t, asNobody, "Get", `{"name":"shared"}`); tn.Name != "shared" {
		t.Errorf("plain user Get: %+v", tn)
	}
	if r := d.call(t, asNobody, tenantIface+"List", "{}", "--more"); len(r.seq(t)) == 0 || !strings.Contains(r.stdout, `"name":"shared"`) {
		t.Errorf("plain user List: %v", r)
	}
	r = d.call(t, asNobody, tenantIface+"Watch", "{}", "--more", "--timeout=1")
	if !strings.Contains(r.stdout, `"name":"shared"`) || !strings.Contains(r.stderr, "io.systemd.TimedOut") {
		t.Errorf("plain user Watch: %v", r)
	}
	for _, call := range []struct{ method, params string }{
		{"Create", `{"name":"intruder"}`},
		{"Update", `{"name":"shared","parameters":{"X":"y"}}`},
		{"Stop", `{"name":"shared"}`},
		{"Start", `{"name":"shared"}`},
		{"Delete", `{"name":"shared"}`},
	} {
		r := d.call(t, asNobody, tenantIface+call.method, call.params)
		if p := r.wantError(t, "org.varlink.service.PermissionDenied"); len(p) != 0 {
			t.Errorf("%s: PermissionDenied parameters %v, want none", call.method, p)
		}
	}
	// The refused calls changed nothing.
	tn := d.tenantCall(t, asRoot, "Get", `{"name":"shared"}`)
	if tn.DesiredState != "running" || tn.Phase == "deleting" || len(tn.Parameters) != 0 {
		t.Errorf("a refused call changed the tenant: %+v", tn)
	}
	d.call(t, asRoot, tenantIface+"Get", `{"name":"intruder"}`).wantError(t, tenantIface+"NoSuchTenant")
}
