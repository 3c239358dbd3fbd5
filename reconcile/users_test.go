package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// TestUsersStep drives the users step against real files and a fake host: nothing is written while the machine
// starts; then the user is provisioned and recorded in the manifest; a user whose template cannot be provisioned
// is a false condition naming the file, with nothing of it in the root or the manifest; a user that leaves the
// record is removed.
func TestUsersStep(t *testing.T) {
	testpolicy.RequireRoot(t, "files owned by the users of a machine")
	ctx := t.Context()
	state := t.TempDir()
	cfg := units.Config{StateDir: state}
	tenantsDir := filepath.Join(state, "tenants")
	host := newFakeMachineHost()
	step := &UsersStep{Host: host, Units: cfg, TenantsDir: tenantsDir}
	commit := "0123456789abcdef0123456789abcdef01234567"
	tn := &tenant.Tenant{
		Name: "t",
		Templates: []tenant.TemplateUse{
			{Role: "homed", Name: "home", Template: "home", Commit: commit},
			{Role: "homed", Name: "bad", Template: "bad", Commit: commit},
		},
		Machines: []tenant.Machine{{Name: "web", Kind: tenant.Container, DesiredState: tenant.Running}},
		Users:    []tenant.User{{Name: "ann", Template: "home", UID: 1000, SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 a"}}},
	}
	for use, files := range map[string]map[string]string{
		"home": {"config/user-record.json": `{"userName":"x","shell":"/bin/sh"}`, "home-skeleton/.profile": "x"},
		"bad":  {"config/user-record.json": `{"userName":"x"}`, "home-skeleton/.profile": "x"},
	} {
		dir := TemplateDir(tenantsDir, "t", tenant.TemplateUse{Role: "homed", Name: use})
		for p, data := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
			os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644)
		}
		os.WriteFile(dir+".commit", []byte(commit+"\n"), 0o644)
	}
	os.Symlink("/etc/shadow", filepath.Join(TemplateDir(tenantsDir, "t", tenant.TemplateUse{Role: "homed", Name: "bad"}), "home-skeleton/.shadow"))
	mp := cfg.MachinePaths("t", "web")
	os.MkdirAll(filepath.Join(mp.Root, "etc"), 0o755)
	os.WriteFile(filepath.Join(mp.Root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	exists := func(rel string) bool { _, err := os.Lstat(filepath.Join(mp.Root, rel)); return err == nil }
	ensure := func() tenant.Condition {
		t.Helper()
		cs, _ := step.Ensure(ctx, tn)
		if len(cs) != 1 || cs[0].Type != "UsersProvisioned" {
			t.Fatalf("conditions %+v", cs)
		}
		return cs[0]
	}

	// Starting: nothing written yet.
	host.Start(context.Background(), units.MachineUnit("t", "web"))
	if c := ensure(); c.Status != "unknown" || exists("etc/userdb") {
		t.Fatalf("while starting: %+v, userdb written: %v", c, exists("etc/userdb"))
	}
	host.settle()
	if c := ensure(); c.Status != "true" || !exists("etc/userdb/ann.user") || !exists("home/ann/.ssh/authorized_keys") {
		t.Fatalf("running: %+v", c)
	}
	if m, _ := machines.ReadUsersManifest(mp.Dir); !slices.Equal(m, []machines.ProvisionedUser{{Name: "ann", UID: 1000}}) {
		t.Fatalf("manifest %+v", m)
	}

	// A user whose skeleton leads out of the home: a false condition naming the file, nothing of it anywhere.
	tn.Users = append(tn.Users, tenant.User{Name: "bob", Template: "bad", UID: 1001})
	if c := ensure(); c.Status != "false" || !strings.Contains(c.Message, "home-skeleton/.shadow") || exists("etc/userdb/bob.user") || exists("home/bob") || exists("etc/userdb/1001.user") {
		t.Fatalf("bad skeleton: %+v", c)
	}
	if m, _ := machines.ReadUsersManifest(mp.Dir); len(m) != 1 {
		t.Fatalf("manifest after a failed user %+v", m)
	}

	// Both leave the record: ann is removed from the machine.
	tn.Users = nil
	if c := ensure(); c.Status != "true" || exists("etc/userdb/ann.user") || exists("home/ann") {
		t.Fatalf("after removal: %+v", c)
	}
	if m, _ := machines.ReadUsersManifest(mp.Dir); len(m) != 0 {
		t.Fatalf("manifest after removal %+v", m)
	}
	if cs, err := step.Ensure(ctx, tn); len(cs) != 0 || err != nil {
		t.Fatalf("a tenant without users: %+v %v", cs, err)
	}
}
