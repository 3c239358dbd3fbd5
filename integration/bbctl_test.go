package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBbctl checks that bbctl and varlinkctl, run in the test host against the same daemon,
// see the same tenants, and that bbctl's documented exit codes hold for real errors.
func TestBbctl(t *testing.T) {
	d := startDaemon(t, "bbctl")
	if _, err := os.Stat(filepath.Join(binDir, "bbctl")); err != nil {
		t.Fatalf("bbctl was not built: %v", err)
	}
	bbctl := func(c caller, args ...string) result {
		t.Helper()
		return run(t, d.h, "", append(append(append([]string(nil), c...), guestBin+"/bbctl", "--address", "unix:"+d.socket), args...)...)
	}

	// Created with bbctl, read with varlinkctl.
	r := bbctl(asRoot, "--json", "tenant", "create", "cli-one", "--stopped", "--param", "BRIDGE_STP=yes")
	var created tenant
	r.decode(t, &created)
	got := d.tenantCall(t, asRoot, "Get", `{"name":"cli-one"}`)
	if !sameTenant(got, created) || got.DesiredState != "stopped" || got.Parameters["BRIDGE_STP"] != "yes" {
		t.Errorf("bbctl created %+v; varlinkctl reads %+v", created, got)
	}

	// Created with varlinkctl, listed with bbctl (--json: an array of the tenants).
	two := d.create(t, `{"name":"cli-two"}`)
	var listed []tenant
	if err := json.Unmarshal([]byte(bbctl(asRoot, "--json", "tenant", "list").stdout), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("bbctl --json tenant list: %d entries, %v", len(listed), err)
	}
	if !sameTenant(listed[1], two) {
		t.Errorf("bbctl lists %+v; varlinkctl created %+v", listed[1], two)
	}
	// The human table names both.
	if out := bbctl(asRoot, "tenant", "list").stdout; !strings.Contains(out, "cli-one") || !strings.Contains(out, "cli-two") {
		t.Errorf("bbctl tenant list:\n%s", out)
	}

	// Exit codes (bbctl help): 3 not found, 4 invalid, 5 permission denied, 7 conflict.
	for _, tc := range []struct {
		who  caller
		args []string
		exit int
	}{
		{asRoot, []string{"tenant", "get", "nope"}, 3},
		{asRoot, []string{"tenant", "create", "Bad_Name"}, 4},
		{asRoot, []string{"tenant", "create", "cli-two"}, 7},
		{asNobody, []string{"tenant", "get", "cli-two"}, 5}, // the 0660 socket refuses the connection
		{asAdmin, []string{"tenant", "stop", "cli-two"}, 0},
	} {
		if r := bbctl(tc.who, tc.args...); r.exit != tc.exit {
			t.Errorf("exit %d, want %d: %v", r.exit, tc.exit, r)
		}
	}
	mustRun(t, d.h, "chmod", "0666", d.socket)
	if r := bbctl(asNobody, "tenant", "create", "cli-three"); r.exit != 5 {
		t.Errorf("plain user create: exit %d, want 5: %v", r.exit, r)
	}
	if r := bbctl(asNobody, "tenant", "get", "cli-two"); r.exit != 0 || !strings.Contains(r.stdout, "stopped") {
		t.Errorf("plain user get: %v", r)
	}

	// bbctl version reports the daemon's version too, and bbctl's own, from the same build,
	// is the same.
	version := strings.TrimSpace(mustRun(t, d.h, bitbuilderd, "--version"))
	if r := bbctl(asRoot, "version"); r.exit != 0 || strings.Count(r.stdout, version) != 2 {
		t.Errorf("bbctl version: %v, want bbctl's and the daemon's version %s in it", r, version)
	}
	if r := bbctl(asRoot, "tenant", "get", "--version"); r.exit != 0 || r.stdout != "bbctl "+version+"\n" {
		t.Errorf("bbctl tenant get --version: %v, want %s", r, version)
	}

	// With --json a real daemon's error is JSON on standard error, with the same exit code.
	r = bbctl(asRoot, "--json", "tenant", "get", "nope")
	var jerr struct {
		Error      string            `json:"error"`
		Parameters map[string]string `json:"parameters"`
		Message    string            `json:"message"`
	}
	if err := json.Unmarshal([]byte(r.stderr), &jerr); err != nil || r.exit != 3 || r.stdout != "" ||
		jerr.Error != "io.bitbuilder.Tenant.NoSuchTenant" || jerr.Parameters["name"] != "nope" || !strings.Contains(jerr.Message, `"nope" not found`) {
		t.Errorf("bbctl --json tenant get nope: %v (%v)", r, err)
	}
}
