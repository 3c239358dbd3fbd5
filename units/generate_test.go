package units

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// tree lists dir: one line per entry, "path" for files and "path -> target" for symlinks.
func tree(t *testing.T, dir string) []byte {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, rel+" -> "+target)
		case d.IsDir():
			lines = append(lines, rel+"/")
		default:
			lines = append(lines, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	reg := testRegistry(t)
	rep, err := Generate(dir, reg.Tenants, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tenants != len(reg.Tenants) || len(rep.Skipped) != 0 {
		t.Errorf("report %+v, want %d tenants and none skipped", rep, len(reg.Tenants))
	}
	golden(t, "generate.golden", tree(t, dir))
	// Every file is exactly what Render returns, and the wants links resolve to the tenant units.
	n := 0
	for _, rt := range reg.Tenants {
		units, err := Render(rt.Tenant(), Config{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range units {
			got, err := os.ReadFile(filepath.Join(dir, u.Name))
			if err != nil || !bytes.Equal(got, u.Content) {
				t.Errorf("%s: %v, content differs from Render's", u.Name, err)
			}
			n++
		}
		link := filepath.Join(dir, "multi-user.target.wants", TenantUnit(rt.Name))
		_, err = os.Stat(link)
		if rt.Running != (err == nil) {
			t.Errorf("tenant %s running=%v, wants link: %v", rt.Name, rt.Running, err)
		}
	}
	if rep.Units != n {
		t.Errorf("report says %d units, Render gives %d", rep.Units, n)
	}
}

// TestGenerateHostile checks that bad and colliding tenants are skipped with a reason, that their partial output
// is removed, and that nothing outside the directory is written, even through a symlink planted in it.
func TestGenerateHostile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "gen")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink where tenant "planted"'s network unit would go: Generate must not write through it.
	if err := os.Symlink("../outside/victim", filepath.Join(dir, "tenant-network@planted.service")); err != nil {
		t.Fatal(err)
	}
	tenants := []RegistryTenant{
		{Name: "ok", NetworkIndex: 1, Running: true},
		{Name: "../outside/victim", NetworkIndex: 2, Running: true},
		{Name: "/etc/passwd", NetworkIndex: 3},
		{Name: "..", NetworkIndex: 4},
		{Name: "ok", NetworkIndex: 5, Running: true},
		{Name: "planted", NetworkIndex: 6, Running: true},
		{Name: "ok-2", NetworkIndex: 7, Infra: true},
	}
	rep, err := Generate(dir, tenants, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tenants != 2 {
		t.Errorf("generated %d tenants, want 2 (ok, ok-2)", rep.Tenants)
	}
	var got []string
	for _, s := range rep.Skipped {
		got = append(got, fmt.Sprintf("%d:%s", s.Entry, s.Name))
	}
	if want := "1:../outside/victim 2:/etc/passwd 3:.. 4:ok 5:planted"; strings.Join(got, " ") != want {
		t.Errorf("skipped %q, want %q", strings.Join(got, " "), want)
	}
	for _, s := range rep.Skipped[3:] {
		if !strings.Contains(s.Reason, "exists already") {
			t.Errorf("skipped %v: reason does not say what collided", s)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("file outside the generator directory was changed: %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("outside directory has %d entries, want 1", len(entries))
	}
	golden(t, "generate-hostile.golden", tree(t, dir))
}

func TestGenerateBadDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tenants := []RegistryTenant{{Name: "a", NetworkIndex: 1}}
	for _, dir := range []string{filepath.Join(file, "..", "missing"), file} {
		if _, err := Generate(dir, tenants, Config{}); err == nil {
			t.Errorf("Generate into %s succeeded", dir)
		}
	}
	// A planted multi-user.target.wants symlink is not followed.
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "multi-user.target.wants")); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(dir, []RegistryTenant{{Name: "a", NetworkIndex: 1, Running: true}}, Config{}); err == nil {
		t.Errorf("Generate went on with a symlinked multi-user.target.wants")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("Generate wrote %d entries through the symlink", len(entries))
	}
	if _, err := Generate(t.TempDir(), tenants, Config{StateDir: "relative"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad config: %v, want ErrInvalidConfig", err)
	}
}

func TestWriteUnitRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", ".", "..", "../x.service", "a/b.service", "x\x00.service"} {
		if _, err := WriteUnit(dir, Unit{Name: name, Content: []byte("x")}); !errors.Is(err, ErrInvalidUnit) {
			t.Errorf("WriteUnit(%q): %v, want ErrInvalidUnit", name, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused writes left %d entries", len(entries))
	}
}

func TestReplaceUnit(t *testing.T) {
	dir := t.TempDir()
	u := Unit{Name: "tenant@a.service", Content: []byte("[Unit]\nDescription=one\n")}
	steps := []struct {
		name    string
		content string
		changed bool
	}{
		{"create", "[Unit]\nDescription=one\n", true},
		{"same again", "[Unit]\nDescription=one\n", false},
		{"longer", "[Unit]\nDescription=one two\n", true},
		{"shorter prefix", "[Unit]\nDescription=one\n", true},
		{"same again", "[Unit]\nDescription=one\n", false},
	}
	for _, s := range steps {
		u.Content = []byte(s.content)
		changed, err := ReplaceUnit(dir, u)
		if err != nil || changed != s.changed {
			t.Fatalf("%s: changed=%v err=%v, want changed=%v", s.name, changed, err, s.changed)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, u.Name)); string(got) != s.content {
			t.Fatalf("%s: file holds %q", s.name, got)
		}
	}
	// A symlink in place of the unit is replaced, not written through.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := Unit{Name: "link.service", Content: []byte("[Unit]\n")}
	if err := os.Symlink(victim, filepath.Join(dir, link.Name)); err != nil {
		t.Fatal(err)
	}
	if changed, err := ReplaceUnit(dir, link); err != nil || !changed {
		t.Fatalf("replace symlink: changed=%v err=%v", changed, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("ReplaceUnit wrote through a symlink: victim holds %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, link.Name)); fi == nil || !fi.Mode().IsRegular() {
		t.Errorf("%s is not a regular file after ReplaceUnit", link.Name)
	}
	if _, err := ReplaceUnit(dir, Unit{Name: "../x.service"}); !errors.Is(err, ErrInvalidUnit) {
		t.Errorf("bad name: %v, want ErrInvalidUnit", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d entries in the directory, want 2 (no temporary files left)", len(entries))
	}
}
