package validate

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bitbuilder/bitbuilder/template/metadata"
)

// examplesDir holds the example templates, relative to this package.
const examplesDir = "../../examples/templates"

type example struct {
	name string
	dir  string
	kind Kind
}

// exampleNames are the example templates this package maintains (network/ is maintained with the network
// templates and tested there).
var exampleNames = []string{"confext", "container", "homed", "infrastructure", "machine", "sysext"}

// examples lists the example templates with the kind their metadata.json declares.
func examples(t *testing.T) []example {
	t.Helper()
	var out []example
	for _, name := range exampleNames {
		dir := filepath.Join(examplesDir, name)
		data, err := os.ReadFile(filepath.Join(dir, "metadata.json"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		md, err := metadata.Parse(data)
		if err != nil {
			t.Fatalf("%s/metadata.json: %v", name, err)
		}
		out = append(out, example{name: name, dir: dir, kind: Kind(md.Template.Type)})
	}
	return out
}

func TestExamplesValidate(t *testing.T) {
	for _, ex := range examples(t) {
		t.Run(ex.name, func(t *testing.T) {
			if ex.kind != Kind(ex.name) {
				t.Errorf("metadata.json says type %q in directory %s", ex.kind, ex.name)
			}
			rep, err := Tree(t.Context(), ex.dir, ex.kind, Options{Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			if rep.HasErrors() {
				t.Errorf("the checkout has errors:\n%s", dump(rep))
			}
			// After materialization (required directories, host artifacts) there is nothing left to warn about.
			dst := t.TempDir()
			missing := materialize(t, ex.dir, dst, ex.kind)
			rep, err = Tree(t.Context(), dst, ex.kind, Options{Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Errors()) > 0 || len(rep.Warnings()) > 0 {
				t.Errorf("the materialized tree has errors or warnings:\n%s", dump(rep))
			}
			for _, f := range rep.Infos() {
				if f.Rule == "X3" && !slices.Contains(missing, f.Path) {
					t.Errorf("X3 for %s, which was materialized", f.Path)
				}
			}
		})
	}
}

// TestExtensionExamplesMergeOntoExampleRoots checks the example extensions against the example roots.
func TestExtensionExamplesMergeOntoExampleRoots(t *testing.T) {
	for _, ext := range []Kind{KindSysext, KindConfext} {
		for _, base := range []string{"container/rootfs", "infrastructure/rootfs", "machine/disk-image/rootfs"} {
			t.Run(string(ext)+" on "+base, func(t *testing.T) {
				rep, err := Tree(t.Context(), filepath.Join(examplesDir, string(ext)), ext, Options{Now: fixedNow, BaseRoot: filepath.Join(examplesDir, base)})
				if err != nil {
					t.Fatal(err)
				}
				if len(rep.Findings) != 0 {
					t.Errorf("findings:\n%s", dump(rep))
				}
			})
		}
	}
}

// materialize copies a template checkout to dst the way the daemon will: the tree with its symlinks and file
// modes, the required directories with their modes, and the artifacts from the host. It returns the artifact
// paths that the host does not have.
func materialize(t testing.TB, src, dst string, kind Kind) (missing []string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		default:
			return copyFile(p, target, info.Mode().Perm())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range RequiredDirs(kind) {
		p := filepath.Join(dst, filepath.FromSlash(d.Path))
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.Mode); err != nil {
			t.Fatal(err)
		}
	}
	arts, err := ReadArtifacts(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range arts {
		from, err := a.Source()
		if errors.Is(err, ErrArtifactMissing) {
			missing = append(missing, a.Path)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(from)
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dst, filepath.FromSlash(a.Path))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(from, target, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return missing
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

func TestReadArtifacts(t *testing.T) {
	tests := []struct {
		name, doc string
		ok        bool
	}{
		{"good", `{"artifacts":[{"path":"rootfs/usr/bin/busybox","from":["/bin/busybox"]}]}`, true},
		{"absolute path", `{"artifacts":[{"path":"/usr/bin/busybox","from":["/bin/busybox"]}]}`, false},
		{"escaping path", `{"artifacts":[{"path":"../x","from":["/bin/busybox"]}]}`, false},
		{"relative host path", `{"artifacts":[{"path":"x","from":["bin/busybox"]}]}`, false},
		{"no source", `{"artifacts":[{"path":"x","from":[]}]}`, false},
		{"host secret", `{"artifacts":[{"path":"x","from":["/etc/shadow"]}]}`, false},
		{"escaping pattern", `{"artifacts":[{"path":"x","from":["/boot/vmlinuz-/../../etc/shadow"]}]}`, false},
		{"pattern wider than allowed", `{"artifacts":[{"path":"x","from":["/boot/*"]}]}`, false},
		{"not JSON", `{`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, file(ArtifactsFile, tc.doc))
			arts, err := ReadArtifacts(dir, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok {
				b, _ := json.Marshal(arts)
				if want := `[{"path":"rootfs/usr/bin/busybox","from":["/bin/busybox"]}]`; string(b) != want {
					t.Errorf("artifacts = %s", b)
				}
			}
		})
	}
}

func TestArtifactSource(t *testing.T) {
	tmp := t.TempDir()
	build(t, tmp, file("boot/vmlinuz-6.1.0", "old"), file("boot/vmlinuz-6.12.0", "new"), dir("boot/vmlinuz-7.dir", 0o755), file("bin/busybox", "bb"))
	tests := []struct {
		name string
		from []string
		want string
	}{
		{"first existing", []string{tmp + "/nope", tmp + "/bin/busybox"}, tmp + "/bin/busybox"},
		{"glob takes the lexically last regular file", []string{tmp + "/boot/vmlinuz-*"}, tmp + "/boot/vmlinuz-6.12.0"},
		{"missing", []string{tmp + "/nope*"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Artifact{Path: "x", From: tc.from}.Source()
			if tc.want == "" {
				if !errors.Is(err, ErrArtifactMissing) {
					t.Fatalf("err = %v, want ErrArtifactMissing", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Source() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
