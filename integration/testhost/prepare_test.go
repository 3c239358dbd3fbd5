package testhost

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// runScript runs prepare.sh from this directory (what CI runs) with the cache in dir.
func runScript(t *testing.T, cache string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runScriptFile(t, "prepare.sh", cache, args...)
}

func runScriptFile(t *testing.T, script, cache string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), EnvCache+"="+cache)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestPrepareScript checks the cache logic of prepare.sh on a private cache directory: it is seeded with the
// tarball of the machine's cached rootfs, so a "build" is an unpack, not a debootstrap download.
func TestPrepareScript(t *testing.T) {
	testpolicy.RequireRoot(t, "prepare.sh needs root")
	rootfs, err := LocateRootfs(t.Context(), false)
	if err != nil {
		skipOrFatal(t, err)
	}
	tarball := rootfs + ".tar.zst"
	if _, err := os.Stat(tarball); err != nil {
		testpolicy.Requiref(t, false, "no tarball next to the cached rootfs (prepare.sh makes it): %v", err)
	}
	cache := t.TempDir()
	want := filepath.Join(cache, filepath.Base(rootfs))

	// --key names the cached tree; --locate in an empty cache says "not built" (3) and makes nothing.
	key, _, err := runScript(t, cache, "--key")
	if err != nil || "rootfs-"+strings.TrimSpace(key) != filepath.Base(rootfs) {
		t.Fatalf("--key = %q, %v; cached tree is %s", key, err, filepath.Base(rootfs))
	}
	_, _, err = runScript(t, cache, "--locate")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("--locate in an empty cache = %v, want exit code 3", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Fatalf("--locate changed the cache: %v", entries)
	}
	if _, _, err := runScript(t, cache, "--bogus"); err == nil {
		t.Fatal("an unknown argument was accepted")
	}

	if err := os.Link(tarball, want+".tar.zst"); err != nil {
		copyFile(t, tarball, want+".tar.zst")
	}
	// An interrupted build: a temporary tree with a file system still mounted in it (debootstrap mounts proc).
	stale := filepath.Join(cache, "tmp.interrupted")
	if err := os.MkdirAll(filepath.Join(stale, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", filepath.Join(stale, "proc"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(stale, "proc"), syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(stale, "proc", "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// Two concurrent builders, prepare.sh and New with BITBUILDER_TESTHOST_BUILD (which runs the embedded copy):
	// only one builds, both use the same tree, the leftover is cleaned, and the host boots from that tree.
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvBuild, "1")
	type result struct {
		out, errOut string
		err         error
	}
	script := make(chan result, 1)
	go func() {
		o, e, err := runScript(t, cache)
		script <- result{o, e, err}
	}()
	h, err := New(t.Context(), Options{Name: "built"})
	if err != nil {
		t.Fatalf("New with %s: %v", EnvBuild, err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	})
	r := <-script
	if r.err != nil {
		t.Fatalf("prepare.sh: %v\n%s", r.err, r.errOut)
	}
	if got := lastLine(r.out); got != want {
		t.Errorf("prepare.sh printed %q, want %q", got, want)
	}
	mi, _, err := h.Run(t.Context(), "cat", "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mi), "lowerdir="+want+",") {
		t.Errorf("host does not run on the rootfs built in %s:\n%s", cache, mi)
	}
	// Only prepare.sh's own stderr is visible; it either built ("unpacking") or waited for New's build.
	if !strings.Contains(r.errOut, "unpacking") && !strings.Contains(r.errOut, "rootfs cached") {
		t.Errorf("prepare.sh neither built nor found the tree:\n%s", r.errOut)
	}
	if n := strings.Count(r.errOut, "unpacking"); n > 1 {
		t.Errorf("prepare.sh built %d times", n)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Errorf("leftover of the interrupted build still there")
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(stale)) {
		t.Errorf("the interrupted build's mount is still there")
	}
	if _, err := os.Stat(filepath.Join(want, "usr/lib/systemd/systemd")); err != nil {
		t.Errorf("built tree lacks systemd: %v", err)
	}
	if fi, err := os.Stat(want); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("built tree's root: %v, %v; want mode 0755", fi, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(cache, "tmp.*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left in the cache: %v", leftovers)
	}

	// A further run reuses the tree as it is.
	before, _ := os.Stat(want)
	o, e, err := runScript(t, cache)
	if err != nil || lastLine(o) != want || !strings.Contains(e, "rootfs cached") {
		t.Fatalf("re-run: %q, %q, %v", o, e, err)
	}
	if after, _ := os.Stat(want); !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("re-run replaced the cached tree")
	}
	if o, _, err := runScript(t, cache, "--locate"); err != nil || strings.TrimSpace(o) != want {
		t.Errorf("--locate = %q, %v", o, err)
	}
}

// TestPrepareVMScriptKey checks what prepare-vm.sh does without building: its key is its own (not prepare.sh's)
// and stable, --locate in an empty cache says "not built" (3) and makes nothing, and the embedded copy run by
// LocateVariant agrees with the file.
func TestPrepareVMScriptKey(t *testing.T) {
	cache := t.TempDir()
	key1, e1, err1 := runScriptFile(t, "prepare-vm.sh", cache, "--key")
	key2, _, err2 := runScriptFile(t, "prepare-vm.sh", cache, "--key")
	base, _, err3 := runScript(t, cache, "--key")
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("--key: %v, %v, %v\n%s", err1, err2, err3, e1)
	}
	if key1 != key2 || len(strings.TrimSpace(key1)) != 16 || key1 == base {
		t.Errorf("prepare-vm.sh --key = %q then %q (prepare.sh's is %q): want one stable 16-digit key of its own", key1, key2, base)
	}
	_, _, err := runScriptFile(t, "prepare-vm.sh", cache, "--locate")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("--locate in an empty cache = %v, want exit code 3", err)
	}
	if _, _, err := runScriptFile(t, "prepare-vm.sh", cache, "--bogus"); err == nil {
		t.Error("an unknown argument was accepted")
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Fatalf("prepare-vm.sh changed the cache: %v", entries)
	}
	// The embedded copy (run from a temporary directory next to the embedded prepare.sh) locates the same tree.
	real := os.Getenv(EnvCache)
	if real == "" {
		real = "/var/cache/bitbuilder-test"
	}
	if want, _, err := runScriptFile(t, "prepare-vm.sh", real, "--locate"); err == nil {
		t.Setenv(EnvCache, real)
		got, err := LocateVariant(t.Context(), VariantVM, false)
		if err != nil || got != strings.TrimSpace(want) {
			t.Errorf("LocateVariant(vm) = %q, %v; prepare-vm.sh --locate says %q", got, err, want)
		}
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
