package integration

import (
	"strings"
	"testing"
	"time"
)

// The machine template that testdata/machine-template.sh builds: a bare Git repository whose branch main holds
// metadata.json (type machine), config/vm-config.yaml (SeaBIOS, no KVM, no TPM, 1 vCPU, 512M),
// config/cloud-init/{user-data,meta-data}, and disk-image/{boot,efi,rootfs}: the vm test host's small Debian trixie
// guest (Debian's kernel, a busybox initrd mounting the root over virtiofs, systemd 257 with systemd-networkd
// asking DHCP), with a Type #1 entry on XBOOTLDR and systemd-boot on the ESP.
var machineRepo = &templateRepo{script: "testdata/machine-template.sh", what: "machine"}

// machineTemplate returns the path of the machine template repository on this machine, building it the first
// time (about 15 s from the vm test host's cached guest, no network; then cached under /var/cache/bitbuilder-test).
// Call it after vmHost(t), which skips when the machine cannot boot a vm test host (the script would otherwise
// build the vm tree: minutes, and the network).
func machineTemplate(t *testing.T) string { return machineRepo.get(t) }

// addMachineTemplate copies the machine template repository into d's host and adds it to d's registry as name;
// it returns the commit the registry pinned and how long Add took.
func addMachineTemplate(t *testing.T, d *daemon, name string) (commit string, took time.Duration) {
	t.Helper()
	_, commit, took = addTemplateRepo(t, d, machineTemplate(t), name, "machine")
	return commit, took
}

// TestMachineTemplateAdd adds the machine template built from the vm test host's guest (a real kernel, initrd
// and Debian root) to bitbuilderd's registry from a file:// URL (io.bitbuilder.Template.Add: fetch, checkout,
// validation, pin), and validates the registered template: the validator and the materializer accept the tree,
// and in a vm test host the template's requirements (vmspawn, virtiofs, machined) hold. It logs how long Add
// took and the daemon's peak memory.
func TestMachineTemplateAdd(t *testing.T) {
	h := vmHost(t, "vmtemplate")
	repo := machineTemplate(t)
	d := startDaemonIn(t, h, "mtemplate")
	before := vmHWM(t, h, d.mainPID(t))
	_, took := addMachineTemplate(t, d, "debvm")
	peak := vmHWM(t, h, d.mainPID(t))
	t.Logf("Template.Add of %s: %v; bitbuilderd peak RSS %d MB (%d MB before)", repo, took.Round(time.Millisecond), peak>>10, before>>10)

	var v validation
	d.call(t, asRoot, "io.bitbuilder.Template.Validate", `{"name":"debvm"}`).decode(t, &v)
	if v.Errors != 0 {
		t.Errorf("the registered machine template: %d errors: %+v", v.Errors, v.Findings)
	}
	for _, f := range v.Findings {
		t.Logf("finding %s %s %s: %s", f.Severity, f.Rule, f.Path, f.Message)
		if strings.HasPrefix(f.Rule, "requirements.") {
			t.Errorf("the vm test host does not meet a requirement of the template: %s %s", f.Rule, f.Message)
		}
	}
}
