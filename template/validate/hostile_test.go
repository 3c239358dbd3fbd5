package validate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

func TestResolveInsideRoot(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []node
		path   string
		follow bool
		want   string // resolved path, or "error:<text>"
	}{
		{"plain", []node{file("etc/os-release", "")}, "etc/os-release", true, "etc/os-release"},
		{"relative link", []node{file("usr/lib/os-release", ""), link("etc/os-release", "../usr/lib/os-release")}, "etc/os-release", true, "usr/lib/os-release"},
		{"final link not followed", []node{file("usr/lib/os-release", ""), link("etc/os-release", "../usr/lib/os-release")}, "etc/os-release", false, "etc/os-release"},
		{"absolute link restarts at the root", []node{file("usr/lib/os-release", ""), link("etc/os-release", "/usr/lib/os-release")}, "etc/os-release", true, "usr/lib/os-release"},
		{"dot-dot stops at the root", []node{file("usr/lib/os-release", ""), link("etc/os-release", "../../../../../../usr/lib/os-release")}, "etc/os-release", true, "usr/lib/os-release"},
		{"directory link to host /etc stays inside", []node{file("x", ""), link("etc", "/etc")}, "etc/os-release", true, "error:" + errTooManyHops.Error()},
		{"escaping directory link", []node{file("lib/os-release", ""), link("usr", "../../..")}, "usr/lib/os-release", true, "lib/os-release"},
		{"loop", []node{link("a", "b"), link("b", "a")}, "a", true, "error:" + errTooManyHops.Error()},
		{"dangling", []node{link("a", "nowhere")}, "a", true, "error:no such file"},
		{"file as directory", []node{file("etc", "")}, "etc/os-release", true, "error:not a directory"},
		{"path with dot-dot", []node{file("usr/lib/os-release", ""), dir("etc", 0o755)}, "etc/../../usr/./lib/os-release", true, "usr/lib/os-release"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes...)
			r, err := openRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.resolve(tc.path, tc.follow)
			if err != nil {
				got = "error:" + err.Error()
			}
			if strings.HasPrefix(tc.want, "error:") {
				if !strings.Contains(got, strings.TrimPrefix(tc.want, "error:")) {
					t.Errorf("resolve(%q) = %q, want an error with %q", tc.path, got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("resolve(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

// TestHostileTrees checks that hostile trees give findings, not hangs, host reads or huge allocations.
func TestHostileTrees(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		rule  string
		sev   Severity
	}{
		{"1 GiB sparse os-release is not read", func(t *testing.T, dir string) {
			truncateFile(t, filepath.Join(dir, "usr/lib/os-release"), 1<<30)
		}, "X1", SeverityError},
		{"os-release is a FIFO, never opened", func(t *testing.T, dir string) {
			remove(t, dir, "usr/lib/os-release")
			build(t, dir, fifo("usr/lib/os-release"))
		}, "A1", SeverityError},
		{"os-release is a zero device, never opened", func(t *testing.T, dir string) {
			remove(t, dir, "usr/lib/os-release")
			if err := syscall.Mknod(filepath.Join(dir, "usr/lib/os-release"), syscall.S_IFCHR|0o644, int(mkdev(1, 5))); err != nil {
				t.Fatal(err)
			}
		}, "A1", SeverityError},
		{"etc is a link to the host's /etc", func(t *testing.T, dir string) {
			remove(t, dir, "usr/lib/os-release", "etc")
			build(t, dir, link("etc", "/etc"))
		}, "A1", SeverityError},
		{"os-release links out of the tree", func(t *testing.T, dir string) {
			remove(t, dir, "usr/lib/os-release")
			build(t, dir, link("usr/lib/os-release", "../../../../../../../../etc/os-release"))
		}, "A1", SeverityError},
		{"2 GiB sparse file in the tree", func(t *testing.T, dir string) {
			truncateFile(t, filepath.Join(dir, "var/big.img"), 2<<30)
		}, "", ""},
		{"deep nesting", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "var", strings.Repeat("d/", maxDepth+10))
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "X1", SeverityWarning},
		{"symlink loops in the tree", func(t *testing.T, dir string) {
			build(t, dir, link("var/a", "b"), link("var/b", "a"), link("var/self", "."), link("var/up", ".."))
		}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, goodRoot()...)
			tc.setup(t, dir)
			rep, err := RootFS(t.Context(), dir, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range rep.Findings {
				if strings.Contains(f.Message, "Debian") {
					t.Errorf("a finding quotes the host's files: %s", f)
				}
			}
			if tc.rule == "" {
				if len(rep.Findings) != 0 {
					t.Errorf("findings:\n%s", dump(rep))
				}
				return
			}
			checkFindings(t, rep, tc.rule, tc.sev, "A1", "A2", "A5", "A7", "C18", "C20", "C21", "C23", "C25", "X1")
		})
	}
}

func TestManyFiles(t *testing.T) {
	testpolicy.Short(t, "100,000 files take a few seconds to create")
	dir := memTempDir(t)
	build(t, dir, goodRoot()...)
	start := time.Now()
	makeFiles(t, filepath.Join(dir, "usr/share/many"), 100_000)
	t.Logf("created 100,000 files in %v", time.Since(start))
	start = time.Now()
	rep, err := RootFS(t.Context(), dir, testOptions())
	t.Logf("validated in %v", time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Errorf("findings:\n%s", dump(rep))
	}
}

func TestCancelled(t *testing.T) {
	dir := t.TempDir()
	build(t, dir, goodRoot()...)
	makeFiles(t, filepath.Join(dir, "usr/share/many"), 100)
	ctx, cancel := contextWithCancel(t)
	cancel()
	if _, err := RootFS(ctx, dir, testOptions()); !errors.Is(err, ctxCanceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// makeFiles creates n empty files below dir, 1,000 per directory.
func makeFiles(t testing.TB, dir string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.OpenFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func truncateFile(t *testing.T, p string, size int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, fs.FileMode(0o644))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

func mkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor)
}

var ctxCanceled = context.Canceled

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

// memTempDir returns a temporary directory on tmpfs (/dev/shm) when there is one, else t.TempDir(): creating
// many files on a loaded machine's disk takes minutes, on tmpfs a second or two.
func memTempDir(t testing.TB) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != 0x01021994 {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "validate-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

// TestHostileTemplateLinks checks that the directories a template kind names (rootfs/, home-skeleton/, an
// extension's usr/) resolve inside the checkout even when they are symlinks out of it.
func TestHostileTemplateLinks(t *testing.T) {
	tests := []struct {
		name  string
		kind  Kind
		nodes []node
		rule  string
	}{
		// rootfs -> / is the checkout itself, which has no os-release: the host's must not be read.
		{"rootfs links to the host root", KindContainer, []node{link("rootfs", "/")}, "A1"},
		{"rootfs links out by dot-dot", KindContainer, []node{link("rootfs", "../../../../../../..")}, "A1"},
		{"home-skeleton links to the host /etc", KindHomed, []node{link("home-skeleton", "/etc"), file("config/user-record.json", `{"userName":"u"}`)}, "X2"},
		{"extension usr links to the host /usr", KindSysext, []node{link("usr", "/usr")}, "D26"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes...)
			rep, err := Tree(t.Context(), dir, tc.kind, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range rep.Findings {
				found = found || f.Rule == tc.rule && f.Severity == SeverityError
				if strings.Contains(f.Message, "Debian") || strings.Contains(f.Path, "passwd") {
					t.Errorf("a finding reflects the host's files: %s", f)
				}
			}
			if !found {
				t.Errorf("no %s error:\n%s", tc.rule, dump(rep))
			}
		})
	}
}

// TestHostileVOAParent checks that a VOA load path under a symlinked parent is read inside the root: usr is a
// link to ../outside, which exists both inside the root (a clean VOA tree) and next to it (a broken one).
func TestHostileVOAParent(t *testing.T) {
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	build(t, tmp, file("outside/share/voa/README", "outside"))
	build(t, root, link("usr", "../outside"), dir("outside/share/voa/arch/package/default/openpgp", 0o755))
	rep, err := VOA(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Errorf("the validator read outside the root:\n%s", dump(rep))
	}
}
