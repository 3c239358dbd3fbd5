package machines

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseVMConfig(t *testing.T) {
	example, err := os.ReadFile("../examples/templates/machine/config/vm-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseVMConfig(example)
	if err != nil {
		t.Fatalf("the example template's vm-config.yaml: %v", err)
	}
	if got := c.Args(); !slices.Equal(got, []string{"--tpm=no", "--secure-boot=no", "--console=read-only"}) {
		t.Errorf("args of the example: %v", got)
	}
	for _, tc := range []struct{ doc, key string }{
		{"firmware: coreboot\n", "firmware"},
		{"kvm: maybe\n", "kvm"},
		{"network_bridge: br0\n", "network_bridge"},
		{"extra_qemu_args: [-device, foo]\n", "(document)"},
		{"kvm: no\n---\nkvm: yes\n", "(document)"},
		{"a: &a [*a, *a]\n", "(document)"},
		{strings.Repeat("#", MaxVMConfigSize+1), "(file)"},
	} {
		_, err := ParseVMConfig([]byte(tc.doc))
		var ve *VMConfigError
		if !errors.As(err, &ve) || ve.Key != tc.key {
			t.Errorf("%.40q: error %v, want one for key %s", tc.doc, err, tc.key)
		}
	}
	if c, err := ParseVMConfig([]byte("firmware: bios\n")); err != nil || !slices.Equal(c.Args(), []string{"--firmware=bios"}) {
		t.Errorf("bios: %v %v", c.Args(), err)
	}
}

func TestSanitizeNspawnSettings(t *testing.T) {
	in := "[Exec]\nBoot=yes\nEnvironment=A=1\nPrivateUsers=no\nCapability=all\n[Files]\nBind=/:/host\nReadOnly=yes\n[Network]\nPrivate=no\n"
	out, dropped := SanitizeNspawnSettings([]byte(in))
	for _, bad := range []string{"Boot", "PrivateUsers", "Capability", "Bind", "Private="} {
		if strings.Contains(string(out), bad) {
			t.Errorf("kept %s:\n%s", bad, out)
		}
	}
	if !strings.Contains(string(out), "Environment=A=1") || !strings.Contains(string(out), "ReadOnly=yes") {
		t.Errorf("dropped a harmless setting:\n%s", out)
	}
	if want := []string{"Exec.Boot", "Exec.PrivateUsers", "Exec.Capability", "Files.Bind", "Network.Private"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
}

func TestReadTemplateFile(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "config"), 0o755)
	os.WriteFile(filepath.Join(root, "config", "ok"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(root, "config", "big"), make([]byte, 100), 0o644)
	os.Symlink("/etc/shadow", filepath.Join(root, "config", "link"))
	os.Symlink("../..", filepath.Join(root, "up"))
	if b, err := ReadTemplateFile(root, "config/ok", 10); err != nil || string(b) != "x" {
		t.Errorf("ok: %q %v", b, err)
	}
	if b, err := ReadTemplateFile(root, "config/missing", 10); err != nil || b != nil {
		t.Errorf("missing: %q %v", b, err)
	}
	for _, p := range []string{"config/big", "config/link", "up/etc/passwd"} {
		if _, err := ReadTemplateFile(root, p, 10); err == nil {
			t.Errorf("%s: read, want refused", p)
		}
	}
}

func TestPrepareAndRemoveTree(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "os-release"), []byte("ID=test\n"), 0o644)
	os.Symlink("../etc/os-release", filepath.Join(src, "os-release"))
	dir := filepath.Join(t.TempDir(), "m")
	root := filepath.Join(dir, "rootfs")
	if err := Prepare(t.Context(), dir, "c1", []Copy{{Src: src, Dst: root}}); err != nil {
		t.Fatal(err)
	}
	if RootCommit(dir) != "c1" {
		t.Errorf("commit %q", RootCommit(dir))
	}
	if l, err := os.Readlink(filepath.Join(root, "os-release")); err != nil || l != "../etc/os-release" {
		t.Errorf("link not kept: %q %v", l, err)
	}
	// A copy of another commit replaces the old root: nothing of it is left.
	os.WriteFile(filepath.Join(root, "written-by-machine"), []byte("x"), 0o644)
	if err := Prepare(t.Context(), dir, "c2", []Copy{{Src: src, Dst: root}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "written-by-machine")); !os.IsNotExist(err) || RootCommit(dir) != "c2" {
		t.Errorf("old root left: %v, commit %q", err, RootCommit(dir))
	}
	// A failed copy records no commit.
	if err := Prepare(t.Context(), dir, "c3", []Copy{{Src: filepath.Join(src, "missing"), Dst: root}}); err == nil || RootCommit(dir) != "" {
		t.Errorf("failed prepare: %v, commit %q", err, RootCommit(dir))
	}
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("left: %v", err)
	}
}

func TestUnitFromPath(t *testing.T) {
	if got := UnitFromPath("/org/freedesktop/systemd1/unit/tenant_2dmachine_40shop_5cx2dweb_2eservice"); got != `tenant-machine@shop\x2dweb.service` {
		t.Errorf("got %q", got)
	}
}
