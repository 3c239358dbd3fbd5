package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sysextRepo makes a bare git repository of examples/templates/sysext (branch main) on this machine.
func sysextRepo(t *testing.T) string { return sysextRepoWith(t, nil) }

// sysextRepoWith is sysextRepo with extra files (name: content) at the template's root.
func sysextRepoWith(t *testing.T, extra map[string]string) string {
	return exampleRepo(t, "sysext", func(dir string) {
		for name, content := range extra {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestUnitsPruned: a tenant with a sysext gets no host mount for it (extensions are handed to its machines),
// dropping the sysext removes its checkout, and deleting the tenant leaves none of its units in
// /run/systemd/system while a tenant whose name starts with its name keeps its own.
func TestUnitsPruned(t *testing.T) {
	d := startDaemon(t, "prune", "--no-host=false")
	h := d.h
	installGit(t, h)
	guest := "/srv/templates/prune-base-tools.git"
	copyRepoIntoHost(t, h, sysextRepo(t), guest)
	if r := d.call(t, asRoot, "io.bitbuilder.Template.Add", `{"name":"base-tools","url":"file://`+guest+`","ref":"main"}`, "--more"); r.exit != 0 {
		t.Fatalf("Template.Add: %v", r)
	}
	// Tenant "sx" and tenant "sx-b": the second's unit names start with the first's.
	d.create(t, `{"name":"sx","templates":[{"role":"sysext","name":"base-tools","template":"base-tools"}]}`)
	d.create(t, `{"name":"sx-b","templates":[{"role":"sysext","name":"base-tools","template":"base-tools"}]}`)
	checkout := d.stateDir + "/tenants/sx/extensions/sysext/base-tools"
	installed := func(tn string) {
		eventually(t, 90*time.Second, func() (bool, string) {
			got := d.tenantCall(t, asRoot, "Get", fmt.Sprintf(`{"name":%q}`, tn))
			cs := conditions(t, got)
			return cs["UnitsInstalled"].Status == "true" && cs["TemplatesMaterialized"].Status == "true", fmt.Sprintf("conditions %v", cs)
		})
	}
	installed("sx")
	installed("sx-b")
	if out := run(t, h, "", "sh", "-c", `ls /run/systemd/system/*.mount 2>/dev/null; grep -c " `+d.stateDir+`/" /proc/self/mountinfo`); strings.TrimSpace(out.stdout) != "0" {
		t.Errorf("mount units or mounts for extensions on the host:\n%s", out.stdout)
	}
	if run(t, h, "", "test", "-d", checkout).exit != 0 {
		t.Fatalf("no checkout at %s", checkout)
	}

	// Drop the sysext: its checkout goes.
	d.tenantCall(t, asRoot, "Update", `{"name":"sx","templates":[]}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		r := run(t, h, "", "sh", "-c", "ls -d "+checkout+"* 2>/dev/null")
		return r.stdout == "", "checkout left: " + r.stdout
	})

	// Delete: nothing of sx stays in /run/systemd/system; sx-b keeps its units.
	d.call(t, asRoot, "io.bitbuilder.Tenant.Delete", `{"name":"sx"}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, "io.bitbuilder.Tenant.Get", `{"name":"sx"}`)
		return strings.Contains(r.stdout+r.stderr, "NoSuchTenant"), r.String()
	})
	left := run(t, h, "", "sh", "-c", `grep -l "BitBuilder tenant sx$" /run/systemd/system/* 2>/dev/null; ls /run/systemd/system/.bitbuilder/`)
	if strings.Contains(left.stdout, "/run/systemd/system/") || strings.Contains(left.stdout, "sx.units") {
		t.Errorf("units of sx left after delete:\n%s", left.stdout)
	}
	if !strings.Contains(left.stdout, "sx-b.units") || run(t, h, "", "test", "-e", `/run/systemd/system/tenant@sx\x2db.service`).exit != 0 {
		t.Errorf("units of sx-b gone with sx:\n%s", left.stdout)
	}
}
