package validate

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// gitCopy commits the tree in src to a new Git repository and returns a fresh clone of it: a template's
// working copy as a user has it, without the empty directories and directory modes Git cannot carry, and with
// its .git directory.
func gitCopy(t *testing.T, src string) string {
	t.Helper()
	gitBin := testpolicy.RequireTool(t, "git")
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(gitBin, append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(src, "init", "-q")
	git(src, "add", "-A")
	git(src, "commit", "-q", "-m", "template")
	wc := filepath.Join(t.TempDir(), "wc")
	git(filepath.Dir(wc), "clone", "-q", src, wc)
	return wc
}

// TestWorkingCopyLayout checks that a container template's working copy is not blamed for what Git cannot
// express: the empty layout directories (proc, dev, run, sys, tmp, ...) and their modes, which the materializer
// creates; while a plain root file system without them still is, and a layout directory that is a file (the
// materializer refuses that tree) is an error.
func TestWorkingCopyLayout(t *testing.T) {
	src := t.TempDir()
	build(t, src, prefixed("rootfs", goodRoot())...)
	wc := gitCopy(t, src)
	if _, err := os.Lstat(filepath.Join(wc, "rootfs", "proc")); !os.IsNotExist(err) {
		t.Fatalf("the clone has rootfs/proc (%v); the test needs Git to drop empty directories", err)
	}
	rep, err := Tree(t.Context(), wc, KindContainer, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Errorf("working copy of a good template: want no findings, got\n%s", dump(rep))
	}

	// The same root validated as a root file system (not a template checkout) lacks them.
	rep, err = RootFS(t.Context(), filepath.Join(wc, "rootfs"), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkFindings(t, rep, "C18", SeverityWarning, "C19")

	// A file where the materializer must make a directory.
	build(t, wc, file("rootfs/proc", "x"))
	rep, err = Tree(t.Context(), wc, KindContainer, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkFindings(t, rep, "C18", SeverityError)
}

// TestWorkingCopyGitFiles checks that an extension template's working copy, whose root is the extension tree,
// is not blamed for its .git directory and Git's dot files (rule D34), while other stray entries still are.
func TestWorkingCopyGitFiles(t *testing.T) {
	src := t.TempDir()
	build(t, src,
		file("metadata.json", `{"template":{"type":"sysext","name":"tools","version":"1"}}`),
		file("usr/lib/extension-release.d/extension-release.tools", "ID=_any\n"),
		file("usr/bin/tool", "x"),
		file(".gitignore", "*.o\n"),
	)
	wc := gitCopy(t, src)
	if err := os.Rename(wc, filepath.Join(filepath.Dir(wc), "tools")); err != nil {
		t.Fatal(err)
	}
	wc = filepath.Join(filepath.Dir(wc), "tools")
	rep, err := Tree(t.Context(), wc, KindSysext, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Errorf("working copy with .git: want no findings, got\n%s", dump(rep))
	}
	build(t, wc, file("README.md", "hello"))
	rep, err = Tree(t.Context(), wc, KindSysext, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkFindings(t, rep, "D34", SeverityWarning)
}

// TestRuleCatalogue checks the catalogue's lookup: every id is found, case-insensitively, with its title and
// explanation, and an unknown id is not.
func TestRuleCatalogue(t *testing.T) {
	for _, r := range Rules() {
		got, ok := Rule(r.ID)
		if !ok || got.Title != r.Title || got.Explanation == "" {
			t.Errorf("Rule(%q) = %+v, %v", r.ID, got, ok)
		}
	}
	if r, ok := Rule("c18"); !ok || r.ID != "C18" {
		t.Errorf(`Rule("c18") = %+v, %v`, r, ok)
	}
	if _, ok := Rule("Z9"); ok {
		t.Error(`Rule("Z9") found a rule`)
	}
}
