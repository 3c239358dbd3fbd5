package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
)

// TestContainerExampleBoots materializes the example container template, gives it the test host's busybox
// (its artifact), installs its nspawn settings and boots it with systemd-nspawn inside a systemd 257 test host,
// until systemd-machined lists it; then powers it off.
func TestContainerExampleBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("booting the example container needs root for the systemd 257 test host")
	}
	work := t.TempDir()
	tree := filepath.Join(work, "ex")
	missing := materialize(t, filepath.Join(examplesDir, "container"), tree, KindContainer)
	rep, err := Tree(t.Context(), tree, KindContainer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.HasErrors() {
		t.Fatalf("materialized container has errors:\n%s", dump(rep))
	}
	settings, err := os.ReadFile(filepath.Join(tree, "config/nspawn-settings.conf"))
	if err != nil {
		t.Fatal(err)
	}
	h := testhost.Start(t, testhost.Options{Name: "container", Binds: []testhost.Bind{{Host: work, Guest: "/templates"}}})
	ctx := t.Context()
	const machine = "tenant1-example"
	// The artifact comes from the test host, whatever the machine running the test has.
	script := "install -m 0755 /usr/bin/busybox /templates/ex/rootfs/usr/bin/busybox\n"
	if err := h.WriteFile("/run/systemd/nspawn/"+machine+".nspawn", settings, 0o644); err != nil {
		t.Fatal(err)
	}
	script += fmt.Sprintf("systemd-run --unit=%s --collect --property=KillMode=mixed --property=Type=notify --property=NotifyAccess=all systemd-nspawn --quiet --keep-unit --register=yes -D /templates/ex/rootfs -M %s --notify-ready=no\n", machine, machine)
	if out, err := h.Shell(ctx, script); err != nil {
		t.Fatalf("start: %v\n%s\nmissing artifacts on this machine: %v", err, out, missing)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := h.Shell(ctx, "machinectl show --property=State --property=Class --value "+machine)
		if err == nil && strings.Contains(string(out), "running") && strings.Contains(string(out), "container") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machined does not list %s as a running container: %v %s\n%s", machine, err, out, h.JournalTail(ctx, 40, "-u", machine))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The tiny init started the workload script.
	out, err := h.Shell(ctx, "leader=$(machinectl show --property=Leader --value "+machine+"); for i in $(seq 50); do cat /proc/$leader/root/run/bitbuilder/started 2>/dev/null && exit 0; sleep 0.1; done; exit 1")
	if err != nil {
		t.Errorf("the init did not run the workload script (no /run/bitbuilder/started in the container): %v %s", err, out)
	}
	t.Logf("%s is running; its workload started at %s", machine, strings.TrimSpace(string(out)))
	if _, err := h.Shell(ctx, "machinectl poweroff "+machine+"; for i in $(seq 100); do machinectl show "+machine+" >/dev/null 2>&1 || exit 0; sleep 0.1; done; exit 1"); err != nil {
		t.Errorf("%s did not power off: %v\n%s", machine, err, h.JournalTail(ctx, 40, "-u", machine))
	}
}
