package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// extFile is one file of a test extension or root: path relative to the tree, content, mode.
type extFile struct {
	path, content string
	mode          os.FileMode
}

func writeTree(t testing.TB, dir string, files ...extFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, []byte(f.content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// extCheckout writes the templates step's checkout of extension use u (image name image) with files, and its
// commit marker.
func extCheckout(t testing.TB, tenantsDir, tn string, u tenant.TemplateUse, image string, files ...extFile) {
	t.Helper()
	dir := TemplateDir(tenantsDir, tn, u)
	os.RemoveAll(dir)
	md := fmt.Sprintf(`{"template":{"type":%q,"version":"1.0.0","name":%q,"description":"test"}}`, u.Role, image)
	writeTree(t, dir, append(files, extFile{path: "metadata.json", content: md})...)
	if err := os.WriteFile(dir+".commit", []byte(u.Commit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sysextRelease(image, content string) extFile {
	return extFile{path: "usr/lib/extension-release.d/extension-release." + image, content: content}
}

func confextRelease(image, content string) extFile {
	return extFile{path: "etc/extension-release.d/extension-release." + image, content: content}
}

// refreshes records what each fake refresh would have merged: "machine-pid class: images".
type refreshes struct {
	mu   sync.Mutex
	cfg  units.Config
	tn   string
	log  []string
	pids map[int]string
}

func (r *refreshes) refresh(_ context.Context, pid int, class string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.pids[pid]
	mp := r.cfg.MachinePaths(r.tn, m)
	dir := mp.Sysext
	if class == machines.ClassConfext {
		dir = mp.Confext
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	r.log = append(r.log, fmt.Sprintf("%s %s: %s", m, class, strings.Join(names, " ")))
	return nil
}

func (r *refreshes) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.log
	r.log = nil
	sort.Strings(out)
	return out
}

// pidHost is fakeMachineHost with a leader per machine.
type pidHost struct {
	*fakeMachineHost
	leaders map[string]int
}

func (h *pidHost) Machine(ctx context.Context, name string) (machines.Info, bool, error) {
	info, ok, err := h.fakeMachineHost.Machine(ctx, name)
	info.Leader = h.leaders[name]
	return info, ok, err
}

func condOf(cs []tenant.Condition, typ string) tenant.Condition {
	for _, c := range cs {
		if c.Type == typ {
			return c
		}
	}
	return tenant.Condition{}
}

// TestExtensionsStep drives extensions through the machines step against a fake host: each machine gets exactly
// the compatible extensions in its own directories, named after their images; a running container is told to merge
// anew only when what it has changed (a pin, the list, a new boot), and only for the class that changed; an
// incompatible or bad extension is refused with the rule and file, reaching no machine; retired trees go once the
// machine merged anew; checkouts of dropped extensions are removed.
func TestExtensionsStep(t *testing.T) {
	ctx := t.Context()
	state := t.TempDir()
	cfg := units.Config{StateDir: state}
	tenantsDir := filepath.Join(state, "tenants")
	host := &pidHost{fakeMachineHost: newFakeMachineHost(), leaders: map[string]int{"t-web": 100, "t-db": 200}}
	rec := &refreshes{cfg: cfg, tn: "t", pids: map[int]string{100: "web", 200: "db", 201: "db"}}
	step := &MachinesStep{
		Host: host, Units: cfg, TenantsDir: tenantsDir, UnitDir: t.TempDir(), RefreshExtensions: rec.refresh,
		Prepare: func(_ context.Context, dir, commit string, copies []machines.Copy) error {
			writeTree(t, copies[0].Dst, extFile{path: "usr/lib/os-release", content: "ID=debian\nVERSION_ID=13\n"})
			os.Symlink("../usr/lib/os-release", filepath.Join(copies[0].Dst, "etc", "os-release"))
			return os.WriteFile(filepath.Join(dir, "commit"), []byte(commit+"\n"), 0o644)
		},
	}
	c1, c2 := strings.Repeat("1", 40), strings.Repeat("2", 40)
	deb := tenant.TemplateUse{Role: "container", Name: "deb", Template: "deb", Commit: c1}
	if err := os.MkdirAll(filepath.Join(TemplateDir(tenantsDir, "t", deb), "rootfs", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(TemplateDir(tenantsDir, "t", deb)+".commit", []byte(c1+"\n"), 0o644)
	// The use is named "tools" but the template's image (and release file) is "bb-tools".
	tools := tenant.TemplateUse{Role: "sysext", Name: "tools", Template: "tools-repo", Commit: c1}
	extCheckout(t, tenantsDir, "t", tools, "bb-tools", sysextRelease("bb-tools", "ID=debian\nVERSION_ID=13\n"),
		extFile{path: "usr/bin/bb", content: "v1", mode: 0o755}, extFile{path: "opt/bb/data", content: "v1"})
	fedora := tenant.TemplateUse{Role: "sysext", Name: "fedora", Template: "fedora", Commit: c1}
	extCheckout(t, tenantsDir, "t", fedora, "fedora", sysextRelease("fedora", "ID=fedora\nVERSION_ID=41\n"), extFile{path: "usr/share/f", content: "f"})
	conf := tenant.TemplateUse{Role: "confext", Name: "conf", Template: "conf", Commit: c1}
	extCheckout(t, tenantsDir, "t", conf, "conf", confextRelease("conf", "ID=_any\n"), extFile{path: "etc/conf.d/a", content: "a"})

	tn := &tenant.Tenant{Name: "t", NetworkIndex: 1, DesiredState: tenant.Running,
		Templates: []tenant.TemplateUse{deb, tools, fedora, conf},
		Machines: []tenant.Machine{
			{Name: "web", Kind: tenant.Container, Template: "deb", DesiredState: tenant.Running},
			{Name: "db", Kind: tenant.Container, Template: "deb", DesiredState: tenant.Running},
		}}
	pass := func() []tenant.Condition {
		t.Helper()
		cs, sts, err := step.EnsureStatus(ctx, tn)
		if err != nil {
			t.Fatalf("EnsureStatus: %v", err)
		}
		tn.MachineStatus = sts
		return cs
	}
	has := func(m, class string) []string {
		t.Helper()
		mp := cfg.MachinePaths("t", m)
		dir := mp.Sysext
		if class == "confext" {
			dir = mp.Confext
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	read := func(m, class, rel string) string {
		mp := cfg.MachinePaths("t", m)
		dir := mp.Sysext
		if class == "confext" {
			dir = mp.Confext
		}
		b, _ := os.ReadFile(filepath.Join(dir, rel))
		return string(b)
	}

	// Starting: the directories exist before the units start, holding the compatible extensions only.
	cs := pass()
	for _, m := range []string{"web", "db"} {
		if got := has(m, "sysext"); !slices.Equal(got, []string{"bb-tools"}) {
			t.Errorf("%s sysexts %v, want [bb-tools] (named after the image, fedora refused)", m, got)
		}
		if got := has(m, "confext"); !slices.Equal(got, []string{"conf"}) {
			t.Errorf("%s confexts %v", m, got)
		}
		// Only the merged hierarchies reach the machine, not metadata.json.
		if _, err := os.Stat(filepath.Join(cfg.MachinePaths("t", m).Sysext, "bb-tools", "metadata.json")); err == nil {
			t.Errorf("%s got metadata.json", m)
		}
	}
	if c := condOf(cs, "ExtensionsCompatible"); c.Status != "false" || !strings.Contains(c.Message, "sysext fedora") ||
		!strings.Contains(c.Message, "ID=fedora matches neither the base's ID=debian") || !strings.Contains(c.Message, "for machine web") {
		t.Errorf("ExtensionsCompatible: %+v", c)
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("refreshed before the machines ran: %v", got)
	}

	// Running: each container merges once, both classes; a steady pass merges nothing.
	host.settle()
	pass()
	if got, want := rec.take(), []string{"db confext: conf", "db sysext: bb-tools", "web confext: conf", "web sysext: bb-tools"}; !slices.Equal(got, want) {
		t.Errorf("refreshes %v, want %v", got, want)
	}
	cs = pass()
	if got := rec.take(); len(got) != 0 {
		t.Errorf("a steady pass refreshed %v", got)
	}
	if c := condOf(cs, "ExtensionsApplied"); c.Status != "true" || !strings.Contains(c.Message, "2 running containers") {
		t.Errorf("ExtensionsApplied: %+v", c)
	}
	if got, want := tn.StatusOf("web").Extensions, []string{"sysext/bb-tools@" + c1, "confext/conf@" + c1}; !slices.Equal(got, want) {
		t.Errorf("web's status lists extensions %v, want %v", got, want)
	}

	// A pin change swaps the content and refreshes the sysexts only; the old tree is gone afterwards.
	tools.Commit = c2
	tn.Templates[1] = tools
	extCheckout(t, tenantsDir, "t", tools, "bb-tools", sysextRelease("bb-tools", "ID=debian\nVERSION_ID=13\n"),
		extFile{path: "usr/bin/bb", content: "v2", mode: 0o755})
	pass()
	if got, want := rec.take(), []string{"db sysext: bb-tools", "web sysext: bb-tools"}; !slices.Equal(got, want) {
		t.Errorf("refreshes after a pin change %v, want %v", got, want)
	}
	if got := read("web", "sysext", "bb-tools/usr/bin/bb"); got != "v2" {
		t.Errorf("after the pin change web has %q", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.MachinePaths("t", "web").Sysext, "bb-tools", "opt")); err == nil {
		t.Errorf("v1's opt/ is still there")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg.MachinePaths("t", "web").Sysext), ".retired")); err == nil {
		t.Errorf("retired trees left after the refresh")
	}

	// A new boot of db (new leader) merges again; web is left alone.
	host.leaders["t-db"] = 201
	pass()
	if got, want := rec.take(), []string{"db confext: conf", "db sysext: bb-tools"}; !slices.Equal(got, want) {
		t.Errorf("refreshes after db rebooted %v, want %v", got, want)
	}

	// Bad extensions: each refused with its rule and file, none reaches a machine, the others stay.
	osrel := tenant.TemplateUse{Role: "sysext", Name: "osrel", Template: "osrel", Commit: c1}
	extCheckout(t, tenantsDir, "t", osrel, "osrel", sysextRelease("osrel", "ID=_any\n"), extFile{path: "usr/lib/os-release", content: "ID=evil\n"})
	two := tenant.TemplateUse{Role: "sysext", Name: "two", Template: "two", Commit: c1}
	twoRel := "usr/lib/extension-release.d/extension-release."
	extCheckout(t, tenantsDir, "t", two, "two_1", extFile{path: twoRel + "two", content: "ID=_any\n"}, extFile{path: twoRel + "other", content: "ID=_any\n"})
	// Two candidates: the fallback name and a file marked as a renamed image's (as systemd reads them).
	if err := unix.Lsetxattr(filepath.Join(TemplateDir(tenantsDir, "t", two), twoRel+"other"), "user.extension-release.strict", []byte("0"), 0); err != nil {
		t.Fatalf("setting the xattr: %v", err)
	}
	exe := tenant.TemplateUse{Role: "confext", Name: "exe", Template: "exe", Commit: c1}
	extCheckout(t, tenantsDir, "t", exe, "exe", confextRelease("exe", "ID=_any\n"), extFile{path: "etc/run.sh", content: "#!/bin/sh\n", mode: 0o755})
	clash := tenant.TemplateUse{Role: "sysext", Name: "clash", Template: "clash", Commit: c1}
	extCheckout(t, tenantsDir, "t", clash, "bb-tools", sysextRelease("bb-tools", "ID=_any\n"))
	tn.Templates = append(tn.Templates, osrel, two, exe, clash)
	cs = pass()
	c := condOf(cs, "ExtensionsCompatible")
	for _, want := range []string{
		"sysext osrel", "D29, usr/lib/os-release",
		"sysext two", "D27",
		"confext exe", "D35, etc/run.sh", "noexec",
		"sysext clash", `image name "bb-tools" is also the image of sysext tools`,
	} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("ExtensionsCompatible does not say %q: %s", want, c.Message)
		}
	}
	if got := has("web", "sysext"); !slices.Equal(got, []string{"bb-tools"}) || read("web", "sysext", "bb-tools/usr/bin/bb") != "v2" {
		t.Errorf("after bad extensions web has %v", got)
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("bad extensions caused refreshes %v", got)
	}

	// Dropping every extension: each container unmerges; the checkouts of the dropped uses go.
	tn.Templates = []tenant.TemplateUse{deb}
	pass()
	if got, want := rec.take(), []string{"db confext: ", "db sysext: ", "web confext: ", "web sysext: "}; !slices.Equal(got, want) {
		t.Errorf("refreshes after dropping all %v, want %v", got, want)
	}
	for _, class := range []string{"sysext", "confext"} {
		if ents, _ := os.ReadDir(filepath.Join(tenantsDir, "t", "extensions", class)); len(ents) != 0 {
			t.Errorf("checkouts of dropped %ss left: %d entries", class, len(ents))
		}
	}
	if cs := pass(); condOf(cs, "ExtensionsCompatible").Type != "" || len(rec.take()) != 0 {
		t.Errorf("a tenant without extensions: conditions %+v", cs)
	}
}

// TestExtensionsVMAndFailures: a VM gets its compatible extensions in its directories before it starts and is
// never refreshed or restarted for a change while it runs (the change is pending until its next start); a
// container whose refresh fails (no systemd-sysext in it) reports ExtensionsApplied=false naming it and is asked
// again on the next pass.
func TestExtensionsVMAndFailures(t *testing.T) {
	ctx := t.Context()
	state := t.TempDir()
	cfg := units.Config{StateDir: state}
	tenantsDir := filepath.Join(state, "tenants")
	host := &pidHost{fakeMachineHost: newFakeMachineHost(), leaders: map[string]int{"t-vm": 300, "t-c": 400}}
	var refreshed []string
	fail := true
	step := &MachinesStep{
		Host: host, Units: cfg, TenantsDir: tenantsDir, UnitDir: t.TempDir(),
		RefreshExtensions: func(_ context.Context, pid int, class string) error {
			refreshed = append(refreshed, fmt.Sprintf("%d %s", pid, class))
			if fail {
				return fmt.Errorf("%w: systemd-%s: No such file or directory", machines.ErrNoExtensionTool, class)
			}
			return nil
		},
		Prepare: func(_ context.Context, dir, commit string, copies []machines.Copy) error {
			writeTree(t, copies[0].Dst, extFile{path: "etc/os-release", content: "ID=debian\nVERSION_ID=13\n"})
			if len(copies) > 1 {
				writeTree(t, copies[1].Dst, extFile{path: "vmlinuz", content: "k"})
			}
			return os.WriteFile(filepath.Join(dir, "commit"), []byte(commit+"\n"), 0o644)
		},
	}
	c1, c2 := strings.Repeat("1", 40), strings.Repeat("2", 40)
	vmUse := tenant.TemplateUse{Role: "machine", Name: "vmt", Template: "vmt", Commit: c1}
	ctUse := tenant.TemplateUse{Role: "container", Name: "deb", Template: "deb", Commit: c1}
	for _, u := range []tenant.TemplateUse{vmUse, ctUse} {
		dir := TemplateDir(tenantsDir, "t", u)
		writeTree(t, dir, extFile{path: "disk-image/rootfs/x", content: "x"}, extFile{path: "disk-image/boot/x", content: "x"}, extFile{path: "rootfs/x", content: "x"})
		os.WriteFile(dir+".commit", []byte(c1+"\n"), 0o644)
	}
	tools := tenant.TemplateUse{Role: "sysext", Name: "tools", Template: "tools", Commit: c1}
	extCheckout(t, tenantsDir, "t", tools, "tools", sysextRelease("tools", "ID=_any\n"), extFile{path: "usr/bin/x", content: "v1"})
	tn := &tenant.Tenant{Name: "t", NetworkIndex: 1, DesiredState: tenant.Running,
		Templates: []tenant.TemplateUse{vmUse, ctUse, tools},
		Machines: []tenant.Machine{
			{Name: "vm", Kind: tenant.VM, Template: "vmt", DesiredState: tenant.Running},
			{Name: "c", Kind: tenant.Container, Template: "deb", DesiredState: tenant.Running},
		}}
	pass := func() []tenant.Condition {
		t.Helper()
		cs, sts, _ := step.EnsureStatus(ctx, tn)
		tn.MachineStatus = sts
		return cs
	}
	vmBin := filepath.Join(cfg.MachinePaths("t", "vm").Sysext, "tools", "usr", "bin", "x")
	pass()
	if b, err := os.ReadFile(vmBin); err != nil || string(b) != "v1" {
		t.Fatalf("the VM's sysext before it started: %q %v", b, err)
	}
	host.settle()
	cs := pass()
	if c := condOf(cs, "ExtensionsApplied"); c.Status != "false" || !strings.Contains(c.Message, "machine c") || !strings.Contains(c.Message, "no systemd-sysext") {
		t.Errorf("ExtensionsApplied with a failing refresh: %+v", c)
	}
	if len(refreshed) != 1 || refreshed[0] != "400 sysext" {
		t.Errorf("refreshes %v: want the container's only, never the VM's", refreshed)
	}
	// Asked again on the next pass; once it works, the condition clears.
	fail, refreshed = false, nil
	cs = pass()
	if len(refreshed) != 1 || condOf(cs, "ExtensionsApplied").Status != "true" {
		t.Errorf("after the refresh works: refreshes %v, %+v", refreshed, condOf(cs, "ExtensionsApplied"))
	}

	// A pin change while the VM runs: its directory is left alone and the change is pending; not restarted.
	tools.Commit = c2
	tn.Templates[2] = tools
	extCheckout(t, tenantsDir, "t", tools, "tools", sysextRelease("tools", "ID=_any\n"), extFile{path: "usr/bin/x", content: "v2"})
	starts := len(host.starts)
	cs = pass()
	if b, _ := os.ReadFile(vmBin); string(b) != "v1" {
		t.Errorf("the running VM's directory changed under it: %q", b)
	}
	if c := condOf(cs, "ExtensionsApplied"); c.Status != "unknown" || c.Reason != "PendingRestart" || !strings.Contains(c.Message, "VM vm gets sysext tools") {
		t.Errorf("ExtensionsApplied while the VM waits: %+v", c)
	}
	if len(host.starts) != starts {
		t.Errorf("machines started again: %v", host.starts[starts:])
	}
	// At its next start it gets the new commit.
	host.Stop(ctx, units.MachineUnit("t", "vm"), true)
	host.registered["t-vm"] = false
	pass()
	if b, _ := os.ReadFile(vmBin); string(b) != "v2" {
		t.Errorf("the VM did not get the new commit at its start: %q", b)
	}
}
