package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// BenchmarkUsersSettled measures a users pass over a tenant whose 10 machines have all its 10 users already (the
// resync's steady state: nothing to write) against the bare reads that finding that out needs (each machine's
// manifest and etc/passwd, and each user's record files, authorized_keys and the template's record), as a ratio in
// the same run. The pass does more than read: it checks each file's owner and mode, reads the machine's etc/passwd
// and the template's record once per user, and writes nothing (a settled pass fsyncs nothing).
func BenchmarkUsersSettled(b *testing.B) {
	testpolicy.RequireRoot(b, "files owned by the users of a machine")
	const nMachines, nUsers = 10, 10
	state := b.TempDir()
	cfg := units.Config{StateDir: state}
	tenantsDir := filepath.Join(state, "tenants")
	host := newFakeMachineHost()
	step := &UsersStep{Host: host, Units: cfg, TenantsDir: tenantsDir}
	commit := "0123456789abcdef0123456789abcdef01234567"
	tn := &tenant.Tenant{Name: "t", Templates: []tenant.TemplateUse{{Role: "homed", Name: "home", Template: "home", Commit: commit}}}
	tpl := TemplateDir(tenantsDir, "t", tn.Templates[0])
	os.MkdirAll(filepath.Join(tpl, "config"), 0o755)
	os.MkdirAll(filepath.Join(tpl, "home-skeleton"), 0o755)
	os.WriteFile(filepath.Join(tpl, "config/user-record.json"), []byte(`{"userName":"x","shell":"/bin/sh"}`), 0o644)
	os.WriteFile(filepath.Join(tpl, "home-skeleton/.profile"), []byte("x"), 0o644)
	os.WriteFile(tpl+".commit", []byte(commit+"\n"), 0o644)
	for i := range nUsers {
		tn.Users = append(tn.Users, tenant.User{Name: fmt.Sprintf("u%d", i), Template: "home", UID: 2000 + i,
			SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 k"}})
	}
	for i := range nMachines {
		name := fmt.Sprintf("m%d", i)
		tn.Machines = append(tn.Machines, tenant.Machine{Name: name, Kind: tenant.Container, DesiredState: tenant.Running})
		root := cfg.MachinePaths("t", name).Root
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
		host.units[units.MachineUnit("t", name)] = machines.UnitState{Load: "loaded", Active: "active", Sub: "running"}
	}
	if cs, err := step.Ensure(b.Context(), tn); err != nil || cs[0].Status != "true" {
		b.Fatalf("first pass: %+v %v", cs, err)
	}
	bare := func() {
		for _, m := range tn.Machines {
			mp := cfg.MachinePaths("t", m.Name)
			os.ReadFile(filepath.Join(mp.Dir, machines.UsersManifest))
			os.ReadFile(filepath.Join(mp.Root, "etc/passwd"))
			for _, u := range tn.Users {
				os.ReadFile(filepath.Join(tpl, "config/user-record.json"))
				for _, f := range []string{u.Name + ".user", u.Name + ".user-privileged", u.Name + ".group"} {
					os.ReadFile(filepath.Join(mp.Root, "etc/userdb", f))
				}
				os.Readlink(filepath.Join(mp.Root, "etc/userdb", fmt.Sprint(u.UID)+".user"))
				os.ReadFile(filepath.Join(mp.Root, "home", u.Name, ".ssh/authorized_keys"))
			}
		}
	}
	var pass, base time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := step.Ensure(b.Context(), tn); err != nil {
			b.Fatal(err)
		}
		pass += time.Since(start)
		start = time.Now()
		bare()
		base += time.Since(start)
	}
	b.ReportMetric(float64(pass.Nanoseconds())/float64(b.N), "ns/pass")
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "ns/bare")
	b.ReportMetric(float64(pass)/float64(base), "ratio")
}
