package validate

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// node is one entry of a test tree.
type node struct {
	path string
	kind byte // 'f' file, 'd' directory, 'l' symlink, 'p' FIFO, 'c' char device (whiteout 0:0), 's' socket
	data string
	mode fs.FileMode
}

func file(p, data string) node            { return node{path: p, kind: 'f', data: data, mode: 0o644} }
func exe(p, data string) node             { return node{path: p, kind: 'f', data: data, mode: 0o755} }
func dir(p string, mode fs.FileMode) node { return node{path: p, kind: 'd', mode: mode} }
func link(p, target string) node          { return node{path: p, kind: 'l', data: target} }
func fifo(p string) node                  { return node{path: p, kind: 'p'} }
func whiteout(p string) node              { return node{path: p, kind: 'c'} }

// build creates the nodes under root; directory modes are applied last so read-only directories can be filled.
func build(t testing.TB, root string, nodes ...node) {
	t.Helper()
	var dirs []node
	for _, n := range nodes {
		p := filepath.Join(root, filepath.FromSlash(n.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch n.kind {
		case 'f':
			os.Remove(p)
			err = os.WriteFile(p, []byte(n.data), n.mode)
			if err == nil {
				err = os.Chmod(p, n.mode)
			}
		case 'd':
			err = os.MkdirAll(p, 0o755)
			dirs = append(dirs, n)
		case 'l':
			os.Remove(p)
			err = os.Symlink(n.data, p)
		case 'p':
			err = syscall.Mkfifo(p, 0o644)
		case 'c':
			err = syscall.Mknod(p, syscall.S_IFCHR|0o644, 0)
		case 's':
			err = syscall.Mknod(p, syscall.S_IFSOCK|0o644, 0)
		}
		if err != nil {
			t.Fatalf("build %s: %v", n.path, err)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(filepath.Join(root, dirs[i].path), dirs[i].mode); err != nil {
			t.Fatal(err)
		}
	}
}

func remove(t testing.TB, root string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
}

const goodOSRelease = `NAME="BitBuilder Test"
ID=bitbuilder
ID_LIKE=debian
VERSION_ID=1.0
PRETTY_NAME="BitBuilder Test 1.0"
HOME_URL="https://example.org/"
`

// goodRoot is a root file system with no findings at all.
func goodRoot() []node {
	return []node{
		file("usr/lib/os-release", goodOSRelease),
		link("etc/os-release", "../usr/lib/os-release"),
		file("etc/machine-id", ""),
		exe("usr/lib/systemd/systemd", "#!/bin/sh\n"),
		dir("usr/bin", 0o755), dir("usr/sbin", 0o755),
		link("bin", "usr/bin"), link("sbin", "usr/sbin"), link("lib", "usr/lib"),
		dir("dev", 0o555), dir("proc", 0o555), dir("sys", 0o555), dir("run", 0o555),
		dir("etc", 0o755), dir("var", 0o755), dir("usr", 0o755), dir("root", 0o750),
		dir("tmp", 0o777|fs.ModeSticky), dir("var/tmp", 0o777|fs.ModeSticky), link("var/run", "../run"),
	}
}

func fixedNow() time.Time { return time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC) }

func testOptions() Options {
	return Options{Architecture: "x86-64", Now: fixedNow}
}

// checkFindings asserts that the report has a finding of rule want with severity sev, and that every finding's
// rule is among allowed (want is always allowed).
func checkFindings(t *testing.T, rep Report, want string, sev Severity, allowed ...string) {
	t.Helper()
	allowed = append(allowed, want)
	found := false
	for _, f := range rep.Findings {
		if f.Rule == want && f.Severity == sev {
			found = true
		}
		if !slices.Contains(allowed, f.Rule) {
			t.Errorf("unexpected finding %s", f)
		}
	}
	if !found {
		t.Errorf("no %s finding of rule %s; findings:\n%s", sev, want, dump(rep))
	}
}

func dump(rep Report) string {
	var b strings.Builder
	for _, f := range rep.Findings {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}
