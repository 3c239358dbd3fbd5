package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/units"
)

// buildPrograms builds the three programs into a directory, as `make build` does; a program that does not build
// fails t.
func buildPrograms(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	if err := exec.Command("cp", generatorBin, filepath.Join(bin, "bitbuilder-generator")).Run(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bitbuilderd", "bbctl"} {
		out, err := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(bin, p), "../"+p).CombinedOutput()
		if err != nil {
			t.Fatalf("%s does not build: %v\n%s", p, err, bytes.TrimSpace(out))
		}
	}
	return bin
}

// stageInstall runs packaging/install.mk into a staging root, as a package build would.
func stageInstall(t *testing.T) string {
	t.Helper()
	bin := buildPrograms(t)
	stage := t.TempDir()
	out, err := exec.CommandContext(t.Context(), "make", "-s", "-f", "../../packaging/install.mk", "install",
		"DESTDIR="+stage, "BB_BIN="+bin).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return stage
}

// copyInto copies the staging tree into the host (files and directories with their modes), as dpkg would.
func copyInto(t *testing.T, h *testhost.Host, stage string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == stage {
			return err
		}
		guest := strings.TrimPrefix(p, stage)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return h.MkdirAll(guest, info.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, guest)
		return h.WriteFile(guest, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("install into the host: %v", err)
	}
	return files
}

func hostRun(t *testing.T, h *testhost.Host, args ...string) string {
	t.Helper()
	out, _, err := h.Run(t.Context(), args...)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return string(out)
}

// verify runs systemd-analyze verify on units inside the host and fails on any complaint about them.
func verify(t *testing.T, h *testhost.Host, paths ...string) {
	t.Helper()
	out, stderr, err := h.Run(t.Context(), append([]string{"systemd-analyze", "verify", "--man=no"}, paths...)...)
	var ee *testhost.ExitError
	if errors.As(err, &ee) {
		stderr = ee.Stderr
	}
	if err != nil || len(bytes.TrimSpace(stderr)) > 0 || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %q: %v\n%s%s", paths, err, out, stderr)
	}
}

