package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// TestExampleRootsBoot materializes the example container and infrastructure templates, gives them the test
// host's busybox (their artifact), installs the container's nspawn settings and boots both with
// systemd-nspawn --boot inside a systemd 257 test host until systemd-machined lists them as running; then
// powers them off. The container's init must also have run its workload script.
func TestExampleRootsBoot(t *testing.T) {
	testpolicy.RequireRoot(t, "booting the example roots needs the systemd 257 test host")
	tests := []struct {
		example string
		kind    Kind
		machine string
		marker  string // a file the booted root's init creates, "" for none
	}{
		{"container", KindContainer, "tenant1-container", "/run/bitbuilder/started"},
		{"infrastructure", KindInfrastructure, "tenant1-infra", ""},
	}
	work := t.TempDir()
	for _, tc := range tests {
		tree := filepath.Join(work, tc.example)
		materialize(t, filepath.Join(examplesDir, tc.example), tree, tc.kind)
		rep, err := Tree(t.Context(), tree, tc.kind, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.HasErrors() {
			t.Fatalf("materialized %s has errors:\n%s", tc.example, dump(rep))
		}
	}
	examples, err := filepath.Abs(examplesDir)
	if err != nil {
		t.Fatal(err)
	}
	h := testhost.Start(t, testhost.Options{Name: "roots", Binds: []testhost.Bind{
		{Host: work, Guest: "/templates"}, {Host: examples, Guest: "/examples", ReadOnly: true},
	}})
	ctx := t.Context()
	t.Run("units and networks parse", func(t *testing.T) {
		// systemd-analyze verify needs the commands the units run: placeholders stand in for the artifacts.
		script := `mkdir -p /usr/lib/bitbuilder /etc/bitbuilder /run/user/0
printf '#!/bin/sh\n' >/usr/lib/bitbuilder/infra-manager; chmod 755 /usr/lib/bitbuilder/infra-manager
cp /examples/container/rootfs/etc/bitbuilder/container-init.sh /etc/bitbuilder/
systemd-analyze verify --man=no /examples/infrastructure/rootfs/usr/lib/systemd/system/*
systemd-analyze verify --man=no /examples/container/rootfs/etc/systemd/system/*.service
XDG_RUNTIME_DIR=/run/user/0 systemd-analyze verify --man=no --user /examples/homed/home-skeleton/.config/systemd/user/*.service
cp /examples/infrastructure/rootfs/etc/systemd/network/*.network /examples/container/rootfs/etc/systemd/network/*.network /examples/machine/disk-image/rootfs/etc/systemd/network/*.network /run/systemd/network/
networkctl reload
`
		if out, err := h.Shell(ctx, script); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// networkd logs a parse problem as "<file>:<line>: ..." when it loads the files.
		time.Sleep(500 * time.Millisecond)
		journal := h.JournalTail(ctx, 200, "-u", "systemd-networkd")
		for _, f := range []string{"10-management.network", "80-container.network", "80-vm.network"} {
			if strings.Contains(journal, f+":") {
				t.Errorf("networkd complains about %s:\n%s", f, journal)
			}
		}
	})
	for _, tc := range tests {
		t.Run(tc.example, func(t *testing.T) {
			root := "/templates/" + tc.example + "/rootfs"
			if settings, err := os.ReadFile(filepath.Join(work, tc.example, "config/nspawn-settings.conf")); err == nil {
				if err := h.WriteFile("/run/systemd/nspawn/"+tc.machine+".nspawn", settings, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The artifact comes from the test host, whatever the machine running the test has.
			script := fmt.Sprintf("install -m 0755 /usr/bin/busybox %s/usr/bin/busybox\n", root)
			script += fmt.Sprintf("systemd-run --unit=%s --collect --property=KillMode=mixed systemd-nspawn --quiet --keep-unit --register=yes --notify-ready=no --boot -D %s -M %s\n", tc.machine, root, tc.machine)
			if out, err := h.Shell(ctx, script); err != nil {
				t.Fatalf("start: %v\n%s", err, out)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				out, err := h.Shell(ctx, "machinectl show --property=State --property=Class --value "+tc.machine)
				if err == nil && strings.Contains(string(out), "running") && strings.Contains(string(out), "container") {
					break
				}
				if state, _ := h.Shell(ctx, "systemctl is-active "+tc.machine+" || true"); time.Now().After(deadline) || strings.TrimSpace(string(state)) == "failed" {
					t.Fatalf("machined does not list %s as a running container: %v %s\n%s", tc.machine, err, out, h.JournalTail(ctx, 40, "-u", tc.machine))
				}
				time.Sleep(200 * time.Millisecond)
			}
			if tc.marker != "" {
				out, err := h.Shell(ctx, "leader=$(machinectl show --property=Leader --value "+tc.machine+"); for i in $(seq 50); do cat /proc/$leader/root"+tc.marker+" 2>/dev/null && exit 0; sleep 0.1; done; exit 1")
				if err != nil {
					t.Errorf("the init did not run the workload script (no %s in the container): %v %s", tc.marker, err, out)
				}
			}
			if tc.kind == KindContainer {
				// nspawn-settings.conf applied: a user namespace (PrivateUsers=pick) and a veth (VirtualEthernet=yes).
				out, err := h.Shell(ctx, "leader=$(machinectl show --property=Leader --value "+tc.machine+"); head -n1 /proc/$leader/uid_map; ls /proc/$leader/root/sys/class/net")
				if err != nil || strings.Contains(string(out), " 0 4294967295") || !strings.Contains(string(out), "host0") {
					t.Errorf("the container's settings were not applied (uid_map and links: %q, %v)", out, err)
				}
			}
			// A signal that reaches the init before its shell has set its trap is ignored (PID 1): ask again.
			if _, err := h.Shell(ctx, "for i in $(seq 40); do machinectl poweroff "+tc.machine+" 2>/dev/null || exit 0; sleep 0.5; machinectl show "+tc.machine+" >/dev/null 2>&1 || exit 0; done; exit 1"); err != nil {
				t.Errorf("%s did not power off: %v\n%s", tc.machine, err, h.JournalTail(ctx, 40, "-u", tc.machine))
			}
		})
	}
}
