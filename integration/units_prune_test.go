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

// TestUnitsPruned: a tenant updated to drop its sysext loses the extension's mount unit (file gone, mount
// stopped), and deleting the tenant leaves none of its units in /run/systemd/system.
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
	mountUnits := func(tn string) []string {
		out := run(t, h, "", "sh", "-c", `grep -lx "Description=System extensions of BitBuilder tenant `+tn+`" /run/systemd/system/*.mount`)
		return strings.Fields(out.stdout)
	}
	installed := func(tn string) {
		eventually(t, 90*time.Second, func() (bool, string) {
			got := d.tenantCall(t, asRoot, "Get", fmt.Sprintf(`{"name":%q}`, tn))
			cs := conditions(t, got)
			return cs["UnitsInstalled"].Status == "true" && len(mountUnits(tn)) == 1, fmt.Sprintf("conditions %v, mount units %v", cs, mountUnits(tn))
		})
	}
	installed("sx")
	installed("sx-b")
	mount := filepath.Base(mountUnits("sx")[0])
	other := filepath.Base(mountUnits("sx-b")[0])
	wasActive := showUnit(t, h, mount, "ActiveState")["ActiveState"] == "active"

	// Drop the sysext: its mount unit goes, and the mount with it.
	d.tenantCall(t, asRoot, "Update", `{"name":"sx","templates":[]}`)
	eventually(t, 60*time.Second, func() (bool, string) {
		r := run(t, h, "", "test", "-e", "/run/systemd/system/"+mount)
		return r.exit != 0, "mount unit " + mount + " still in /run/systemd/system"
	})
	if wasActive {
		eventually(t, 30*time.Second, func() (bool, string) {
			st := showUnit(t, h, mount, "ActiveState")["ActiveState"]
			return st != "active", mount + " is " + st
		})
	}
	if run(t, h, "", "test", "-e", "/run/systemd/system/"+other).exit != 0 {
		t.Errorf("the mount unit %s of tenant sx-b was removed with sx's", other)
	}

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