// TestBootPath installs the packaging into a booted systemd 257 host and checks, with systemd itself: that every
// static and every generated unit passes systemd-analyze verify; that daemon-reload runs the installed generator on
// a three-tenant registry and systemd loads exactly the rendered units; that quoting survives systemd's parser;
// that the generated netns and overlay units really work; and that the socket starts bitbuilderd on first use.
func TestBootPath(t *testing.T) {
	testpolicy.Short(t, "boots a systemd 257 test host")
	testpolicy.RequireRoot(t, "to boot the systemd 257 test host")
	stage := stageInstall(t)
	h := testhost.Start(t, testhost.Options{Name: "bootpath"})
	ctx := t.Context()
	installed := copyInto(t, h, stage)
	t.Logf("installed %d files", len(installed))
	// Debian trixie does not ship systemd-vmspawn (testenv.md). verify only needs tenant-infra@'s ExecStart to be an
	// executable file; this one refuses to run.
	if err := h.WriteFile(units.DefaultVMSpawn, []byte("#!/bin/sh\necho 'test host: no systemd-vmspawn' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// What a package's postinst does.
	hostRun(t, h, "systemd-sysusers")
	hostRun(t, h, "systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/bitbuilder.conf")
	if out := hostRun(t, h, "getent", "group", "bitbuilder"); !strings.HasPrefix(out, "bitbuilder:") {
		t.Errorf("sysusers did not create the bitbuilder group: %q", out)
	}
	if out := hostRun(t, h, "stat", "-c", "%a %U %G", "/etc/bitbuilder", "/var/lib/bitbuilder", "/var/lib/bitbuilder/tenants", "/run/bitbuilder"); out != "755 root root\n700 root root\n700 root root\n755 root root\n" {
		t.Errorf("tmpfiles made these modes and owners:\n%s", out)
	}

	t.Run("verify static units", func(t *testing.T) {
		verify(t, h, "/usr/lib/systemd/system/bitbuilderd.service", "/usr/lib/systemd/system/bitbuilderd.socket")
	})

	reg := units.Registry{Version: units.RegistryVersion, Tenants: []units.RegistryTenant{
		{Name: "acme-prod", NetworkIndex: 7, Infra: true, Sysext: []string{"tools"}, Confext: []string{"motd"}, Running: true},
		{Name: "beta", NetworkIndex: 8, Sysext: []string{"tools"}, Running: true},
		{Name: "gamma", NetworkIndex: 9},
	}}
	regFile := filepath.Join(t.TempDir(), "boot-registry.json")
	if err := units.WriteRegistry(regFile, reg); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(regFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile(units.DefaultRegistryPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	hostRun(t, h, "systemctl", "daemon-reload")

	var rendered []units.Unit
	for _, rt := range reg.Tenants {
		us, err := units.Render(rt.Tenant(), units.Config{})
		if err != nil {
			t.Fatal(err)
		}
		rendered = append(rendered, us...)
	}

	t.Run("systemd loaded the generated units", func(t *testing.T) {
		list := hostRun(t, h, "systemctl", "list-unit-files", "--no-legend", "--no-pager", "tenant*", "netns-tenant*", "*bitbuilder-tenants*")
		t.Logf("systemctl list-unit-files:\n%s", list)
		state := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				state[f[0]] = f[1]
			}
		}
		if len(state) != len(rendered) {
			t.Errorf("systemd lists %d tenant unit files, Render made %d", len(state), len(rendered))
		}
		for _, u := range rendered {
			if state[u.Name] != "generated" {
				t.Errorf("%s: unit file state %q, want generated", u.Name, state[u.Name])
			}
			cat := hostRun(t, h, "systemctl", "cat", "--no-pager", "--", u.Name)
			want := fmt.Sprintf("# /run/systemd/generator/%s\n%s", u.Name, u.Content)
			if cat != want {
				t.Errorf("systemctl cat %s:\n%s\nwant:\n%s", u.Name, cat, want)
			}
		}
		for _, rt := range reg.Tenants {
			wants := hostRun(t, h, "systemctl", "show", "-p", "WantedBy", "--value", "--", units.TenantUnit(rt.Name))
			if got := strings.Contains(wants, "multi-user.target"); got != rt.Running {
				t.Errorf("%s: WantedBy=%q, running=%v", rt.Name, strings.TrimSpace(wants), rt.Running)
			}
		}
		deps := hostRun(t, h, "systemctl", "list-dependencies", "--plain", "--no-legend", "--no-pager", units.TenantUnit("acme-prod"))
		for _, want := range []string{"netns-tenant@acme\\x2dprod.service", "tenant-network@acme\\x2dprod.service", "tenant-infra@acme\\x2dprod.service"} {
			if !strings.Contains(deps, want) {
				t.Errorf("tenant@acme\\x2dprod.service does not depend on %s:\n%s", want, deps)
			}
		}
	})

	t.Run("verify generated units", func(t *testing.T) {
		var paths []string
		for _, u := range rendered {
			paths = append(paths, "/run/systemd/generator/"+u.Name)
		}
		verify(t, h, paths...)
	})

	t.Run("verify every golden unit", func(t *testing.T) {
		// units' golden registry covers every unit kind and option; its units go into a directory of their own.
		golden, skipped, err := units.ReadRegistry("../../units/testdata/registry.json")
		if err != nil || len(skipped) > 0 {
			t.Fatal(err, skipped)
		}
		var paths []string
		for _, rt := range golden.Tenants {
			us, err := units.Render(rt.Tenant(), units.Config{})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				p := "/run/bitbuilder-golden/" + u.Name
				if err := h.WriteFile(p, u.Content, 0o644); err != nil {
					t.Fatal(err)
				}
				paths = append(paths, p)
			}
		}
		verify(t, h, paths...)
	})

	t.Run("verify catches a broken unit", func(t *testing.T) {
		// The negative control of the two verify steps above: a mount unit not named after its Where= and a service
		// whose program does not exist must both be reported.
		bad := map[string]string{
			"/run/bitbuilder-verify-test/var-lib-wrong.mount":        "[Mount]\nWhat=overlay\nWhere=/var/lib/right\nType=overlay\n",
			"/run/bitbuilder-verify-test/bitbuilder-missing.service": "[Service]\nExecStart=/usr/bin/does-not-exist\n",
		}
		for path, content := range bad {
			if err := h.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := h.Run(ctx, "systemd-analyze", "verify", "--man=no", path)
			var ee *testhost.ExitError
			if !errors.As(err, &ee) || len(ee.Stderr) == 0 {
				t.Errorf("systemd-analyze verify passed the broken %s: %v %s", path, err, stderr)
			}
		}
	})

	t.Run("Exec quoting survives systemd's parser", func(t *testing.T) {
		// A recording program in place of systemd-vmspawn writes the argv it got, one argument per line, which must be
		// exactly what Render was asked to pass.
		recorder := "/usr/local/bin/record-argv"
		if err := h.WriteFile(recorder, []byte("#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done >/run/recorded-argv\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--ram=50%", "--set-credential=x:$y z", "${HOME}", `quote"and\backslash`, "it's", ";", "tab\there", "%n", "ü"}
		us, err := units.Render(units.Tenant{Name: "quoting", NetworkIndex: 50, Infra: true}, units.Config{VMSpawn: recorder, VMSpawnArgs: args})
		if err != nil {
			t.Fatal(err)
		}
		// Render's ExecStart line, in a unit of its own without tenant-infra@'s dependencies.
		var exec string
		for _, line := range strings.Split(string(us[3].Content), "\n") {
			if strings.HasPrefix(line, "ExecStart=") {
				exec = line
			}
		}
		const unit = "bitbuilder-argv-test.service"
		if err := h.WriteFile("/run/systemd/system/"+unit, []byte("[Service]\nType=oneshot\n"+exec+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Run(ctx, "rm", "-f", "/run/systemd/system/"+unit)
			h.Run(ctx, "systemctl", "daemon-reload")
		})
		hostRun(t, h, "systemctl", "daemon-reload")
		hostRun(t, h, "systemctl", "start", unit)
		got, err := h.ReadFile("/run/recorded-argv")
		if err != nil {
			t.Fatalf("the unit did not run the recorder: %v\n%s", err, h.JournalTail(ctx, 20, "-u", unit))
		}
		p := units.Config{}.TenantPaths("quoting")
		want := append([]string{"--machine=quoting-infra", "--directory=" + p.InfraRoot, "--network-tap", "--set-credential=bitbuilder.tenant:quoting"}, args...)
		if string(got) != strings.Join(want, "\n")+"\n" {
			t.Errorf("the program got argv\n%s\nwant\n%s", got, strings.Join(want, "\n"))
		}
	})

	t.Run("netns unit makes, adopts and removes the namespace", func(t *testing.T) {
		unit := "netns-tenant@gamma.service"
		for _, premade := range []bool{false, true} {
			if premade { // as the daemon would have made it
				hostRun(t, h, "ip", "netns", "add", "tenant-gamma")
			}
			if _, _, err := h.Run(ctx, "systemctl", "start", unit); err != nil {
				t.Fatalf("start %s (namespace made before: %v): %v\n%s", unit, premade, err, h.JournalTail(ctx, 10, "-u", unit))
			}
			if out := hostRun(t, h, "ip", "netns", "list"); !strings.Contains(out, "tenant-gamma") {
				t.Errorf("after starting %s: ip netns list = %q", unit, out)
			}
			if out := hostRun(t, h, "ip", "-n", "tenant-gamma", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
				t.Errorf("lo in tenant-gamma is not up: %q", out)
			}
			hostRun(t, h, "systemctl", "stop", unit)
			if out := hostRun(t, h, "ip", "netns", "list"); strings.Contains(out, "tenant-gamma") {
				t.Errorf("after stopping %s: ip netns list = %q", unit, out)
			}
		}
		// A namespace that cannot be made is still a failure: /run/netns/tenant-gamma as a directory blocks it.
		hostRun(t, h, "mkdir", "-p", "/run/netns/tenant-gamma/blocker")
		defer h.Run(ctx, "rm", "-rf", "/run/netns/tenant-gamma")
		if _, _, err := h.Run(ctx, "systemctl", "start", unit); err == nil {
			t.Errorf("%s started although the namespace could not be made", unit)
		}
		h.Run(ctx, "systemctl", "reset-failed", unit)
	})

	t.Run("no host mount for extensions", func(t *testing.T) {
		// Extensions are handed to the machines, whose own systemd-sysext/confext merge them: the generator
		// mounts nothing on the host for them.
		if out := hostRun(t, h, "sh", "-c", "grep -l 'BitBuilder tenant' /run/systemd/generator/*.mount 2>/dev/null | wc -l"); strings.TrimSpace(out) != "0" {
			t.Errorf("the generator wrote %s mount units", strings.TrimSpace(out))
		}
	})

	t.Run("socket activates bitbuilderd", func(t *testing.T) {
		hostRun(t, h, "systemctl", "start", "bitbuilderd.socket")
		if out, _, _ := h.Run(ctx, "systemctl", "is-active", "bitbuilderd.service"); strings.TrimSpace(string(out)) == "active" {
			t.Fatalf("bitbuilderd.service is active before any client connected")
		}
		if out := hostRun(t, h, "stat", "-c", "%a %U %G", "/run/bitbuilder/io.bitbuilder"); out != "660 root bitbuilder\n" {
			t.Errorf("socket mode and owner: %q, want 660 root bitbuilder", out)
		}
		out, stderr, err := h.Run(ctx, "varlinkctl", "info", "unix:/run/bitbuilder/io.bitbuilder")
		if err != nil {
			t.Fatalf("first varlinkctl call: %v\n%s%s\n%s", err, out, stderr, h.JournalTail(ctx, 30, "-u", "bitbuilderd.service"))
		}
		if !strings.Contains(string(out), "io.bitbuilder.Tenant") {
			t.Errorf("varlinkctl info does not list io.bitbuilder.Tenant:\n%s", out)
		}
		if state := strings.TrimSpace(hostRun(t, h, "systemctl", "is-active", "bitbuilderd.service")); state != "active" {
			t.Errorf("bitbuilderd.service is %q after the first call, want active", state)
		}
		// tenant@'s own ExecStart against the real daemon: the tenant exists, so Tenant.Start succeeds and the unit
		// stays active (its namespace and network units are left out: --job-mode=ignore-dependencies).
		if out, stderr, err := h.Run(ctx, "varlinkctl", "call", "/run/bitbuilder/io.bitbuilder", "io.bitbuilder.Tenant.Create", `{"name":"gamma","networkIndex":9,"desiredState":"stopped"}`); err != nil {
			t.Fatalf("Tenant.Create: %v\n%s%s", err, out, stderr)
		}
		if _, _, err := h.Run(ctx, "systemctl", "start", "--job-mode=ignore-dependencies", units.TenantUnit("gamma")); err != nil {
			t.Fatalf("start %s: %v\n%s", units.TenantUnit("gamma"), err, h.JournalTail(ctx, 20, "-u", units.TenantUnit("gamma")))
		}
		if state := strings.TrimSpace(hostRun(t, h, "systemctl", "is-active", units.TenantUnit("gamma"))); state != "active" {
			t.Errorf("%s is %q, want active", units.TenantUnit("gamma"), state)
		}
		if out := hostRun(t, h, "varlinkctl", "call", "/run/bitbuilder/io.bitbuilder", "io.bitbuilder.Tenant.Get", `{"name":"gamma"}`); !strings.Contains(out, `"desiredState" : "running"`) && !strings.Contains(out, `"desiredState":"running"`) {
			t.Errorf("after tenant@gamma ran, Tenant.Get says:\n%s", out)
		}
		// The whole chain (netns-tenant@, tenant-network@, tenant@) once the daemon implements Network.Apply.
		_, applyErr, err := h.Run(ctx, "varlinkctl", "call", "/run/bitbuilder/io.bitbuilder", "io.bitbuilder.Network.Apply", `{"tenant":"gamma"}`)
		var ee *testhost.ExitError
		if errors.As(err, &ee) {
			applyErr = ee.Stderr
		}
		if bytes.Contains(applyErr, []byte("MethodNotImplemented")) || bytes.Contains(applyErr, []byte("InterfaceNotFound")) {
			t.Log("bitbuilderd does not implement io.bitbuilder.Network.Apply yet: the tenant-network@ chain is not exercised")
		} else {
			hostRun(t, h, "systemctl", "stop", units.TenantUnit("gamma"))
			if _, _, err := h.Run(ctx, "systemctl", "start", units.TenantUnit("gamma")); err != nil {
				t.Errorf("start %s with its dependencies: %v\n%s", units.TenantUnit("gamma"), err,
					h.JournalTail(ctx, 30, "-u", "tenant-network@gamma.service", "-u", "netns-tenant@gamma.service", "-u", "bitbuilderd.service"))
			}
			for _, u := range []string{"netns-tenant@gamma.service", "tenant-network@gamma.service", units.TenantUnit("gamma")} {
				if state := strings.TrimSpace(hostRun(t, h, "systemctl", "is-active", u)); state != "active" {
					t.Errorf("%s is %q, want active", u, state)
				}
			}
		}
		// Stopping the service keeps the socket (RuntimeDirectoryPreserve=yes): the next call starts it again.
		hostRun(t, h, "systemctl", "stop", "bitbuilderd.service")
		if _, _, err := h.Run(ctx, "varlinkctl", "info", "unix:/run/bitbuilder/io.bitbuilder"); err != nil {
			t.Errorf("call after stopping the service: %v\n%s", err, h.JournalTail(ctx, 30, "-u", "bitbuilderd.service"))
		}
	})
}

// TestDebianPackage builds the .deb with packaging/deb/build-deb.sh, installs it with dpkg in a booted systemd 257
// host and checks what its maintainer scripts did, then removes and purges it.
func TestDebianPackage(t *testing.T) {
	testpolicy.Short(t, "boots a systemd 257 test host")
	testpolicy.RequireRoot(t, "to boot the systemd 257 test host")
	testpolicy.RequireTool(t, "dpkg-deb")
	bin := buildPrograms(t)
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", "../../packaging/deb/build-deb.sh", out)
	cmd.Env = append(os.Environ(), "BB_BIN="+bin, "VERSION=1.0", "BB_DEB_COMPRESS=gzip")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-deb.sh: %v", err)
	}
	deb := strings.TrimSpace(string(b))
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	h := testhost.Start(t, testhost.Options{Name: "deb"})
	ctx := t.Context()
	if err := h.WriteFile("/tmp/bitbuilder.deb", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := h.Run(ctx, "dpkg", "-i", "/tmp/bitbuilder.deb"); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, stderr)
	}
	if out := hostRun(t, h, "dpkg-query", "-W", "-f", "${Status} ${Version}", "bitbuilder"); out != "install ok installed 1.0" {
		t.Errorf("dpkg-query: %q", out)
	}
	if out := hostRun(t, h, "getent", "group", "bitbuilder"); !strings.HasPrefix(out, "bitbuilder:") {
		t.Errorf("no bitbuilder group after install: %q", out)
	}
	if _, _, err := h.Run(ctx, "test", "-d", "/etc/bitbuilder"); err != nil {
		t.Errorf("no /etc/bitbuilder after install: %v", err)
	}
	for _, unit := range []string{"bitbuilderd.socket", "bitbuilderd.service"} {
		if out, _, _ := h.Run(ctx, "systemctl", "is-enabled", unit); strings.TrimSpace(string(out)) != "enabled" {
			t.Errorf("%s is %q after install, want enabled", unit, strings.TrimSpace(string(out)))
		}
	}
	if out, _, _ := h.Run(ctx, "systemctl", "is-active", "bitbuilderd.socket"); strings.TrimSpace(string(out)) != "active" {
		t.Errorf("bitbuilderd.socket is %q after install, want active", strings.TrimSpace(string(out)))
	}
	// A registry written now is picked up by the packaged generator on the next reload.
	if err := h.WriteFile(units.DefaultRegistryPath, []byte(`{"version":1,"tenants":[{"name":"pkg","networkIndex":3,"running":true}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	hostRun(t, h, "systemctl", "daemon-reload")
	if out, _, _ := h.Run(ctx, "systemctl", "show", "-p", "UnitFileState", "--value", "tenant@pkg.service"); strings.TrimSpace(string(out)) != "generated" {
		t.Errorf("tenant@pkg.service after install and reload: UnitFileState=%q, want generated", strings.TrimSpace(string(out)))
	}

	if _, stderr, err := h.Run(ctx, "dpkg", "-r", "bitbuilder"); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, stderr)
	}
	if out, _, _ := h.Run(ctx, "systemctl", "is-active", "bitbuilderd.socket"); strings.TrimSpace(string(out)) == "active" {
		t.Errorf("bitbuilderd.socket still active after removal")
	}
	for _, p := range []string{"/usr/lib/systemd/system-generators/bitbuilder-generator", "/usr/lib/bitbuilder/bitbuilderd", "/usr/lib/systemd/system/bitbuilderd.socket"} {
		if _, _, err := h.Run(ctx, "test", "-e", p); err == nil {
			t.Errorf("%s is still there after removal", p)
		}
	}
	if out, _, _ := h.Run(ctx, "systemctl", "show", "-p", "LoadState", "--value", "tenant@pkg.service"); strings.TrimSpace(string(out)) != "not-found" {
		t.Errorf("tenant@pkg.service after removal: LoadState=%q, want not-found", strings.TrimSpace(string(out)))
	}
	if _, _, err := h.Run(ctx, "test", "-e", units.DefaultRegistryPath); err != nil {
		t.Errorf("removal (not purge) deleted the boot registry: %v", err)
	}
	if _, stderr, err := h.Run(ctx, "dpkg", "-P", "bitbuilder"); err != nil {
		t.Fatalf("dpkg -P: %v\n%s", err, stderr)
	}
	if _, _, err := h.Run(ctx, "test", "-e", "/etc/bitbuilder"); err == nil {
		t.Errorf("/etc/bitbuilder is still there after purge")
	}
}
